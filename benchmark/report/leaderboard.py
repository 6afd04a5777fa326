"""The leaderboard: every table built from result rows, in one object."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from benchmark.harness.records import normalise
from benchmark.report.aggregate import aggregate, rank_table
from benchmark.report.load import drop_duplicate_rows
from benchmark.report.pareto import hypervolume_table


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
