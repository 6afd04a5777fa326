"""The two evaluation tracks side by side, for methods evaluated on both (the one-shot
methods: OQAT, QFA).

* **Side by side** (:func:`tracks_side_by_side`): per (code version, space, dataset, preset,
  constraint, method), the ``inherit`` and ``retrain`` test top-1 (%) of the
  validation-selected candidate (mean, 95% t-interval half-width, n, from
  :func:`~benchmark.report.aggregate.aggregate`), and ``retrain − inherit`` paired by
  seed (percentage points, :func:`~benchmark.report.stats.paired_difference`).
* **Rank agreement** (:func:`track_agreement`): Kendall's τ-b (``scipy.stats.kendalltau``)
  between the two tracks' test top-1 of the *same* candidates, a candidate being a
  (run_id, trial_key, candidate_index) evaluated ``ok`` and feasible on both tracks with a
  test score on each. Does the supernet's ranking (``inherit``) predict the retrained one?
  Pooled over seeds per constraint, and over seeds and constraints (``constraint`` =
  :data:`ALL_CONSTRAINTS`); a candidate offered again (same seed, policy, architecture and
  fixed layers, e.g. under two constraints) counts once in the pooled value. τ is NaN
  below :data:`MIN_CANDIDATES` candidates or when a track's accuracies are all equal.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.report.selection import prepared, seed_results, selectable
from benchmark.report.stats import paired_difference
from benchmark.report.versions import CODE_VERSION

ALL_CONSTRAINTS = "all constraints"
MIN_CANDIDATES = 3
TRACKS = ("inherit", "retrain")
SPACE_KEYS: tuple[str, ...] = (CODE_VERSION, "space", "dataset", "preset")
ROW_KEYS: tuple[str, ...] = (*SPACE_KEYS, "constraint", "method")
AGREEMENT_COLUMNS: tuple[str, ...] = (*ROW_KEYS, "n_candidates", "kendall_tau", "kendall_p")
SIDE_BY_SIDE_COLUMNS: tuple[str, ...] = (
    *ROW_KEYS,
    *(f"{t}_{c}" for t in TRACKS for c in ("mean", "ci95", "n", "n_seeds")),
    "retrain_minus_inherit",  # percentage points, mean over seeds with both tracks
    "retrain_minus_inherit_ci95",  # percentage points, 95% t-interval half-width
    "retrain_minus_inherit_n",  # seeds paired
    "n_candidates",  # candidates on both tracks at this constraint (pooled over seeds)
    "kendall_tau",
    "kendall_p",
)


def candidate_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate evaluated on both tracks: :data:`ROW_KEYS`, seed, the
    candidate's identity (run_id, trial_key, candidate_index, policy, arch, fixed) and
    ``top1_inherit`` / ``top1_retrain`` (test top-1, %)."""
    frame = prepared(frame)
    ident = ["run_id", "trial_key", "candidate_index"]
    keep = [*ROW_KEYS, "seed", *ident, "policy", "arch", "fixed", "top1_test"]
    ok = frame[selectable(frame) & np.isfinite(frame["top1_test"])]
    parts = [
        ok.loc[ok["track"] == t, keep].rename(columns={"top1_test": f"top1_{t}"}) for t in TRACKS
    ]
    inherit, retrain = parts
    return inherit.merge(retrain[[*ident, "top1_retrain"]], on=ident, how="inner")


def _tau(pairs: pd.DataFrame) -> tuple[int, float, float]:
    n = len(pairs)
    if n < MIN_CANDIDATES:
        return n, float("nan"), float("nan")
    with warnings.catch_warnings():  # constant input: scipy warns and returns NaN
        warnings.simplefilter("ignore")
        result = stats.kendalltau(pairs["top1_inherit"], pairs["top1_retrain"])
    return n, float(result.statistic), float(result.pvalue)


def track_agreement(frame: pd.DataFrame) -> pd.DataFrame:
    """Kendall's τ between the tracks per (space keys, constraint, method), and pooled over
    constraints with ``constraint`` = :data:`ALL_CONSTRAINTS`. Columns:
    :data:`AGREEMENT_COLUMNS`."""
    pairs = candidate_pairs(frame)
    rows = []
    for key, group in pairs.groupby(list(ROW_KEYS), sort=True):
        rows.append([*key, *_tau(group)])
    pooled_keys = [*SPACE_KEYS, "method"]
    unique = pairs.drop_duplicates([*pooled_keys, "seed", "policy", "arch", "fixed"])
    for key, group in unique.groupby(pooled_keys, sort=True):
        rows.append([*key[:-1], ALL_CONSTRAINTS, key[-1], *_tau(group)])
    out = pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))
    out["n_candidates"] = out["n_candidates"].astype("int64")
    return out


def tracks_side_by_side(agg: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Per (space keys, constraint, method) evaluated on both tracks: each track's test
    top-1 summary from ``agg`` (:func:`~benchmark.report.aggregate.aggregate`), the paired
    ``retrain − inherit`` difference over seeds, and the per-constraint Kendall τ.
    Columns: :data:`SIDE_BY_SIDE_COLUMNS`."""
    keys = list(ROW_KEYS)
    if agg.empty:
        return pd.DataFrame(columns=list(SIDE_BY_SIDE_COLUMNS))
    wide = None
    for track in TRACKS:
        part = agg.loc[
            agg["track"] == track, [*keys, "top1_test_mean", "top1_test_ci95", "n", "n_seeds"]
        ]
        part = part.rename(
            columns={
                "top1_test_mean": f"{track}_mean",
                "top1_test_ci95": f"{track}_ci95",
                "n": f"{track}_n",
                "n_seeds": f"{track}_n_seeds",
            }
        )
        wide = part if wide is None else wide.merge(part, on=keys, how="inner")
    if wide.empty:
        return pd.DataFrame(columns=list(SIDE_BY_SIDE_COLUMNS))
    out = wide.merge(_paired_tracks(frame), on=keys, how="left")
    out = out.merge(track_agreement(frame), on=keys, how="left")
    out["retrain_minus_inherit_n"] = out["retrain_minus_inherit_n"].fillna(0).astype("int64")
    out["n_candidates"] = out["n_candidates"].fillna(0).astype("int64")
    return (
        out[list(SIDE_BY_SIDE_COLUMNS)].sort_values(keys, kind="mergesort").reset_index(drop=True)
    )


def _paired_tracks(frame: pd.DataFrame) -> pd.DataFrame:
    """``retrain − inherit`` of the validation-selected candidates' test top-1, paired by
    seed, per :data:`ROW_KEYS`."""
    keys = list(ROW_KEYS)
    columns = [
        *keys,
        "retrain_minus_inherit",
        "retrain_minus_inherit_ci95",
        "retrain_minus_inherit_n",
    ]
    frame = prepared(frame)
    rows = frame[frame["track"].isin(TRACKS)]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    seeds = seed_results(rows)
    seeds = seeds.assign(_score=seeds["top1_test"].astype(float).where(seeds["has_result"]))
    inherit, retrain = (seeds.loc[seeds["track"] == t, [*keys, "seed", "_score"]] for t in TRACKS)
    both = inherit.merge(retrain, on=[*keys, "seed"], suffixes=("_inherit", "_retrain"))
    out = []
    for key, group in both.groupby(keys, sort=True):
        result = paired_difference(group["_score_retrain"], group["_score_inherit"])
        out.append([*key, result.mean, result.ci95, result.n])
    return pd.DataFrame(out, columns=columns)
