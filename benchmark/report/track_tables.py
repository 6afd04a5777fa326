"""The tables of the two evaluation tracks side by side (:mod:`benchmark.report.tracks`):
``inherit`` next to ``retrain`` per constraint, and the Kendall τ between the tracks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.report.cells import Cell, Table, key_title, num_cell, text_cell
from benchmark.report.leaderboard import Leaderboard
from benchmark.report.tracks import ALL_CONSTRAINTS, MIN_CANDIDATES, SPACE_KEYS


def _space(row: pd.Series, lb: Leaderboard) -> str:
    """The space, led by the code version when the leaderboard keeps several apart."""
    keys = SPACE_KEYS[:2]
    return key_title(keys, [row[k] for k in keys], lb, " · ")


def _track_cell(row: pd.Series, track: str) -> Cell:
    """``mean ± 95% CI (n=k/s)`` of one track's selected test top-1 (%)."""
    n, seeds = int(row[f"{track}_n"]), int(row[f"{track}_n_seeds"])
    count = f"n={n}/{seeds}" if seeds != n else f"n={n}"
    mean, half = row[f"{track}_mean"], row[f"{track}_ci95"]
    if n == 0 or not np.isfinite(mean):
        return f"— ({count})", None
    spread = f" ± {half:.2f}" if np.isfinite(half) else ""
    return f"{mean:.2f}{spread} ({count})", float(mean)


def _difference_cell(row: pd.Series) -> Cell:
    n, diff, half = (
        int(row["retrain_minus_inherit_n"]),
        row["retrain_minus_inherit"],
        row["retrain_minus_inherit_ci95"],
    )
    if n == 0 or not np.isfinite(diff):
        return "—", None
    spread = f" ± {half:.2f}" if np.isfinite(half) else ""
    return f"{diff:+.2f}{spread} (n={n})", float(diff)


def _tau_cells(row: pd.Series) -> list[Cell]:
    n = int(row["n_candidates"])
    return [
        num_cell(row["kendall_tau"], "+.2f"),
        num_cell(row["kendall_p"], ".2g"),
        (str(n), float(n)),
    ]


TAU_NOTE = (
    "Kendall's τ-b between the two tracks' test top-1 of the same candidates (each "
    "evaluated on both tracks): +1 = the supernet's (`inherit`) order of the candidates is "
    "the retrained order, 0 = unrelated; p: scipy's two-sided test of τ = 0; — below "
    f"{MIN_CANDIDATES} candidates or when a track's accuracies are all equal."
)


def side_by_side_table(lb: Leaderboard) -> Table:
    """``inherit`` next to ``retrain`` per (space, dataset, preset, constraint, method)."""
    headers = [
        "method", "space", "dataset", "preset", "constraint", "inherit top-1 % (± 95% CI)",
        "retrain top-1 % (± 95% CI)", "retrain − inherit, pp (paired by seed)", "Kendall τ",
        "p (τ)", "candidates",
    ]  # fmt: skip
    rows, row_keys = [], []
    for _, row in lb.tracks.iterrows():
        rows.append(
            [
                text_cell(row["method"]),
                text_cell(_space(row, lb)),
                *(text_cell(row[k]) for k in ("dataset", "preset", "constraint")),
                _track_cell(row, "inherit"),
                _track_cell(row, "retrain"),
                _difference_cell(row),
                *_tau_cells(row),
            ]
        )
        row_keys.append({k: str(row[k]) for k in ("space", "dataset", "preset", "constraint")})
    note = (
        "Methods evaluated on both tracks (the one-shot methods): the validation-selected "
        "candidate's test top-1 on `inherit` (the method's own weights, recalibrated) and on "
        "`retrain` (the shared QAT finetune), mean over seeds ± 95% t-interval half-width; "
        "their difference paired by seed. " + TAU_NOTE + " Here τ pools the seeds' candidates "
        "at that constraint."
    )
    if not rows:
        note = "No method was evaluated on both tracks."
    return Table(
        "Tracks side by side: inherit vs retrain", headers, rows, note, row_keys=row_keys,
        name="tracks",
    )  # fmt: skip


def agreement_table(lb: Leaderboard) -> Table:
    """Kendall τ between the tracks per (space, dataset, preset, method), over constraints."""
    pooled = lb.track_agreement
    pooled = pooled[pooled["constraint"] == ALL_CONSTRAINTS] if len(pooled) else pooled
    headers = ["method", "space", "dataset", "preset", "Kendall τ", "p (τ)", "candidates"]
    rows, row_keys = [], []
    for _, row in pooled.iterrows():
        rows.append(
            [text_cell(row["method"]), text_cell(_space(row, lb))]
            + [text_cell(row[k]) for k in ("dataset", "preset")]
            + _tau_cells(row)
        )
        row_keys.append({k: str(row[k]) for k in ("space", "dataset", "preset")})
    note = (
        TAU_NOTE + " Pooled over seeds and constraints; a candidate offered again (same "
        "seed, policy, architecture and fixed layers) counts once."
    )
    title = "Does the supernet's ranking predict the retrained ranking? (Kendall τ)"
    return Table(title, headers, rows, note, row_keys=row_keys, name="agreement")
