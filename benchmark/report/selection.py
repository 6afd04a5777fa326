"""Which rows count and which candidate of a seed is reported: the keys of the reports,
track assignment and the validation-based selection.

Units: accuracies (``top1_*``) are percent, ``bitops_ratio_w8a8`` a ratio to W8A8.

* A *task group* is (code version, space, dataset, preset, constraint, track); the code
  version (:mod:`benchmark.report.versions`) keeps records of different code apart.
* Per task group, method and seed the feasible ``ok`` candidate with the best
  **validation** top-1 is selected; ties go to the cheaper candidate (lower BitOPs ratio),
  then to the first by (run_id, trial_key, candidate_index). Test accuracy never drives a
  selection: a selected candidate without a test score is *missing*, never replaced by the
  next one.
* Rows with ``track == "none"`` (a trial that failed before producing candidates, or an
  infeasible candidate that was never trained) carry no accuracy; they are counted on every
  track the method was evaluated on for that (code version, space, dataset, preset), or on
  every track seen there when the method has no evaluated row at all.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.harness.records import normalise
from benchmark.report.versions import CODE_VERSION, with_code_version

TASK_KEYS: tuple[str, ...] = (CODE_VERSION, "space", "dataset", "preset", "constraint", "track")
GROUP_KEYS: tuple[str, ...] = (*TASK_KEYS, "method")
SEED_KEYS: tuple[str, ...] = (*GROUP_KEYS, "seed")
TRIAL_KEYS: tuple[str, ...] = ("run_id", "trial_key")
CANDIDATE_KEYS: tuple[str, ...] = ("run_id", "trial_key", "candidate_index", "track")
EVAL_TRACKS: tuple[str, ...] = ("retrain", "inherit")
SELECTED_COLUMNS: tuple[str, ...] = (
    "top1_test", "top1_val", "bitops", "bitops_ratio_w8a8", "size_bits"
)  # fmt: skip


def prepared(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` typed to the records schema, with its :data:`CODE_VERSION` column."""
    return with_code_version(normalise(frame))


def selectable(frame: pd.DataFrame) -> pd.Series:
    """Rows a selection may pick: ok, feasible, evaluated, with a finite validation top-1."""
    return (
        (frame["status"] == "ok")
        & frame["feasible"]
        & frame["track"].isin(EVAL_TRACKS)
        & np.isfinite(frame["top1_val"])
    )


def eligible(frame: pd.DataFrame) -> pd.Series:
    """Selectable rows that also have a finite test top-1 (what a plot can draw)."""
    return selectable(frame) & np.isfinite(frame["top1_test"])


def assign_tracks(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with ``track == "none"`` copied onto the evaluation tracks they count for.

    The tracks are those the method was evaluated on for that (code version, space,
    dataset, preset); if it has none, every track seen there for any method; if none at
    all, ``retrain``.
    """
    frame = with_code_version(frame)
    if frame.empty:
        return frame.copy()
    evaluated = frame[frame["track"].isin(EVAL_TRACKS)]
    none_rows = frame[~frame["track"].isin(EVAL_TRACKS)]
    if none_rows.empty:
        return frame.copy()
    base = [CODE_VERSION, "space", "dataset", "preset"]
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
    """Per task group, method and seed: the selectable candidate with the best ``top1_val``
    (its ``top1_test`` may be NaN: a missing test score, reported as such).

    Ties on validation accuracy go to the cheaper candidate (lower BitOPs ratio), then to
    the first by (run_id, trial_key, candidate_index); test accuracy is never consulted.
    """
    frame = with_code_version(frame)
    chosen = frame[selectable(frame)]
    order = ["top1_val", "bitops_ratio_w8a8", "run_id", "trial_key", "candidate_index"]
    chosen = chosen.sort_values(
        order, ascending=[False, True, True, True, True], na_position="last", kind="mergesort"
    )
    return chosen.drop_duplicates(list(SEED_KEYS), keep="first").reset_index(drop=True)


def seed_results(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (task group, method, seed) that ``rows`` (track-assigned) hold, with the
    selected candidate's :data:`SELECTED_COLUMNS` (NaN where the seed has none), and
    ``has_result`` (a selected candidate with a test score) / ``missing_test`` (a selected
    candidate without one)."""
    keys = list(SEED_KEYS)
    seeds = rows[keys].drop_duplicates().reset_index(drop=True)
    best = select_per_seed(rows)[[*keys, *SELECTED_COLUMNS]]
    out = seeds.merge(best.assign(_selected=True), on=keys, how="left")
    selected = out.pop("_selected").eq(True)
    out["has_result"] = selected & np.isfinite(out["top1_test"].astype(float))
    out["missing_test"] = selected & ~out["has_result"]
    return out
