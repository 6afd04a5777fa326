"""The accuracy-vs-BitOPs Pareto front and its hypervolume, per seed.

Cost is BitOPs / W8A8 BitOPs (minimised), accuracy is top-1 in percent (maximised); the
unit of a hypervolume is ratio × percent (100 is the unreachable maximum), computed with
pymoo's ``HV`` indicator.

A front is computed per (code version, space, dataset, preset, constraint, track, method,
seed) from that seed's final candidates within that constraint (every feasible ``ok``
candidate of the trial; the figures pool a seed's constraints instead,
:data:`POOLED_FRONT_KEYS`): the candidates are chosen on **validation** top-1 (non-dominated in
(cost, val)) and the hypervolume is that of their **test** top-1, so test accuracy never
picks a point. A seed without a feasible candidate has hypervolume 0; a front point
without a test score makes that seed's hypervolume missing (NaN). The tables report the
mean over seeds with its 95% t-interval, so more seeds cannot raise a method's value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from benchmark.report.selection import CANDIDATE_KEYS, assign_tracks, prepared, selectable
from benchmark.report.stats import t_half_width
from benchmark.report.versions import CODE_VERSION

FRONT_KEYS: tuple[str, ...] = (
    CODE_VERSION, "space", "dataset", "preset", "constraint", "track", "method"
)  # fmt: skip
"""A hypervolume's keys: per constraint, so a method that returns one candidate per limit
is compared with the others at that limit only, never against fronts pooled over limits."""
POOLED_FRONT_KEYS: tuple[str, ...] = tuple(k for k in FRONT_KEYS if k != "constraint")
"""A figure's fronts: a seed's candidates over every constraint of the task."""
SEED_FRONT_KEYS: tuple[str, ...] = (*FRONT_KEYS, "seed")
DEFAULT_REF: tuple[float, float] = (1.0, 0.0)

HYPERVOLUME_COLUMNS: tuple[str, ...] = (
    *FRONT_KEYS,
    "hypervolume_mean",  # ratio × %, mean over the seeds with a value
    "hypervolume_std",  # ddof=1; NaN for one seed
    "hypervolume_ci95",  # half-width of the 95% t-interval of the mean
    "n",  # seeds with a hypervolume
    "n_seeds",  # seeds run
    "n_missing_test",  # seeds whose front has a point without a test score
    "seeds",  # the seeds behind n
    "median_seed",  # the seed whose hypervolume is the median (the lower one for even n)
    "n_front_mean",  # points on a seed's front, mean over seeds
)


def _as_points(points: Iterable[Sequence[float]] | np.ndarray) -> np.ndarray:
    arr = np.asarray(points, dtype="float64")
    if arr.size == 0:
        return np.empty((0, 2))
    arr = arr.reshape(-1, 2)
    return arr[np.isfinite(arr).all(axis=1)]


def front_mask(cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Which points are non-dominated, cost minimised and score maximised; of points with
    equal cost and score only the first counts. NaN points are never on the front."""
    cost, score = np.asarray(cost, dtype=float), np.asarray(score, dtype=float)
    mask = np.zeros(cost.shape, dtype=bool)
    finite = np.flatnonzero(np.isfinite(cost) & np.isfinite(score))
    order = finite[np.lexsort((finite, -score[finite], cost[finite]))]
    best = -np.inf
    for i in order:  # by cost, then score descending, then position
        if score[i] > best:
            mask[i] = True
            best = score[i]
    return mask


def pareto_front(points: Iterable[Sequence[float]] | np.ndarray) -> np.ndarray:
    """The non-dominated (cost, accuracy) points, cost minimised and accuracy maximised,
    sorted by cost ascending (so accuracy ascends too). NaN points and duplicates dropped.

    Returns an array of shape (k, 2); k = 0 for no finite point.
    """
    arr = _as_points(points)
    front = arr[front_mask(arr[:, 0], arr[:, 1])]
    return front[np.argsort(front[:, 0], kind="stable")]


