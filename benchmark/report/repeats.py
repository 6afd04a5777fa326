"""No best-of-k by rerunning: a (method variant, task, seed) counts once.

Rerunning a trial and pooling the reruns would let the validation selection take the best
of k runs while ``n`` stays 1. The leaderboard therefore keeps, per (code version, method,
space, dataset, preset, constraint, seed), only the most recent finished trial (latest
``finished_at`` of its rows, then the later run id) and says how many older repeats it left
out; ``all_repeats`` keeps every repeat instead, as its own entry labelled by its run.
"""

from __future__ import annotations

import pandas as pd

from benchmark.report.selection import TRIAL_KEYS
from benchmark.report.versions import CODE_VERSION, with_code_version

REPEAT_KEYS: tuple[str, ...] = (
    CODE_VERSION, "method", "space", "dataset", "preset", "constraint", "seed"
)  # fmt: skip
"""What identifies a repeat: the same method variant on the same task and seed."""


def _trials(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its repeat keys and when it finished, most recent first."""
    trials = frame.groupby(list(TRIAL_KEYS), sort=False).agg(
        **{key: (key, "first") for key in REPEAT_KEYS}, finished=("finished_at", "max")
    )
    trials = trials.reset_index()
    return trials.sort_values(
        ["finished", "run_id", "trial_key"], ascending=False, kind="mergesort"
    ).reset_index(drop=True)


def latest_repeats(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows of the most recent trial of each (method variant, task, seed), and the
    number of older trials left out."""
    frame = with_code_version(frame)
    if frame.empty:
        return frame, 0
    trials = _trials(frame)
    kept = trials.drop_duplicates(list(REPEAT_KEYS), keep="first")
    index = pd.MultiIndex.from_frame(frame[list(TRIAL_KEYS)])
    keep = index.isin(pd.MultiIndex.from_frame(kept[list(TRIAL_KEYS)]))
    return frame.loc[keep].reset_index(drop=True), len(trials) - len(kept)


def label_repeats(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Every repeat as its own entry: a method with any repeated (task, seed) is named
    ``method (run <run_id>)`` on all its rows, so each run's trials are an entry of their
    own. Returns the rows (repeats inside one run still keep only the latest) and the number
    of repeats shown."""
    frame = with_code_version(frame)
    if frame.empty:
        return frame, 0
    trials = _trials(frame)
    repeated = trials[trials.duplicated(list(REPEAT_KEYS), keep=False)]
    methods = set(repeated["method"])
    labelled = frame["method"].isin(methods)
    named = frame["method"] + " (run " + frame["run_id"] + ")"
    frame = frame.assign(method=frame["method"].where(~labelled, named))
    n_older = len(trials) - len(trials.drop_duplicates(list(REPEAT_KEYS)))
    return latest_repeats(frame)[0], n_older
