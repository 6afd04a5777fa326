"""Aggregation, rankings and hypervolume of result rows; the leaderboard as md / csv / html.

Units: accuracies (``top1_*``) are percent, ``bitops`` BitOPs per image, ``bitops_ratio_w8a8``
a ratio to the same model at uniform W8A8, ``size_bits`` bits, device time in hours.

Protocol (DESIGN.md §1):

* A *task group* is (space, dataset, preset, constraint, track). Per method and seed the
  harness's candidate with the best **validation** accuracy among the feasible ``ok``
  candidates is selected; its **test** accuracy is what the tables report (mean ± std over
  seeds, std with ddof=1, NaN for one seed). Test accuracy never drives a selection.
* Methods are ranked per task group by mean test accuracy (1 = best, ties averaged, a method
  without any feasible result shares the last places); the ranks are averaged over groups.
* The hypervolume of the accuracy-vs-BitOPs front (cost = BitOPs / W8A8 BitOPs, minimised;
  accuracy in %, maximised; reference point (1.0, 0 %)) is computed per method and
  (space, dataset, preset, track) from every feasible ``ok`` candidate, pooled over
  constraints and seeds. Its unit is ratio × percent: 100 is the (unreachable) maximum.
* Rows with ``track == "none"`` (a trial that failed before producing candidates, or an
  infeasible candidate that was never trained) carry no accuracy; they are counted on every
  track the method was evaluated on for that (space, dataset, preset), or on every track
  seen there when the method has no evaluated row at all.
"""

from __future__ import annotations

import html
import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.checkpoints import atomic_write_text
from benchmark.records import COLUMNS

log = logging.getLogger(__name__)

TASK_KEYS: tuple[str, ...] = ("space", "dataset", "preset", "constraint", "track")
GROUP_KEYS: tuple[str, ...] = (*TASK_KEYS, "method")
FRONT_KEYS: tuple[str, ...] = ("space", "dataset", "preset", "track", "method")
TRIAL_KEYS: tuple[str, ...] = ("run_id", "trial_key")
CANDIDATE_KEYS: tuple[str, ...] = ("run_id", "trial_key", "candidate_index", "track")
EVAL_TRACKS: tuple[str, ...] = ("retrain", "inherit")
DEFAULT_REF: tuple[float, float] = (1.0, 0.0)

_STRING_COLUMNS = (
    "run_id", "trial_key", "method", "space", "dataset", "preset", "constraint", "status",
    "error", "candidate", "track", "policy", "arch", "device", "mpqbench_version",
    "torch_version", "ray_version", "git_sha", "finished_at", "extra",
)  # fmt: skip
_INT_COLUMNS = ("seed", "candidate_index", "samples_processed")
_FLOAT_COLUMNS = tuple(
    c for c in COLUMNS if c not in _STRING_COLUMNS and c not in _INT_COLUMNS and c != "feasible"
)

AGGREGATE_COLUMNS: tuple[str, ...] = (
    *GROUP_KEYS,
    "rank",  # rank in the task group by top1_test_mean (1 = best, ties averaged)
    "n",  # seeds with a feasible ok candidate on this track
    "n_seeds",  # seeds seen for this method in this group (any status)
    "n_trials",
    "n_feasible",  # feasible ok candidates evaluated on this track
    "n_infeasible",  # candidates over the constraint (never trained)
    "n_failures",  # trials / candidates with status != ok
    "failure_statuses",  # e.g. "failed:1, over_budget:2"
    "seeds",  # the seeds behind ``n``, comma separated
    "top1_test_mean",  # % (test accuracy of the val-selected candidate, mean over seeds)
    "top1_test_std",  # % (ddof=1; NaN for n == 1)
    "top1_test_best",  # % (best over seeds of the val-selected candidates)
    "top1_val_mean",  # %
    "bitops_mean",  # BitOPs per image
    "bitops_ratio_w8a8_mean",  # ratio to W8A8
    "size_bits_mean",  # bits
    "search_device_hours_mean",  # hours per trial
    "search_samples_mean",  # training samples processed by the search, per trial
    "finetune_device_hours_mean",  # hours per trial (sum over the trial's candidates)
)


