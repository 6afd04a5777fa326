"""The accuracy-vs-BitOPs Pareto front and its 2-D hypervolume.

Cost is BitOPs / W8A8 BitOPs (minimised), accuracy is top-1 in percent (maximised);
the unit of a hypervolume is ratio × percent (100 is the unreachable maximum).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from benchmark.harness.records import normalise
from benchmark.report.aggregate import CANDIDATE_KEYS, assign_tracks, eligible

FRONT_KEYS: tuple[str, ...] = ("space", "dataset", "preset", "track", "method")
DEFAULT_REF: tuple[float, float] = (1.0, 0.0)


def _as_points(points: Iterable[Sequence[float]] | np.ndarray) -> np.ndarray:
    arr = np.asarray(points, dtype="float64")
    if arr.size == 0:
        return np.empty((0, 2))
    arr = arr.reshape(-1, 2)
    return arr[np.isfinite(arr).all(axis=1)]


def pareto_front(points: Iterable[Sequence[float]] | np.ndarray) -> np.ndarray:
    """The non-dominated (cost, accuracy) points, cost minimised and accuracy maximised,
    sorted by cost ascending (so accuracy ascends too). NaN points and duplicates dropped.

    Returns an array of shape (k, 2); k = 0 for no finite point.
    """
    arr = _as_points(points)
    if arr.size == 0:
        return arr
    order = np.lexsort((-arr[:, 1], arr[:, 0]))  # by cost, then accuracy descending
    front: list[np.ndarray] = []
    best = -np.inf
    for cost, acc in arr[order]:
        if acc > best:
            front.append(np.array([cost, acc]))
            best = acc
    return np.vstack(front)


def hypervolume(
    points: Iterable[Sequence[float]] | np.ndarray, ref: tuple[float, float] = DEFAULT_REF
) -> float:
    """2-D hypervolume of (cost, accuracy) points, cost minimised, accuracy maximised.

    The area dominated by the front and bounded by ``ref = (ref_cost, ref_acc)``; by default
    cost is BitOPs / W8A8 BitOPs bounded at 1.0 and accuracy is percent bounded at 0, so the
    unit is ratio × percent. Points with cost > ref_cost or accuracy < ref_acc add nothing;
    an empty or all-NaN input gives 0.0.
    """
    ref_cost, ref_acc = float(ref[0]), float(ref[1])
    arr = _as_points(points)
    arr = arr[(arr[:, 0] <= ref_cost) & (arr[:, 1] >= ref_acc)]
    front = pareto_front(arr)
    if front.size == 0:
        return 0.0
    next_cost = np.append(front[1:, 0], ref_cost)
    return float(np.sum((next_cost - front[:, 0]) * (front[:, 1] - ref_acc)))


def hypervolume_table(frame: pd.DataFrame, ref: tuple[float, float] = DEFAULT_REF) -> pd.DataFrame:
    """Hypervolume per (space, dataset, preset, track, method) over every feasible ok
    candidate (pooled over constraints and seeds; its own ``top1_test`` in % and
    ``bitops_ratio_w8a8``). Methods with no such candidate get 0.0.

    Columns: space, dataset, preset, track, method, hypervolume, n_points, n_front.
    """
    columns = [*FRONT_KEYS, "hypervolume", "n_points", "n_front"]
    frame = normalise(frame)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    rows = assign_tracks(frame)
    usable = rows[eligible(rows) & np.isfinite(rows["bitops_ratio_w8a8"])]
    usable = usable.drop_duplicates(list(CANDIDATE_KEYS))
    points = {
        key: group[["bitops_ratio_w8a8", "top1_test"]].to_numpy()
        for key, group in usable.groupby(list(FRONT_KEYS), sort=False)
    }
    records = []
    for key in (
        rows[list(FRONT_KEYS)]
        .drop_duplicates()
        .sort_values(list(FRONT_KEYS))
        .itertuples(index=False, name=None)
    ):
        pts = points.get(key, np.empty((0, 2)))
        records.append((*key, hypervolume(pts, ref), len(pts), len(pareto_front(pts))))
    return pd.DataFrame.from_records(records, columns=columns)
