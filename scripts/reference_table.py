"""The README's reference table, from the reference run's records.

    python scripts/reference_table.py [DIR]          # default results/reference (every run)
    python scripts/reference_table.py --best [DIR]   # the best at each budget, a row a task

``--best`` prints the leaderboard's best-at-each-budget verdicts compactly: per task
(space, constraint; retrain track) the best method's test top-1, the methods not
significantly worse than it (paired over seeds, Holm-corrected), those worse, the task's
minimum detectable difference and the best method's search device-hours per trial.

Without it, prints one markdown table: per method, the retrain track's test top-1 (%) of the
validation-selected candidate as mean ± the half-width of its 95% t-interval over seeds
(n) for each (space, constraint), the paired difference to ``random`` with its p-value
beneath the mean where there are two or more pairs, and the average rank over those task
groups. The numbers are the pooled leaderboard's (``python -m benchmark leaderboard DIR
--allow-mixed``), which has every other column.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import pandas as pd

from benchmark.report.leaderboard import build_leaderboard
from benchmark.report.load import load_runs
from benchmark.report.paired import REFERENCE_METHOD
from benchmark.report.tables import _accuracy_cell  # the leaderboard's cell, not a copy

ROOT = Path(__file__).resolve().parents[1]


def cell(row) -> str:  # noqa: ANN001 - a row of the aggregate table
    """The leaderboard's own accuracy cell (``mean ± CI (n=k/s)``), and beneath it the
    paired difference to ``random`` with its p-value where there are two or more pairs."""
    text, _ = _accuracy_cell(row)
    if row["method"] != REFERENCE_METHOD and row["vs_random_n"] >= 2:
        if not math.isnan(row["vs_random_p"]):
            text += f"<br>Δ {row['vs_random_diff']:+.1f}, p {row['vs_random_p']:.2f}"
    return text


BEST_HEAD = [
    "task (retrain)",
    "best: test top-1 %",
    "not significantly worse",
    "significantly worse",
    "min. detectable Δ, pp",
    "best's search device-h",
]


def best_rows(best: pd.DataFrame) -> list[list[str]]:
    """One row per task of the leaderboard's best-at-each-budget frame: task, best method
    and its top-1 (mean ± 95% CI, n), the tied methods, the worse ones, the task's minimum
    detectable difference (points) and the best method's search device-hours per trial."""
    rows = []
    for (space, constraint), task in best.groupby(["space", "constraint"], sort=True):
        top = task[task["verdict"] == "best"].iloc[0]
        tied = task[task["verdict"] == "tied"].sort_values("top1_test_mean", ascending=False)
        worse = task[task["verdict"] == "worse"].sort_values("top1_test_mean", ascending=False)
        mdd = task["task_mdd"].iloc[0]
        rows.append(
            [
                f"{space} `{constraint}`",
                f"**{top['method']}** {top['top1_test_mean']:.2f} ± "
                f"{top['top1_test_ci95']:.2f} (n={int(top['n'])})",
                ", ".join(tied["method"]) or "—",
                ", ".join(worse["method"]) or "—",
                f"{mdd:.2f}" if math.isfinite(mdd) else "—",
                f"{top['search_device_hours_mean']:.3g}",
            ]
        )
    return rows


def print_table(head: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default=ROOT / "results/reference")
    parser.add_argument("--best", action="store_true", help="the best at each budget")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pooled versions: the leaderboard states them
        board = build_leaderboard(load_runs([Path(args.run_dir)]), allow_mixed=True)
    if args.best:
        print_table(BEST_HEAD, best_rows(board.best))
        return 0
    agg = board.aggregate[board.aggregate["track"] == "retrain"]
    groups = sorted({(s, c) for s, c in zip(agg["space"], agg["constraint"], strict=True)})
    ranks = board.ranks[board.ranks["track"] == "retrain"].set_index("method")
    methods = list(ranks.sort_values("average_rank").index)
    methods += sorted(set(agg["method"]) - set(methods))
    head = ["method", *[f"{s} `{c}`" for s, c in groups], "average rank (± 95% CI)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for method in methods:
        cells = [method]
        for space, constraint in groups:
            pick = agg[
                (agg["method"] == method)
                & (agg["space"] == space)
                & (agg["constraint"] == constraint)
            ]
            cells.append(cell(pick.iloc[0]) if len(pick) else "—")
        if method in ranks.index:
            r = ranks.loc[method]
            cells.append(f"{r['average_rank']:.2f} ± {r['rank_ci95']:.2f}")
        else:
            cells.append("—")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