class LeaderboardError(ValueError):
    """Nothing to build a leaderboard from (no readable records)."""


# --------------------------------------------------------------------------------- loading
def load_runs(run_dirs: Sequence[Path]) -> pd.DataFrame:
    """Read the records of every run under ``run_dirs`` into one normalised frame.

    Each entry may be a run folder (``records.parquet``, else ``records.csv``), an ``--out``
    folder holding ``runs/<id>/``, a folder of run folders, or a records file itself. A file
    that cannot be read is skipped with a warning naming it; exact duplicates of
    (run_id, trial_key, candidate_index, track) are dropped (first kept).

    Raises:
        LeaderboardError: when no records could be read at all.
    """
    frames: list[pd.DataFrame] = []
    seen: set[Path] = set()
    for entry in run_dirs:
        for run_dir in _run_folders(Path(entry)):
            key = run_dir.resolve()
            if key in seen:
                continue
            seen.add(key)
            frame = _read_run(run_dir)
            if frame is not None:
                frames.append(frame)
    if not frames:
        names = ", ".join(str(p) for p in run_dirs) or "(no paths given)"
        raise LeaderboardError(f"no readable records.parquet or records.csv in: {names}")
    frame = normalise(pd.concat(frames, ignore_index=True))
    return drop_duplicate_rows(frame)


