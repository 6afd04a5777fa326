"""The leaderboard's main table: per task group and method, counts, the validation-selected
candidate's test accuracy over seeds, its per-seed rank and its costs.

Units: accuracies (``top1_*``) are percent, ``bitops`` BitOPs per image, ``bitops_ratio_w8a8``
a ratio to the same model at uniform W8A8, ``size_bits`` bits, device and wall time in hours,
CPU time in seconds.

Protocol (DESIGN.md §1; selection in :mod:`benchmark.report.selection`, ranks in
:mod:`benchmark.report.ranks`, costs in :mod:`benchmark.report.costs`):

* Per task group, method and seed the candidate with the best **validation** top-1 is
  selected; its **test** top-1 is what the tables report: mean ± std over seeds (ddof=1,
  NaN for one seed), the half-width of its 95% t-interval, and ``n`` (seeds with a result)
  of ``n_seeds`` (seeds run). A selected candidate without a test score is counted in
  ``n_missing_test``, never replaced by the next one.
* ``rank`` is the mean of the method's per-seed ranks in the group (a seed without a
  result ranks last); NaN in a group no other method ran.
* ``vs_random_*``: the paired comparison with ``random`` over the seeds both have a result
  for, and the task's minimum detectable difference (:mod:`benchmark.report.paired`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.report.costs import COST_COLUMNS, cost_means, trial_costs
from benchmark.report.paired import (
    PAIRED_COLUMNS,
    POWER_COLUMNS,
    paired_with_reference,
    power_per_task,
)
from benchmark.report.ranks import group_rank
from benchmark.report.selection import (
    GROUP_KEYS,
    TASK_KEYS,
    TRIAL_KEYS,
    assign_tracks,
    prepared,
    seed_results,
)
from benchmark.report.stats import t_half_width

AGGREGATE_COLUMNS: tuple[str, ...] = (
    *GROUP_KEYS,
    "rank",  # mean over seeds of the per-seed rank (1 = best); NaN when never ranked
    "n",  # seeds whose selected candidate has a test score
    "n_seeds",  # seeds run for this method in this group (any status)
    "n_missing_test",  # seeds whose selected candidate has no test score
    "n_trials",
    "n_feasible",  # feasible ok candidates evaluated on this track
    "n_infeasible",  # candidates over the constraint (never trained)
    "n_failures",  # trials / candidates with status != ok
    "failure_statuses",  # e.g. "failed:1, over_budget:2"
    "seeds",  # the seeds behind ``n``, comma separated
    "top1_test_mean",  # % (test accuracy of the val-selected candidate, mean over seeds)
    "top1_test_std",  # % (ddof=1; NaN for n == 1)
    "top1_test_ci95",  # % (half-width of the 95% t-interval of the mean; NaN for n == 1)
    "top1_test_best",  # % (best over seeds of the val-selected candidates)
    "top1_val_mean",  # %
    "vs_random_n",  # seeds paired with random's at the same task (0: random itself / absent)
    "vs_random_diff",  # percentage points: mean over paired seeds of this method − random
    "vs_random_ci95",  # percentage points: half-width of the 95% t-interval of that mean
    "vs_random_p",  # two-sided paired t-test p-value (NaN: < 2 pairs or no spread)
    "vs_random_mdd",  # pp: the task's minimum detectable difference (α 0.05, power 0.8)
    "vs_random_sd",  # pp: pooled std of the task's paired differences to random
    "bitops_mean",  # BitOPs per image
    "bitops_ratio_w8a8_mean",  # ratio to W8A8
    "size_bits_mean",  # bits
    "search_device_hours_mean",  # device-hours per trial: wall hours × device share
    "search_wall_hours_mean",  # hours per trial
    "search_cpu_seconds_mean",  # process CPU seconds per trial
    "search_samples_mean",  # training samples processed by the search, per trial
    "finetune_device_hours_mean",  # device-hours per trial (sum over its candidates)
    "finetune_wall_hours_mean",  # hours per trial (sum over its candidates)
    "finetune_cpu_seconds_mean",  # CPU seconds per trial (sum over its candidates)
    "device_shares",  # the trials' "share × device", e.g. "0.5 × NVIDIA H200"
)

_STAT_COLUMNS = (
    "n", "seeds", "top1_test_mean", "top1_test_std", "top1_test_ci95", "top1_test_best",
    "top1_val_mean", "bitops_mean", "bitops_ratio_w8a8_mean", "size_bits_mean",
)  # fmt: skip


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (code version, space, dataset, preset, constraint, track, method): counts, the
    val-selected candidate's test accuracy over seeds (%), its mean cost (BitOPs, ratio to
    W8A8, bits), its rank, and the mean search / finetune costs per trial.

    Columns: :data:`AGGREGATE_COLUMNS`; sorted by task group, then rank, then mean accuracy.
    """
    frame = prepared(frame)
    if frame.empty:
        return pd.DataFrame(columns=list(AGGREGATE_COLUMNS))
    rows = assign_tracks(frame)
    keys = list(GROUP_KEYS)
    seeds = seed_results(rows)
    out = _counts(rows).merge(_accuracy_stats(seeds), on=keys, how="left")
    out = out.merge(group_rank(seeds)[[*keys, "rank"]], on=keys, how="left")
    out = out.merge(paired_with_reference(seeds), on=keys, how="left")
    out = out.merge(power_per_task(seeds), on=list(TASK_KEYS), how="left")
    out["vs_random_n"] = out["vs_random_n"].fillna(0).astype("int64")
    out = out.merge(cost_means(trial_costs(rows)), on=keys, how="left")
    out["n"] = out["n"].fillna(0).astype("int64")
    out["seeds"] = out["seeds"].fillna("")
    out["device_shares"] = out["device_shares"].fillna("")
    numeric = (*(f"{c}_mean" for c in COST_COLUMNS), *PAIRED_COLUMNS[1:], *POWER_COLUMNS)
    for column in (*numeric, "rank"):
        out[column] = out[column].astype("float64")
    out = out.sort_values(
        [*TASK_KEYS, "rank", "top1_test_mean", "method"],
        ascending=[True] * len(TASK_KEYS) + [True, False, True],
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


def _accuracy_stats(seeds: pd.DataFrame) -> pd.DataFrame:
    """Mean / std / interval / best test accuracy (%) and mean cost over the seeds with a
    result, and the count of seeds whose selected candidate has no test score."""
    keys = list(GROUP_KEYS)
    missing = seeds.groupby(keys)["missing_test"].sum().astype("int64")
    best = seeds[seeds["has_result"]]
    if best.empty:
        out = pd.DataFrame(columns=[*keys, *_STAT_COLUMNS]).astype(
            {c: "float64" for c in _STAT_COLUMNS if c != "seeds"}
        )
    else:
        out = (
            best.groupby(keys)
            .agg(
                n=("seed", "nunique"),
                seeds=("seed", lambda s: ",".join(str(v) for v in sorted(set(s)))),
                top1_test_mean=("top1_test", "mean"),
                top1_test_std=("top1_test", lambda s: s.std(ddof=1)),
                top1_test_ci95=("top1_test", t_half_width),
                top1_test_best=("top1_test", "max"),
                top1_val_mean=("top1_val", "mean"),
                bitops_mean=("bitops", "mean"),
                bitops_ratio_w8a8_mean=("bitops_ratio_w8a8", "mean"),
                size_bits_mean=("size_bits", "mean"),
            )
            .reset_index()
        )
    out = missing.rename("n_missing_test").reset_index().merge(out, on=keys, how="left")
    for column in _STAT_COLUMNS:
        if column not in ("n", "seeds"):
            out[column] = out[column].astype("float64")
    out["top1_test_std"] = out["top1_test_std"].where(np.isfinite(out["top1_test_std"]))
    return out