def hypervolume(
    points: Iterable[Sequence[float]] | np.ndarray, ref: tuple[float, float] = DEFAULT_REF
) -> float:
    """2-D hypervolume of (cost, accuracy) points, cost minimised, accuracy maximised
    (pymoo's ``HV`` on (cost, -accuracy)).

    The area dominated by the points and bounded by ``ref = (ref_cost, ref_acc)``; by
    default cost is BitOPs / W8A8 BitOPs bounded at 1.0 and accuracy is percent bounded at
    0, so the unit is ratio × percent. Points with cost > ref_cost or accuracy < ref_acc
    add nothing; an empty or all-NaN input gives 0.0.
    """
    from pymoo.indicators.hv import HV  # imported on use: the leaderboard only

    ref_cost, ref_acc = float(ref[0]), float(ref[1])
    arr = _as_points(points)
    arr = arr[(arr[:, 0] <= ref_cost) & (arr[:, 1] >= ref_acc)]
    if arr.size == 0:
        return 0.0
    indicator = HV(ref_point=np.array([ref_cost, -ref_acc]))
    return float(indicator(np.column_stack([arr[:, 0], -arr[:, 1]])))


def seed_front_candidates(frame: pd.DataFrame, keys: Sequence[str] = FRONT_KEYS) -> pd.DataFrame:
    """The candidate rows on each seed's validation front (see the module doc), with
    ``on_front`` marking them among all of that seed's final candidates; fronts per
    ``keys`` and seed."""
    seed_keys = [*keys, "seed"]
    rows = assign_tracks(prepared(frame))
    usable = rows[selectable(rows) & np.isfinite(rows["bitops_ratio_w8a8"])]
    usable = usable.drop_duplicates(list(CANDIDATE_KEYS)).sort_values(list(CANDIDATE_KEYS))
    parts = []
    for _, group in usable.groupby(seed_keys, sort=True):
        mask = front_mask(group["bitops_ratio_w8a8"].to_numpy(), group["top1_val"].to_numpy())
        parts.append(group.assign(on_front=mask))
    if not parts:
        return usable.assign(on_front=pd.Series(dtype=bool))
    return pd.concat(parts, ignore_index=True)


def seed_hypervolumes(
    frame: pd.DataFrame, ref: tuple[float, float] = DEFAULT_REF, keys: Sequence[str] = FRONT_KEYS
) -> pd.DataFrame:
    """Per ``keys`` (default: code version, space, dataset, preset, constraint, track,
    method) and seed: the hypervolume of its validation front's test top-1 (0 for no
    feasible candidate, NaN when a front point has no test score), ``n_points`` (its final
    candidates) and ``n_front``."""
    seed_keys = [*keys, "seed"]
    columns = [*seed_keys, "hypervolume", "n_points", "n_front", "missing_test"]
    rows = assign_tracks(prepared(frame))
    if rows.empty:
        return pd.DataFrame(columns=columns)
    candidates = seed_front_candidates(frame, keys)
    groups = {key: g for key, g in candidates.groupby(seed_keys, sort=False)}
    records = []
    seeds = rows[seed_keys].drop_duplicates().sort_values(seed_keys)
    for key in seeds.itertuples(index=False, name=None):
        group = groups.get(key)
        if group is None:
            records.append((*key, 0.0, 0, 0, False))
            continue
        front = group[group["on_front"]]
        missing = bool(~np.isfinite(front["top1_test"]).all())
        points = front[["bitops_ratio_w8a8", "top1_test"]].to_numpy()
        value = float("nan") if missing else hypervolume(points, ref)
        records.append((*key, value, len(group), len(front), missing))
    return pd.DataFrame.from_records(records, columns=columns)


def hypervolume_table(
    frame: pd.DataFrame, ref: tuple[float, float] = DEFAULT_REF, keys: Sequence[str] = FRONT_KEYS
) -> pd.DataFrame:
    """Per ``keys`` (default :data:`FRONT_KEYS`: per constraint): the seeds' hypervolumes
    summarised (columns :data:`HYPERVOLUME_COLUMNS`, with ``keys`` in place of the
    default keys)."""
    columns = [*keys, *HYPERVOLUME_COLUMNS[len(FRONT_KEYS) :]]
    per_seed = seed_hypervolumes(frame, ref, keys)
    if per_seed.empty:
        return pd.DataFrame(columns=columns)
    records = []
    for key, group in per_seed.groupby(list(keys), sort=True):
        valued = group[np.isfinite(group["hypervolume"])].sort_values(["hypervolume", "seed"])
        values = valued["hypervolume"].to_numpy()
        median = int(valued["seed"].iloc[(len(valued) - 1) // 2]) if len(valued) else -1
        records.append(
            (
                *key,
                float(values.mean()) if len(values) else float("nan"),
                float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                t_half_width(values),
                len(values),
                int(group["seed"].nunique()),
                int(group["missing_test"].sum()),
                ",".join(str(s) for s in sorted(valued["seed"])),
                median,
                float(group["n_front"].mean()),
            )
        )
    return pd.DataFrame.from_records(records, columns=columns)