def _run_folders(path: Path) -> list[Path]:
    """The run folders (or single records files) that ``path`` stands for."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        warnings.warn(f"leaderboard: {path} does not exist; skipped", stacklevel=3)
        return []
    if _has_records(path):
        return [path]
    parent = path / "runs" if (path / "runs").is_dir() else path
    runs = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not runs:
        warnings.warn(f"leaderboard: no run folders under {path}; skipped", stacklevel=3)
    return runs


def _has_records(folder: Path) -> bool:
    return (folder / "records.parquet").is_file() or (folder / "records.csv").is_file()


def _read_run(run: Path) -> pd.DataFrame | None:
    """Records of one run folder or file; ``None`` (with a warning) when unreadable."""
    candidates = [run] if run.is_file() else [run / "records.parquet", run / "records.csv"]
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        warnings.warn(f"leaderboard: no records file in {run}; skipped", stacklevel=3)
        return None
    for path in existing:
        try:
            return _read_records_file(path)
        except Exception as exc:  # noqa: BLE001 - any corrupt file is skipped, not fatal
            warnings.warn(
                f"leaderboard: cannot read {path} ({type(exc).__name__}: {exc}); skipped",
                stacklevel=3,
            )
    return None


def _read_records_file(path: Path) -> pd.DataFrame:
    """One records file; CSV string columns stay strings (a trial key may look numeric)."""
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype={c: str for c in _STRING_COLUMNS}, keep_default_na=True)
    else:
        frame = pd.read_parquet(path)
    if "run_id" not in frame.columns or "trial_key" not in frame.columns:
        raise ValueError("not a records table (no run_id / trial_key columns)")
    return frame


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every schema column present and typed: strings (no NaN), ints,
    floats and a boolean ``feasible`` (missing counts as not feasible)."""
    out = frame.copy()
    for col in COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    for col in _STRING_COLUMNS:
        out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
    for col in _INT_COLUMNS:
        missing = 0 if col == "samples_processed" else -1
        out[col] = pd.to_numeric(out[col], errors="coerce").fillna(missing).astype("int64")
    for col in _FLOAT_COLUMNS:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    out["feasible"] = out["feasible"].map(_as_bool).astype(bool)
    out["status"] = out["status"].str.strip().str.lower()
    out["track"] = out["track"].str.strip().str.lower().replace("", "none")
    extra = [c for c in out.columns if c not in COLUMNS]
    return out[[*COLUMNS, *extra]]


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def drop_duplicate_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop repeated (run_id, trial_key, candidate_index, track) rows, keeping the first;
    warns when the repeats differ in content (a sign of two different runs sharing an id)."""
    keys = list(CANDIDATE_KEYS)
    repeated = frame.duplicated(keys, keep="first")
    if repeated.any():
        identical = frame.astype(str).duplicated(keep="first")
        conflicting = int((repeated & ~identical).sum())
        if conflicting:
            warnings.warn(
                f"leaderboard: {conflicting} rows repeat a (run_id, trial_key, candidate_index,"
                " track) key with different content; the first one is kept",
                stacklevel=2,
            )
    return frame.loc[~repeated].reset_index(drop=True)


# ----------------------------------------------------------------------------- aggregation
def _eligible(frame: pd.DataFrame) -> pd.Series:
    """Rows that count for accuracy: ok, feasible, evaluated, finite val and test accuracy."""
    return (
        (frame["status"] == "ok")
        & frame["feasible"]
        & frame["track"].isin(EVAL_TRACKS)
        & np.isfinite(frame["top1_val"])
        & np.isfinite(frame["top1_test"])
    )


def assign_tracks(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with ``track == "none"`` copied onto the evaluation tracks they count for.

    The tracks are those the method was evaluated on for that (space, dataset, preset); if
    it has none, every track seen there for any method; if none at all, ``retrain``.
    """
    if frame.empty:
        return frame.copy()
    evaluated = frame[frame["track"].isin(EVAL_TRACKS)]
    none_rows = frame[~frame["track"].isin(EVAL_TRACKS)]
    if none_rows.empty:
        return frame.copy()
    base = ["space", "dataset", "preset"]
    by_method = evaluated[[*base, "method", "track"]].drop_duplicates()
    by_space = evaluated[[*base, "track"]].drop_duplicates()
    pending = none_rows.drop(columns="track").reset_index(drop=True)
    pending["_row"] = np.arange(len(pending))
    own = pending.merge(by_method, on=[*base, "method"], how="inner")
    rest = pending[~pending["_row"].isin(own["_row"])]
    shared = rest.merge(by_space, on=base, how="left")
    shared["track"] = shared["track"].fillna("retrain")
    copies = pd.concat([own, shared], ignore_index=True).drop(columns="_row")
    return pd.concat([evaluated, copies[list(frame.columns)]], ignore_index=True)


