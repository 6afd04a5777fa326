"""Who wins at each budget: per task (space, dataset, preset, constraint) on the ``retrain``
track, where every method competes, each method's test top-1 against the best method's.

Units: accuracies are percent, differences percentage points, costs device-hours per trial.

* The **best** method of a task has the highest mean test top-1 of its validation-selected
  candidates over the seeds with a result (ties: more seeds with a result, then the name).
* Every other method is compared with it **paired over seeds** (the seeds both have a
  result for; :func:`~benchmark.report.stats.paired_difference`): the mean difference
  (method − best), its 95% interval and the paired t-test's p-value, **Holm-corrected**
  over the task's methods (:func:`~benchmark.report.stats.holm`).
* Verdicts: ``best``; ``tied`` (not significantly worse than the best: Holm-adjusted
  p ≥ 0.05, or the same score on every paired seed); ``worse`` (adjusted p < 0.05, or a
  lower score by the same margin on every paired seed, where the t-test is undefined);
  ``untested`` (fewer than two paired seeds); ``no result`` (no seed with a result).
* Beside each task: its minimum detectable difference (the aggregate's ``vs_random_mdd``,
  from the spread of the task's paired differences) and each method's search device-hours.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.report.selection import TASK_KEYS, assign_tracks, prepared, seed_results
from benchmark.report.stats import holm, paired_difference

BEST_TRACK = "retrain"
ALPHA = 0.05
VERDICTS: tuple[str, ...] = ("best", "tied", "worse", "untested", "no result")
BEST_COLUMNS: tuple[str, ...] = (
    *TASK_KEYS,
    "method",
    "verdict",  # one of VERDICTS
    "n",  # seeds with a result
    "n_seeds",  # seeds run
    "n_missing_test",  # seeds whose selected candidate has no test score
    "top1_test_mean",  # %
    "top1_test_ci95",  # % (half-width of the 95% t-interval; NaN for one seed)
    "vs_best_n",  # seeds paired with the best method's
    "vs_best_diff",  # pp: mean over paired seeds of this method − the best
    "vs_best_ci95",  # pp: half-width of the 95% t-interval of that mean
    "vs_best_p",  # paired t-test p-value (NaN: < 2 pairs or no spread)
    "vs_best_p_holm",  # Holm-adjusted over the task's methods
    "task_mdd",  # pp: the task's minimum detectable difference (α 0.05, power 0.8)
    "search_device_hours_mean",  # device-hours per trial
)


def best_at_each_budget(frame: pd.DataFrame, agg: pd.DataFrame) -> pd.DataFrame:
    """:data:`BEST_COLUMNS` per (task on the ``retrain`` track, method) from result rows
    ``frame`` and their aggregate ``agg`` (:func:`~benchmark.report.aggregate.aggregate`);
    per task the best first, then by mean test top-1, methods without a result last."""
    columns = list(BEST_COLUMNS)
    if agg.empty or frame.empty:
        return pd.DataFrame(columns=columns)
    seeds = seed_results(assign_tracks(prepared(frame)))
    seeds = seeds[seeds["track"] == BEST_TRACK]
    score = seeds["top1_test"].astype(float).where(seeds["has_result"])
    scores = seeds[[*TASK_KEYS, "method", "seed"]].assign(_score=score)
    parts = []
    task_rows = agg[agg["track"] == BEST_TRACK]
    for key, task in task_rows.groupby(list(TASK_KEYS), sort=True, dropna=False):
        mine = scores
        for k, v in zip(TASK_KEYS, key, strict=True):
            mine = mine[mine[k] == v]
        by_seed = mine.pivot_table(index="seed", columns="method", values="_score", dropna=False)
        parts.append(_task_verdicts(task, by_seed))
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def _task_verdicts(task: pd.DataFrame, by_seed: pd.DataFrame) -> pd.DataFrame:
    """One task's rows (``task``: the aggregate's) and each method's comparison with the
    best one; ``by_seed``: test top-1 per seed (rows) and method (columns), NaN without a
    result."""
    out = task.copy()
    out["task_mdd"] = out["vs_random_mdd"]
    has = out["n"] > 0
    ranked = out[has].sort_values(
        ["top1_test_mean", "n", "method"], ascending=[False, False, True], kind="mergesort"
    )
    for column in ("vs_best_diff", "vs_best_ci95", "vs_best_p", "vs_best_p_holm"):
        out[column] = np.nan
    out["vs_best_n"] = 0
    out["verdict"] = "no result"
    if ranked.empty:
        return out
    best = ranked["method"].iloc[0]
    out.loc[out["method"] == best, "verdict"] = "best"
    others = [m for m in ranked["method"] if m != best]
    results = {}
    for method in others:
        results[method] = paired_difference(by_seed[method].to_numpy(), by_seed[best].to_numpy())
    adjusted = dict(zip(others, holm([results[m].p_value for m in others]), strict=True))
    for method in others:
        found, at = results[method], out["method"] == method
        out.loc[at, ["vs_best_n", "vs_best_diff", "vs_best_ci95", "vs_best_p"]] = [
            found.n, found.mean, found.ci95, found.p_value
        ]  # fmt: skip
        out.loc[at, "vs_best_p_holm"] = adjusted[method]
        out.loc[at, "verdict"] = _verdict(found.n, found.mean, adjusted[method])
    order = {m: i for i, m in enumerate(ranked["method"])}
    out = out.assign(_order=out["method"].map(order).fillna(len(order)))
    out = out.sort_values(["_order", "method"], kind="mergesort").drop(columns="_order")
    out["vs_best_n"] = out["vs_best_n"].astype("int64")
    return out


def _verdict(n: int, diff: float, p_holm: float) -> str:
    if n < 2:
        return "untested"
    if not np.isfinite(p_holm):  # every paired difference the same: no t-test
        return "tied" if diff == 0 else "worse"
    return "tied" if p_holm >= ALPHA else "worse"
