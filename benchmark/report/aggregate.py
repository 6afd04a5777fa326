"""Aggregation and rankings of result rows: per task group, method and seed.

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

import numpy as np
import pandas as pd

from benchmark.harness.records import normalise

TASK_KEYS: tuple[str, ...] = ("space", "dataset", "preset", "constraint", "track")
GROUP_KEYS: tuple[str, ...] = (*TASK_KEYS, "method")
TRIAL_KEYS: tuple[str, ...] = ("run_id", "trial_key")
CANDIDATE_KEYS: tuple[str, ...] = ("run_id", "trial_key", "candidate_index", "track")
EVAL_TRACKS: tuple[str, ...] = ("retrain", "inherit")

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


# ----------------------------------------------------------------------------- aggregation
def eligible(frame: pd.DataFrame) -> pd.Series:
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
    chosen = frame[eligible(frame)]
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