def select_per_seed(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task group, method and seed: the eligible candidate with the best ``top1_val``.

    Ties on validation accuracy go to the cheaper candidate (lower BitOPs ratio), then to
    the first by (run_id, trial_key, candidate_index); test accuracy is never consulted.
    Candidates of one seed are pooled over runs (a repeated trial is more candidates).
    """
    chosen = frame[_eligible(frame)]
    order = ["top1_val", "bitops_ratio_w8a8", "run_id", "trial_key", "candidate_index"]
    chosen = chosen.sort_values(
        order, ascending=[False, True, True, True, True], na_position="last", kind="mergesort"
    )
    return chosen.drop_duplicates([*GROUP_KEYS, "seed"], keep="first").reset_index(drop=True)


def trial_costs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (task group, method, trial): search hours and search samples once per
    trial (the harness repeats them on every row of the trial) and finetune hours summed
    over the trial's candidates on that track (each candidate is finetuned on its own)."""
    keys = [*GROUP_KEYS, *TRIAL_KEYS]
    cost_columns = ["search_device_hours", "search_samples", "finetune_device_hours"]
    if frame.empty:
        return pd.DataFrame(columns=[*keys, *cost_columns])
    trials = frame.groupby(list(TRIAL_KEYS))
    search = trials["search_device_hours"].max()
    samples = trials["samples_processed"].max()
    candidates = frame.drop_duplicates(list(CANDIDATE_KEYS))
    finetune = candidates.groupby(keys)["finetune_device_hours"].sum(min_count=1)
    out = finetune.reset_index()
    index = pd.MultiIndex.from_frame(out[list(TRIAL_KEYS)])
    out["search_device_hours"] = search.reindex(index).to_numpy()
    out["search_samples"] = samples.reindex(index).to_numpy().astype("float64")
    return out[[*keys, *cost_columns]]


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (space, dataset, preset, constraint, track, method): counts, the val-selected
    candidate's test accuracy over seeds (mean, std, best, %), its mean cost (BitOPs, ratio
    to W8A8, bits) and the mean search / finetune device-hours per trial.

    Columns: :data:`AGGREGATE_COLUMNS`; sorted by task group, then mean accuracy (best first).
    """
    frame = normalise(frame)
    if frame.empty:
        return pd.DataFrame(columns=list(AGGREGATE_COLUMNS))
    rows = assign_tracks(frame)
    keys = list(GROUP_KEYS)
    counts = _counts(rows)
    stats = _accuracy_stats(select_per_seed(rows))
    cost_columns = ["search_device_hours", "search_samples", "finetune_device_hours"]
    costs = trial_costs(rows).groupby(keys)[cost_columns]
    costs = costs.mean().add_suffix("_mean").reset_index()
    out = counts.merge(stats, on=keys, how="left").merge(costs, on=keys, how="left")
    out["n"] = out["n"].fillna(0).astype("int64")
    out["seeds"] = out["seeds"].fillna("")
    out["rank"] = out.groupby(list(TASK_KEYS))["top1_test_mean"].rank(
        ascending=False, method="average", na_option="bottom"
    )
    out = out.sort_values(
        [*TASK_KEYS, "top1_test_mean", "method"],
        ascending=[True] * len(TASK_KEYS) + [False, True],
        na_position="last",
        kind="mergesort",
    )
    return out[list(AGGREGATE_COLUMNS)].reset_index(drop=True)


def _counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Seeds, trials, feasible / infeasible candidates and failures per group."""
    keys = list(GROUP_KEYS)
    unique = rows.drop_duplicates([*keys, "run_id", "trial_key", "candidate_index"])
    ok = unique["status"] == "ok"
    feasible = ok & unique["feasible"] & (unique["candidate_index"] >= 0)
    infeasible = ok & ~unique["feasible"] & (unique["candidate_index"] >= 0)
    failed = ~ok
    grouped = unique.assign(_f=feasible, _i=infeasible, _x=failed).groupby(keys)
    out = grouped.agg(
        n_seeds=("seed", "nunique"),
        n_feasible=("_f", "sum"),
        n_infeasible=("_i", "sum"),
        n_failures=("_x", "sum"),
    ).reset_index()
    trials = unique[[*keys, *TRIAL_KEYS]].drop_duplicates().groupby(keys).size()
    out = out.merge(trials.rename("n_trials").reset_index(), on=keys, how="left")
    statuses = unique[failed].groupby(keys)["status"].agg(_status_summary)
    out = out.merge(statuses.rename("failure_statuses").reset_index(), on=keys, how="left")
    out["failure_statuses"] = out["failure_statuses"].fillna("")
    for col in ("n_seeds", "n_trials", "n_feasible", "n_infeasible", "n_failures"):
        out[col] = out[col].astype("int64")
    return out


