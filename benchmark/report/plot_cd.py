"""The critical-difference diagram of the ``retrain`` track: each method's average rank
over the tasks where every method of the board has a rank, and the Nemenyi critical
difference at α 0.05 (Demšar, JMLR 2006): two methods whose average ranks differ by less
than it are not told apart over those tasks; such groups are joined by a bar.

Within a task (space, dataset, preset, constraint) the methods are ranked by their group
rank (the mean of their per-seed ranks; a seed without a result ranks last), ties averaged.
The critical difference is ``q_α·√(k(k+1)/(6N))`` for k methods and N tasks, ``q_α`` the
studentized range quantile over √2 (scipy). With few tasks it is wide: the diagram then
says so by joining most methods.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import studentized_range

from benchmark.report.figures import save_all
from benchmark.report.selection import TASK_KEYS

ALPHA = 0.05
CD_TRACK = "retrain"


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of average ranks for ``k`` methods over ``n`` tasks
    (rank units); NaN for fewer than 2 methods or no task."""
    if k < 2 or n < 1:
        return float("nan")
    q = float(studentized_range.ppf(1 - alpha, k, 1e6)) / math.sqrt(2)  # df → ∞
    return q * math.sqrt(k * (k + 1) / (6 * n))


def task_ranks(agg: pd.DataFrame) -> pd.DataFrame:
    """Tasks (rows) × methods (columns): each method's rank within the task on the
    ``retrain`` track, over the tasks where every method has a group rank."""
    retrain = agg[(agg["track"] == CD_TRACK) & agg["rank"].notna()]
    if retrain.empty:
        return pd.DataFrame()
    keys = [k for k in TASK_KEYS if k != "track"]
    table = retrain.pivot_table(index=keys, columns="method", values="rank", aggfunc="first")
    complete = table.dropna(axis=0, how="any")
    return complete.rank(axis=1, method="average")


def figure_critical_difference(agg: pd.DataFrame) -> Figure | None:
    """The diagram, or ``None`` with fewer than two methods or no complete task."""
    ranks = task_ranks(agg)
    if ranks.empty or ranks.shape[1] < 2:
        return None
    average = ranks.mean(axis=0).sort_values(kind="mergesort")
    k, n = ranks.shape[1], ranks.shape[0]
    cd = critical_difference(k, n)
    fig = Figure(figsize=(8, 1.6 + 0.32 * k))
    ax = fig.subplots()
    ax.set_xlim(0.4, k + 0.6)
    ax.set_ylim(-(0.4 + 0.32 * ((k + 1) // 2) + 0.5), 1.0)
    ax.axis("off")
    ax.plot([1, k], [0, 0], color="black", lw=1)
    for tick in range(1, k + 1):
        ax.plot([tick, tick], [0, 0.06], color="black", lw=1)
        ax.text(tick, 0.12, str(tick), ha="center", va="bottom", fontsize=9)
    ax.plot([1, 1 + cd], [0.55, 0.55], color="black", lw=1.5)
    ax.text(1 + cd / 2, 0.62, f"CD = {cd:.2f} (Nemenyi, α {ALPHA}, {n} tasks)",
            ha="center", va="bottom", fontsize=8)  # fmt: skip
    half = (k + 1) // 2
    for i, (method, rank) in enumerate(average.items()):
        left = i < half
        level = -(0.4 + 0.32 * (i if left else k - 1 - i))
        edge = 0.45 if left else k + 0.55
        ax.plot([rank, rank, edge], [0, level, level], color="0.3", lw=0.8)
        ax.text(edge + (-0.05 if left else 0.05), level, f"{method} ({rank:.2f})",
                ha="right" if left else "left", va="center", fontsize=8)  # fmt: skip
    _clique_bars(ax, average.to_numpy(), cd)
    ax.set_title(f"Average rank over tasks, {CD_TRACK} track (1 = best)", fontsize=10)
    return fig


def _clique_bars(ax: object, ranks: np.ndarray, cd: float) -> None:
    """A bar under the axis for each maximal run of methods (sorted by rank) whose ranks
    span less than ``cd``."""
    spans = []
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in spans):
            spans.append((i, j))
    for level, (i, j) in enumerate(spans):
        y = -0.12 - 0.08 * level
        ax.plot([ranks[i] - 0.03, ranks[j] + 0.03], [y, y], color="black", lw=3)


def plot_critical_difference(agg: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write the diagram as ``critical_difference_retrain.png`` into ``out_dir`` (nothing
    with fewer than two methods or no task every method ranked in)."""
    fig = figure_critical_difference(agg)
    if fig is None:
        return []
    return save_all({f"critical_difference_{CD_TRACK}.png": fig}, out_dir)
