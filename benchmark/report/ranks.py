"""Ranks: per (task group, seed), then averaged.

Within a task group and seed, each method that ran that seed is ranked by the test top-1
(%) of its validation-selected candidate: 1 = best, ties share the average rank, and a seed
without a result (no feasible candidate, a failed trial, a missing test score) shares the
last places. A (task group, seed) with fewer than :data:`MIN_RANKED_METHODS` methods ranks
nobody (a lone method's rank 1 says nothing). A method's rank in a task group is the mean
of its per-seed ranks, and its average rank is the mean over the task groups it is ranked in,
with its spread over those groups (std and 95% t-interval). So a failed seed costs rank: it
is never simply left out of the mean.
"""

from __future__ import annotations

import pandas as pd

from benchmark.report.selection import GROUP_KEYS, TASK_KEYS
from benchmark.report.stats import t_half_width

MIN_RANKED_METHODS = 2


def seed_ranks(seeds: pd.DataFrame, min_methods: int = MIN_RANKED_METHODS) -> pd.DataFrame:
    """Per (task group, seed) rank of every method in ``seeds`` (as
    :func:`~benchmark.report.selection.seed_results` gives them).

    Columns: the task keys, seed, method, rank (NaN where fewer than ``min_methods``
    methods ran that seed of that group).
    """
    keys = [*TASK_KEYS, "seed"]
    columns = [*keys, "method", "rank"]
    if seeds.empty:
        return pd.DataFrame(columns=columns)
    score = seeds["top1_test"].astype(float).where(seeds["has_result"])
    scored = seeds[[*keys, "method"]].assign(_score=score)
    grouped = scored.groupby(keys, dropna=False)
    rank = grouped["_score"].rank(ascending=False, method="average", na_option="bottom")
    enough = grouped["method"].transform("nunique") >= min_methods
    return scored.assign(rank=rank.where(enough))[columns]


def group_rank(seeds: pd.DataFrame, min_methods: int = MIN_RANKED_METHODS) -> pd.DataFrame:
    """Per (task group, method): ``rank``, the mean of its per-seed ranks (NaN when it was
    never ranked), and ``n_ranked_seeds``, how many seeds that mean is over."""
    keys = list(GROUP_KEYS)
    ranks = seed_ranks(seeds, min_methods)
    if ranks.empty:
        return pd.DataFrame(columns=[*keys, "rank", "n_ranked_seeds"])
    grouped = ranks.groupby(keys, dropna=False)["rank"]
    out = grouped.agg(rank="mean", n_ranked_seeds="count").reset_index()
    out["n_ranked_seeds"] = out["n_ranked_seeds"].astype("int64")
    return out


def average_rank(agg: pd.DataFrame) -> pd.Series:
    """Mean over task groups of each ranked method's group rank (1 = best), best first.

    Returns a Series indexed by method, named ``average_rank``; methods never ranked are
    left out.
    """
    ranked = agg[agg["rank"].notna()] if len(agg) else agg
    if ranked.empty:
        return pd.Series(dtype="float64", name="average_rank").rename_axis("method")
    result = ranked.groupby("method")["rank"].mean().sort_values(kind="mergesort")
    return result.astype("float64").rename("average_rank").rename_axis("method")


TRACK_ORDER: tuple[str, ...] = ("retrain", "inherit")
"""Tracks in the order the rank tables show them: ``retrain`` (every method competes)
first; ``inherit`` ranks only the methods whose candidates carry their own weights."""


def rank_table(agg: pd.DataFrame) -> pd.DataFrame:
    """Average rank per (track, method): the mean of the method's group ranks over the task
    groups of that track. Ranks are never pooled across tracks (the ``inherit`` groups hold
    only the methods that produce weights, so a rank there is out of fewer competitors).

    Columns: track, method, average_rank, rank_std (the spread of the method's group ranks
    over the groups it was ranked in, ddof=1; NaN for one group), rank_ci95 (half-width of
    the 95% t-interval of the average rank over those groups; NaN for one group), n_groups
    (groups the method was ranked in). Tracks in :data:`TRACK_ORDER` (others after, by
    name); methods never ranked on a track (alone in all its groups and seeds) are listed
    with NaN and 0.
    """
    columns = ["track", "method", "average_rank", "rank_std", "rank_ci95", "n_groups"]
    if agg.empty:
        return pd.DataFrame(columns=columns)
    present = set(agg["track"].unique())
    tracks = [t for t in TRACK_ORDER if t in present] + sorted(present - set(TRACK_ORDER))
    parts = []
    for track in tracks:
        subset = agg[agg["track"] == track]
        ranked = subset[subset["rank"].notna()]
        table = pd.DataFrame({"method": sorted(subset["method"].unique())})
        by_method = ranked.groupby("method")["rank"]
        table["average_rank"] = table["method"].map(by_method.mean())
        table["rank_std"] = table["method"].map(by_method.std(ddof=1)).astype("float64")
        table["rank_ci95"] = table["method"].map(by_method.agg(t_half_width)).astype("float64")
        table["n_groups"] = table["method"].map(ranked["method"].value_counts())
        table["n_groups"] = table["n_groups"].fillna(0).astype("int64")
        table = table.sort_values(["average_rank", "method"], na_position="last", kind="mergesort")
        table.insert(0, "track", track)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)[columns]