def _status_summary(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return ", ".join(f"{name}:{counts[name]}" for name in sorted(counts.index))


def _accuracy_stats(best: pd.DataFrame) -> pd.DataFrame:
    """Mean / std / best test accuracy (%) and mean cost over seeds of the selected rows."""
    keys = list(GROUP_KEYS)
    if best.empty:
        columns = [
            "n",
            "seeds",
            "top1_test_mean",
            "top1_test_std",
            "top1_test_best",
            "top1_val_mean",
            "bitops_mean",
            "bitops_ratio_w8a8_mean",
            "size_bits_mean",
        ]
        return pd.DataFrame(columns=[*keys, *columns]).astype(
            {c: "float64" for c in columns if c != "seeds"}
        )
    grouped = best.groupby(keys)
    out = grouped.agg(
        n=("seed", "nunique"),
        seeds=("seed", lambda s: ",".join(str(v) for v in sorted(set(s)))),
        top1_test_mean=("top1_test", "mean"),
        top1_test_std=("top1_test", lambda s: s.std(ddof=1)),
        top1_test_best=("top1_test", "max"),
        top1_val_mean=("top1_val", "mean"),
        bitops_mean=("bitops", "mean"),
        bitops_ratio_w8a8_mean=("bitops_ratio_w8a8", "mean"),
        size_bits_mean=("size_bits", "mean"),
    )
    return out.reset_index()


# -------------------------------------------------------------------------------- rankings
def group_ranks(agg: pd.DataFrame, min_methods: int = 2) -> pd.DataFrame:
    """(method, rank) of every task group with at least ``min_methods`` methods.

    Within a group (space, dataset, preset, constraint, track) rank 1 is the best mean
    ``top1_test``; ties share the average rank; methods without a feasible result share the
    last places (also averaged). A group with fewer methods ranks nobody (a lone method's
    rank 1 says nothing and would flatter methods evaluated on tracks others lack).
    """
    if agg.empty:
        return pd.DataFrame({"method": pd.Series(dtype=str), "rank": pd.Series(dtype=float)})
    groups = agg.groupby(list(TASK_KEYS), dropna=False)
    sizes = groups["method"].transform("nunique")
    ranks = groups["top1_test_mean"].rank(ascending=False, method="average", na_option="bottom")
    keep = sizes >= min_methods
    return pd.DataFrame({"method": agg.loc[keep, "method"], "rank": ranks[keep]})


def average_rank(agg: pd.DataFrame, min_methods: int = 2) -> pd.Series:
    """Average over task groups of each method's rank by mean test accuracy (1 = best).

    Ranks as in :func:`group_ranks`; a method is averaged over the groups it is ranked in.
    Returns a Series indexed by method, named ``average_rank``, best first.
    """
    ranks = group_ranks(agg, min_methods)
    result = ranks.groupby("method")["rank"].mean().sort_values(kind="mergesort")
    return result.astype("float64").rename("average_rank").rename_axis("method")


def rank_table(agg: pd.DataFrame, min_methods: int = 2) -> pd.DataFrame:
    """Average rank per (track, method) plus ``track == "all"`` over every group.

    Columns: track, method, average_rank, n_groups (groups the method was ranked in).
    Methods never ranked (alone in all their groups) are listed with NaN and 0 groups.
    """
    columns = ["track", "method", "average_rank", "n_groups"]
    if agg.empty:
        return pd.DataFrame(columns=columns)
    parts = []
    subsets = [(t, agg[agg["track"] == t]) for t in sorted(agg["track"].unique())]
    for track, subset in [*subsets, ("all", agg)]:
        ranks = group_ranks(subset, min_methods)
        table = pd.DataFrame({"method": sorted(subset["method"].unique())})
        table["average_rank"] = table["method"].map(ranks.groupby("method")["rank"].mean())
        table["n_groups"] = table["method"].map(ranks["method"].value_counts())
        table["n_groups"] = table["n_groups"].fillna(0).astype("int64")
        table = table.sort_values(["average_rank", "method"], na_position="last", kind="mergesort")
        table.insert(0, "track", track)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)[columns]


# ----------------------------------------------------------------------------- hypervolume
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
    usable = rows[_eligible(rows) & np.isfinite(rows["bitops_ratio_w8a8"])]
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


