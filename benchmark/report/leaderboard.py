"""The leaderboard: every table built from result rows, in one object.

The rows it uses (:attr:`Leaderboard.frame`, what the plots draw too) are those read, less
exact duplicates, with records of different code kept apart
(:mod:`benchmark.report.versions`) and each (method variant, task, seed) counted once
(:mod:`benchmark.report.repeats`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import pandas as pd

from benchmark.harness.records import fp_starting_points, normalise
from benchmark.report.aggregate import aggregate
from benchmark.report.best import best_at_each_budget
from benchmark.report.costs import trial_costs, warn_mixed_shares
from benchmark.report.load import drop_duplicate_rows
from benchmark.report.pareto import hypervolume_table
from benchmark.report.ranks import rank_table
from benchmark.report.repeats import label_repeats, latest_repeats
from benchmark.report.selection import assign_tracks
from benchmark.report.tracks import track_agreement, tracks_side_by_side
from benchmark.report.versions import code_versions, keep_versions_apart


@dataclass
class Leaderboard:
    """Every table of a leaderboard.

    Attributes:
        aggregate: :func:`aggregate` (one row per task group and method).
        ranks: :func:`rank_table` (average rank per track and method).
        hypervolume: :func:`hypervolume_table` (per-seed hypervolumes summarised).
        tracks: :func:`tracks_side_by_side` (``inherit`` next to ``retrain`` per constraint
            and method evaluated on both, with the Kendall τ between them).
        track_agreement: :func:`track_agreement` (Kendall τ per constraint and pooled over
            constraints).
        best: :func:`best_at_each_budget` (per task on the retrain track: each method
            against the best one, paired over seeds, Holm-corrected).
        fp_starts: the shared FP starts the rows were trained from, once each
            (:func:`~benchmark.harness.records.fp_starting_points`).
        frame: the rows the tables are built from.
        run_ids: the runs the numbers come from.
        devices: the distinct ``device`` values seen in the rows.
        code_versions: rows per code version read (``mpqbench <version> @ <git sha>``).
        n_rows: rows used.
        n_repeats_left_out: older trials of a (method, task, seed) that a later one replaced
            (with ``all_repeats``: the repeats shown as entries of their own).
        all_repeats: whether repeats are shown as entries of their own.
        notes: the warnings building it raised (mixed code versions, mixed device shares),
            one line each: the rendered leaderboard repeats them.
    """

    aggregate: pd.DataFrame
    ranks: pd.DataFrame
    hypervolume: pd.DataFrame
    tracks: pd.DataFrame = field(default_factory=pd.DataFrame)
    track_agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    best: pd.DataFrame = field(default_factory=pd.DataFrame)
    fp_starts: pd.DataFrame = field(default_factory=pd.DataFrame)
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)
    run_ids: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    code_versions: dict[str, int] = field(default_factory=dict)
    n_rows: int = 0
    n_repeats_left_out: int = 0
    all_repeats: bool = False
    notes: list[str] = field(default_factory=list)


def build_leaderboard(
    frame: pd.DataFrame, *, all_repeats: bool = False, allow_mixed: bool = False
) -> Leaderboard:
    """All leaderboard tables from result rows (as :func:`load_runs` returns them).

    ``all_repeats`` shows every repeat of a (method, task, seed) as its own entry instead
    of its most recent trial only; ``allow_mixed`` pools records of different code versions
    instead of keeping them apart. Warns (one line each) about mixed code versions and
    task groups that pool different device shares.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = keep_versions_apart(drop_duplicate_rows(normalise(frame)), allow_mixed)
        frame, n_repeats = (label_repeats if all_repeats else latest_repeats)(frame)
        agg = aggregate(frame)
        warn_mixed_shares(trial_costs(assign_tracks(frame)))
    notes = [" ".join(str(w.message).split()) for w in caught]
    for note in notes:  # for the caller too (the CLI prints each as one line)
        warnings.warn(note, stacklevel=2)
    versions = code_versions(frame).value_counts() if len(frame) else pd.Series(dtype=int)
    return Leaderboard(
        aggregate=agg,
        ranks=rank_table(agg),
        hypervolume=hypervolume_table(frame),
        tracks=tracks_side_by_side(agg, frame),
        track_agreement=track_agreement(frame),
        best=best_at_each_budget(frame, agg),
        fp_starts=pd.DataFrame(fp_starting_points(frame)),
        frame=frame,
        run_ids=sorted(v for v in frame["run_id"].unique() if v),
        devices=sorted(v for v in frame["device"].unique() if v),
        code_versions={str(k): int(v) for k, v in sorted(versions.items())},
        n_rows=len(frame),
        n_repeats_left_out=n_repeats,
        all_repeats=all_repeats,
        notes=notes,
    )
