"""Each method against ``random`` at the same task: a paired comparison over seeds.

Within a task group (code version, space, dataset, preset, constraint, track), a method's
test top-1 (%) of its validation-selected candidate on seed *s* is paired with
``random``'s on the same seed *s* (same FP start, same data split). Seeds where either has
no result are left out of the pairs (``vs_random_n`` says how many are left). Per group
and method: the mean difference (method − random, percentage points), the half-width of
its 95% Student-t interval and the paired t-test's two-sided p-value
(:func:`benchmark.report.stats.paired_difference`).

Per task group, the power of those tests: the minimum detectable difference
(``vs_random_mdd``), the smallest true mean difference to ``random`` that the paired t-test
(α 0.05, two-sided) finds with probability 0.8 at the group's number of paired seeds, from
the spread of the group's paired differences pooled over its methods
(:func:`benchmark.report.stats.min_detectable_difference`). A difference smaller than it is
not one the run can tell from noise.
"""

from __future__ import annotations

import pandas as pd

from benchmark.report.selection import GROUP_KEYS, TASK_KEYS
from benchmark.report.stats import min_detectable_difference, paired_difference, pooled_sd

REFERENCE_METHOD = "random"
PAIRED_COLUMNS: tuple[str, ...] = (
    "vs_random_n",  # seeds paired (both with a result)
    "vs_random_diff",  # percentage points: mean over paired seeds of method − random
    "vs_random_ci95",  # percentage points: half-width of the 95% t-interval of that mean
    "vs_random_p",  # two-sided paired t-test p-value (NaN: < 2 pairs or no spread)
)
POWER_COLUMNS: tuple[str, ...] = (
    "vs_random_mdd",  # percentage points: minimum detectable difference (α 0.05, power 0.8)
    "vs_random_sd",  # percentage points: pooled std of the group's paired differences
)


def _pairs(seeds: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per (task group, method other than ``reference``, seed): ``_score`` and the
    reference's ``_score_ref`` at the same task and seed (NaN where either has no result)."""
    keys, task = list(GROUP_KEYS), list(TASK_KEYS)
    scored = seeds.assign(_score=seeds["top1_test"].astype(float).where(seeds["has_result"]))
    ref = scored.loc[scored["method"] == reference, [*task, "seed", "_score"]]
    others = scored.loc[scored["method"] != reference, [*keys, "seed", "_score"]]
    return others.merge(ref, on=[*task, "seed"], how="inner", suffixes=("", "_ref"))


def power_per_task(seeds: pd.DataFrame, reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """Per task group where ``reference`` ran and some method has two paired seeds:
    :data:`POWER_COLUMNS`. The pooled std is over each method's paired differences (each
    about its own mean); the number of pairs is the group's largest over its methods."""
    task = list(TASK_KEYS)
    columns = [*task, *POWER_COLUMNS]
    if seeds.empty:
        return pd.DataFrame(columns=columns)
    pairs = _pairs(seeds, reference)
    pairs = pairs[pairs["_score"].notna() & pairs["_score_ref"].notna()]
    rows = []
    for key, group in pairs.groupby(task, dropna=False, sort=True):
        diffs = group.assign(_d=group["_score"] - group["_score_ref"]).groupby("method")["_d"]
        sd, dof = pooled_sd(d.to_numpy() for _, d in diffs)
        if dof:
            n = int(diffs.size().max())
            rows.append([*key, min_detectable_difference(sd, n), sd])
    out = pd.DataFrame(rows, columns=columns)
    for column in POWER_COLUMNS:
        out[column] = out[column].astype("float64")
    return out


def paired_with_reference(seeds: pd.DataFrame, reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """Per (task group, method other than ``reference``) in groups where ``reference`` ran:
    :data:`PAIRED_COLUMNS` from ``seeds`` (as
    :func:`~benchmark.report.selection.seed_results` gives them)."""
    keys = list(GROUP_KEYS)
    columns = [*keys, *PAIRED_COLUMNS]
    if seeds.empty:
        return pd.DataFrame(columns=columns)
    pairs = _pairs(seeds, reference)
    rows = []
    for key, group in pairs.groupby(keys, dropna=False, sort=True):
        result = paired_difference(group["_score"].to_numpy(), group["_score_ref"].to_numpy())
        rows.append([*key, result.n, result.mean, result.ci95, result.p_value])
    out = pd.DataFrame(rows, columns=columns)
    out["vs_random_n"] = out["vs_random_n"].astype("int64")
    for column in PAIRED_COLUMNS[1:]:
        out[column] = out[column].astype("float64")
    return out