# ------------------------------------------------------------------------------ leaderboard
@dataclass
class Leaderboard:
    """Every table of a leaderboard.

    Attributes:
        aggregate: :func:`aggregate` (one row per task group and method).
        ranks: :func:`rank_table` (average rank per track and method, plus track "all").
        hypervolume: :func:`hypervolume_table`.
        run_ids: the runs the numbers come from.
        devices: the distinct ``device`` values seen in the rows.
        n_rows: rows read (after dropping duplicates).
    """

    aggregate: pd.DataFrame
    ranks: pd.DataFrame
    hypervolume: pd.DataFrame
    run_ids: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    n_rows: int = 0


def build_leaderboard(frame: pd.DataFrame) -> Leaderboard:
    """All leaderboard tables from result rows (as :func:`load_runs` returns them)."""
    frame = drop_duplicate_rows(normalise(frame))
    agg = aggregate(frame)
    return Leaderboard(
        aggregate=agg,
        ranks=rank_table(agg),
        hypervolume=hypervolume_table(frame),
        run_ids=sorted(v for v in frame["run_id"].unique() if v),
        devices=sorted(v for v in frame["device"].unique() if v),
        n_rows=len(frame),
    )


# -------------------------------------------------------------------------------- rendering
@dataclass
class Table:
    """A rendered table: headers and rows of (text, sort key) cells; ``None`` sorts last."""

    title: str
    headers: list[str]
    rows: list[list[tuple[str, float | str | None]]]
    note: str = ""


def _num(value: float, fmt: str) -> tuple[str, float | None]:
    """``value`` formatted, with its numeric sort key; NaN shows as an em dash."""
    if value is None or not np.isfinite(value):
        return "—", None
    return format(value, fmt), float(value)


def _accuracy_cell(row: pd.Series) -> tuple[str, float | None]:
    """``mean ± std (n=k/s)``: k seeds with a result of s seeds run."""
    n, seeds = int(row["n"]), int(row["n_seeds"])
    count = f"(n={n}/{seeds})" if seeds != n else f"(n={n})"
    mean, std = row["top1_test_mean"], row["top1_test_std"]
    if n == 0 or not np.isfinite(mean):
        return f"— {count}", None
    spread = f" ± {std:.2f}" if np.isfinite(std) else ""
    return f"{mean:.2f}{spread} {count}", float(mean)


def _failure_cell(row: pd.Series) -> tuple[str, float]:
    n = int(row["n_failures"])
    text = f"{n} ({row['failure_statuses']})" if n else "0"
    return text, float(n)


def _group_table(key: tuple, group: pd.DataFrame) -> Table:
    """One task group (space, dataset, preset, constraint, track): a row per method."""
    headers = [
        "rank", "method", "top-1 test % (mean ± std)", "best test %", "val %",
        "BitOPs / W8A8", "GBitOPs", "size KiB", "search h / trial", "search samples / trial",
        "finetune h / trial", "feasible", "infeasible", "failures",
    ]  # fmt: skip
    rows = []
    for _, row in group.iterrows():
        rows.append(
            [
                _num(row["rank"], "g"),
                (str(row["method"]), str(row["method"])),
                _accuracy_cell(row),
                _num(row["top1_test_best"], ".2f"),
                _num(row["top1_val_mean"], ".2f"),
                _num(row["bitops_ratio_w8a8_mean"], ".3f"),
                _num(row["bitops_mean"] / 1e9, ".4g"),
                _num(row["size_bits_mean"] / 8 / 1024, ".1f"),
                _num(row["search_device_hours_mean"], ".3g"),
                _num(row["search_samples_mean"], ".3g"),
                _num(row["finetune_device_hours_mean"], ".3g"),
                (str(int(row["n_feasible"])), float(row["n_feasible"])),
                (str(int(row["n_infeasible"])), float(row["n_infeasible"])),
                _failure_cell(row),
            ]
        )
    return Table(" · ".join(str(k) for k in key), headers, rows)


def _rank_overview(lb: Leaderboard) -> Table:
    """Average rank per method: over every group, then per track."""
    ranks = lb.ranks
    tracks = [t for t in sorted(ranks["track"].unique()) if t != "all"] if len(ranks) else []
    headers = ["method", "average rank (all groups)", *[f"avg rank {t}" for t in tracks]]
    headers += ["groups ranked", "seeds with result / run", "failures"]
    overall = ranks[ranks["track"] == "all"] if len(ranks) else ranks
    rows = []
    for _, row in overall.iterrows():
        method = row["method"]
        mine = lb.aggregate[lb.aggregate["method"] == method]
        cells = [(str(method), str(method)), _num(row["average_rank"], ".2f")]
        for track in tracks:
            hit = ranks[(ranks["track"] == track) & (ranks["method"] == method)]
            cells.append(_num(hit["average_rank"].iloc[0], ".2f") if len(hit) else ("—", None))
        n_ok, n_all = int(mine["n"].sum()), int(mine["n_seeds"].sum())
        cells += [
            (str(int(row["n_groups"])), float(row["n_groups"])),
            (f"{n_ok} / {n_all}", float(n_ok)),
            (str(int(mine["n_failures"].sum())), float(mine["n_failures"].sum())),
        ]
        rows.append(cells)
    note = (
        "Rank 1 = best mean test top-1 in a task group (space, dataset, preset, constraint, "
        "track); ties averaged; a method with no feasible result shares the last places; "
        "groups with a single method are not ranked. "
        "Seeds and failures are summed over task groups (a failed trial counts once per track)."
    )
    return Table("Average rank", headers, rows, note)


def _hypervolume_overview(lb: Leaderboard) -> Table:
    """Hypervolume per method (rows) and (space, dataset, preset, track) (columns)."""
    hv = lb.hypervolume
    if hv.empty:
        return Table("Hypervolume", ["method"], [], "No feasible candidates.")
    hv = hv.assign(column=hv[list(FRONT_KEYS[:-1])].astype(str).agg("/".join, axis=1))
    columns = sorted(hv["column"].unique())
    rows = []
    for method in lb.ranks.loc[lb.ranks["track"] == "all", "method"]:
        cells: list[tuple[str, float | str | None]] = [(str(method), str(method))]
        for column in columns:
            hit = hv[(hv["method"] == method) & (hv["column"] == column)]
            if hit.empty:
                cells.append(("—", None))
            else:
                value, n_front = hit["hypervolume"].iloc[0], int(hit["n_front"].iloc[0])
                text, key = _num(value, ".2f")
                cells.append((f"{text} ({n_front} on front / {int(hit['n_points'].iloc[0])})", key))
        rows.append(cells)
    note = (
        "Area dominated by each method's front of test top-1 (%) vs BitOPs / W8A8 BitOPs, "
        f"bounded by the reference point (cost {DEFAULT_REF[0]:g}, top-1 {DEFAULT_REF[1]:g} %); "
        "unit ratio × %, 100 is the unreachable maximum. All feasible ok candidates, pooled "
        "over constraints and seeds. Columns: space/dataset/preset/track."
    )
    return Table("Hypervolume (accuracy vs BitOPs)", ["method", *columns], rows, note)


def leaderboard_tables(lb: Leaderboard) -> list[Table]:
    """The overall tables, then one table per task group."""
    tables = [_rank_overview(lb), _hypervolume_overview(lb)]
    if lb.aggregate.empty:
        return tables
    for key, group in lb.aggregate.groupby(list(TASK_KEYS), sort=True):
        tables.append(_group_table(key, group.sort_values("rank", kind="mergesort")))
    return tables


def _provenance(lb: Leaderboard) -> list[str]:
    runs = ", ".join(f"`{r}`" for r in lb.run_ids) or "(none)"
    devices = ", ".join(f"`{d}`" for d in lb.devices) or "(not recorded)"
    return [
        f"Numbers from {lb.n_rows} result rows of {len(lb.run_ids)} run(s): {runs}.",
        f"Devices seen (`device` column): {devices}.",
        "Per method, task and seed the feasible `ok` candidate with the best **validation** "
        "top-1 is selected; its **test** top-1 (%) is reported as mean ± std over seeds "
        "(std with ddof=1, none for one seed; n = seeds with a result, /s = seeds run). "
        "Costs are those of the selected candidates; device-hours are per trial.",
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(lb: Leaderboard) -> str:
    """The leaderboard as a markdown document."""
    lines = ["# mpqbench leaderboard", "", *[f"{p}  " for p in _provenance(lb)], ""]
    tables = leaderboard_tables(lb)
    for i, table in enumerate(tables):
        if i == 0:
            lines += ["## Overall", ""]
        if i == 2:
            lines += ["## Task groups (space · dataset · preset · constraint · track)", ""]
        lines += [f"### {table.title}", ""]
        if table.note:
            lines += [table.note, ""]
        if not table.rows:
            lines += ["_No results._", ""]
            continue
        lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
        lines.append("|" + "|".join("---" for _ in table.headers) + "|")
        for row in table.rows:
            lines.append("| " + " | ".join(_md_cell(text) for text, _ in row) + " |")
        lines.append("")
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem;
       color: #222; max-width: 110rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
td:nth-child(-n+2), th:nth-child(-n+2) { text-align: left; }
th { background: #f0f3f7; cursor: pointer; user-select: none; position: sticky; top: 0; }
th:hover { background: #dde5ee; }
th.asc::after { content: " \\25B2"; } th.desc::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafafa; }
p.note { color: #555; font-size: 0.85rem; max-width: 60rem; }
code { background: #f3f3f3; padding: 0 0.2rem; }
"""

_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = !th.classList.contains("asc");
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(asc ? "asc" : "desc");
    function key(row) {
      var cell = row.cells[col], raw = cell.getAttribute("data-sort");
      if (raw === null || raw === "") return null;
      var num = parseFloat(raw);
      return isNaN(num) ? raw.toLowerCase() : num;
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null) return y === null ? 0 : 1;  // missing values always last
      if (y === null) return -1;
      var c = x < y ? -1 : x > y ? 1 : 0;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _inline_markdown(text: str) -> str:
    """Escape ``text`` for HTML, turning `code` and **bold** spans into tags."""
    parts = html.escape(text).split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    bold = out.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(bold))


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = []
        for text, key in row:
            sort = "" if key is None else html.escape(str(key), quote=True)
            cells.append(f'<td data-sort="{sort}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def render_html(lb: Leaderboard) -> str:
    """The leaderboard as one self-contained HTML page (inline CSS and sorting script)."""
    parts = ["<h1>mpqbench leaderboard</h1>"]
    parts += [f"<p>{_inline_markdown(p)}</p>" for p in _provenance(lb)]
    parts.append("<p class='note'>Click a column header to sort; click again to reverse.</p>")
    for i, table in enumerate(leaderboard_tables(lb)):
        if i == 0:
            parts.append("<h2>Overall</h2>")
        if i == 2:
            parts.append("<h2>Task groups (space · dataset · preset · constraint · track)</h2>")
        parts.append(f"<h3>{html.escape(table.title)}</h3>")
        if table.note:
            parts.append(f"<p class='note'>{html.escape(table.note)}</p>")
        parts.append(_html_table(table) if table.rows else "<p><em>No results.</em></p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>mpqbench leaderboard</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + f"\n<script>{_JS}</script>"
        "\n</body></html>\n"
    )


def write_leaderboard(lb: Leaderboard, out_dir: Path) -> list[Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv`` (the aggregate table, tidy) and a
    self-contained sortable ``leaderboard.html`` into ``out_dir``, each atomically.

    Returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "leaderboard.md": render_markdown(lb),
        "leaderboard.csv": lb.aggregate.to_csv(index=False),
        "leaderboard.html": render_html(lb),
    }
    paths = []
    for name, text in files.items():
        path = out_dir / name
        atomic_write_text(path, text)
        paths.append(path)
    return paths
