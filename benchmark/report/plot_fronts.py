"""Accuracy vs BitOPs: each method's fronts over seeds, and each seed's in an appendix.

Two figures per (code version, space, dataset, preset, track), one colour per method
(the same in every figure of a board), the relative BitOPs constraints as dashed vertical
lines. A seed's front is chosen on validation top-1 among its final candidates over every
constraint and drawn at test top-1 (:mod:`benchmark.report.pareto`); its *attainment* at a
cost is the best test top-1 its front reaches at or below that cost.

- ``acc_vs_bitops_*``: per method the median attainment over seeds (a step line, drawn
  where at least half the seeds have a point at or below that cost) and the 25–75% band
  between seeds.
- ``appendix_seed_fronts_*``: every feasible ``ok`` candidate (marker per seed) and each
  seed's front as a thin step line, the median-hypervolume seed's thick.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmark.report.figures import (
    ACCURACY_LABEL,
    RATIO_LABEL,
    SEED_MARKERS,
    constraint_ratio,
    method_colors,
    safe_name,
    save_all,
    version_parts,
)
from benchmark.report.pareto import POOLED_FRONT_KEYS, hypervolume_table, seed_front_candidates
from benchmark.report.selection import prepared
from benchmark.report.versions import CODE_VERSION

FIGURE_KEYS = (CODE_VERSION, "space", "dataset", "preset", "track")


def figures_accuracy_vs_bitops(frame: pd.DataFrame) -> dict[str, Figure]:
    """``{file name: figure}``, two per (code version, space, dataset, preset, track) with
    a feasible ``ok`` candidate that has a test score: the median fronts and the seeds'
    appendix."""
    rows = prepared(frame)
    candidates = seed_front_candidates(rows, POOLED_FRONT_KEYS)
    candidates = candidates[np.isfinite(candidates["top1_test"])]
    if candidates.empty:
        return {}
    hv = hypervolume_table(rows, keys=POOLED_FRONT_KEYS).set_index(list(POOLED_FRONT_KEYS))
    colors = method_colors(candidates["method"].unique())
    figures = {}
    for key, group in candidates.groupby(list(FIGURE_KEYS), sort=True):
        version, space, dataset, preset, track = key
        limits = _constraint_limits(rows, key[:4])
        suffix, part = version_parts(candidates, version)
        title = f"{space} · {dataset} · {preset} preset · {track} track{suffix}"
        median = _median_front_figure(group, colors, limits)
        median.axes[0].set_title(title)
        figures[safe_name("acc_vs_bitops", space, dataset, preset, track, part) + ".png"] = median
        seeds = _bitops_figure(group, colors, limits, hv, key)
        seeds.axes[0].set_title(f"{title} · every seed")
        name = safe_name("appendix_seed_fronts", space, dataset, preset, track, part) + ".png"
        figures[name] = seeds
    return figures


def attainment(front: pd.DataFrame, grid: np.ndarray) -> np.ndarray:
    """A seed's attainment at each cost of ``grid``: the best test top-1 (%) of its front
    points at or below that cost (``-inf`` below its cheapest point)."""
    points = front.sort_values("bitops_ratio_w8a8")
    cost = points["bitops_ratio_w8a8"].to_numpy()
    best = np.maximum.accumulate(points["top1_test"].to_numpy())
    index = np.searchsorted(cost, grid, side="right") - 1
    out = np.full(len(grid), -np.inf)
    out[index >= 0] = best[index[index >= 0]]
    return out


def _median_front_figure(
    group: pd.DataFrame, colors: dict[str, tuple], limits: list[tuple[float, str]]
) -> Figure:
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    fronts = group[group["on_front"]]
    low, high = fronts["bitops_ratio_w8a8"].min(), fronts["bitops_ratio_w8a8"].max()
    right = max([high, *(r for r, _ in limits)]) * 1.05
    grid = np.linspace(low, right, 400)
    for method, mine in fronts.groupby("method", sort=True):
        curves = np.array([attainment(f, grid) for _, f in mine.groupby("seed")])
        n = len(curves)
        with np.errstate(invalid="ignore"):
            middle, lower, upper = (np.quantile(curves, q, axis=0) for q in (0.5, 0.25, 0.75))
        shown = np.isfinite(middle)  # at least half the seeds reached this cost
        color = colors[method]
        ax.plot(grid[shown], middle[shown], color=color, lw=2, drawstyle="steps-post",
                label=f"{method} (median of {n} seed{'s' if n > 1 else ''})")  # fmt: skip
        band = shown & np.isfinite(lower)
        if n > 1 and band.any():
            ax.fill_between(grid, np.where(band, lower, np.nan), np.where(band, upper, np.nan),
                            step="post", color=color, alpha=0.18, lw=0)  # fmt: skip
    _constraint_lines(ax, limits)
    ax.set_xlabel(RATIO_LABEL)
    ax.set_ylabel(ACCURACY_LABEL)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=True)
    caption = (
        "Line: the median over seeds of the best test top-1 each seed's front (chosen on\n"
        "validation) reaches at or below a cost; band: 25–75% of the seeds. Every seed: appendix."
    )
    ax.text(0.0, -0.14, caption, transform=ax.transAxes, fontsize=8, color="0.35", va="top")
    return fig


def _constraint_lines(ax: object, limits: list[tuple[float, str]]) -> None:
    for ratio, text in limits:
        ax.axvline(ratio, color="0.35", linestyle="--", linewidth=1.0)
        ax.annotate(
            text,
            (ratio, 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, 4),
            textcoords="offset points",
            fontsize=8,
            color="0.3",
        )


def plot_accuracy_vs_bitops(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write :func:`figures_accuracy_vs_bitops` as PNGs into ``out_dir``; the files written
    (none for a frame without feasible ok candidates)."""
    return save_all(figures_accuracy_vs_bitops(frame), out_dir)


def _constraint_limits(rows: pd.DataFrame, key: tuple) -> list[tuple[float, str]]:
    """(ratio, text) of the relative BitOPs constraints used in (version, space, dataset,
    preset) ``key``."""
    mask = np.ones(len(rows), dtype=bool)
    for column, value in zip(FIGURE_KEYS[:4], key, strict=True):
        mask &= (rows[column] == value).to_numpy()
    limits = {}
    for text in rows.loc[mask, "constraint"].unique():
        ratio = constraint_ratio(text)
        if ratio is not None:
            limits[ratio] = text
    return sorted(limits.items())


def _bitops_figure(
    group: pd.DataFrame,
    colors: dict[str, tuple],
    limits: list[tuple[float, str]],
    hv: pd.DataFrame,
    key: tuple,
) -> Figure:
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for method, points in group.groupby("method", sort=True):
        color = colors[method]
        seeds = sorted(points["seed"].unique())
        median, n_seeds = _median_seed(hv, (*key, method))
        for i, seed in enumerate(seeds):
            mine = points[points["seed"] == seed]
            marker = SEED_MARKERS[i % len(SEED_MARKERS)]
            ax.scatter(
                mine["bitops_ratio_w8a8"], mine["top1_test"], color=color, marker=marker,
                alpha=0.5, s=24, linewidths=0,
            )  # fmt: skip
            front = mine[mine["on_front"]].sort_values("bitops_ratio_w8a8")
            thick = seed == median
            ax.scatter(
                front["bitops_ratio_w8a8"], front["top1_test"], facecolors="none",
                edgecolors=[color], marker=marker, s=70 if thick else 40,
            )  # fmt: skip
            ax.step(
                front["bitops_ratio_w8a8"], front["top1_test"], where="post", color=color,
                linewidth=2.0 if thick else 0.8, alpha=1.0 if thick else 0.45,
            )  # fmt: skip
        label = f"{method} ({n_seeds} seed(s); thick: seed {median})"
        ax.plot([], [], color=color, linewidth=2.0, label=label)
    _constraint_lines(ax, limits)
    ax.set_xlabel(RATIO_LABEL)
    ax.set_ylabel(ACCURACY_LABEL)
    ax.grid(True, alpha=0.3)
    # beside the axes, not on them: with eight methods a legend inside covers fronts
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=True)
    caption = (
        "Dots: every feasible candidate (marker = seed); rings and lines: each seed's front,\n"
        "chosen on validation top-1 and drawn at test top-1; thick: the median-hypervolume seed."
    )
    ax.text(0.0, -0.14, caption, transform=ax.transAxes, fontsize=8, color="0.35", va="top")
    return fig


def _median_seed(hv: pd.DataFrame, key: tuple) -> tuple[int, int]:
    """(the median-hypervolume seed, the seeds run) of one method's fronts."""
    try:
        return int(hv.loc[key, "median_seed"]), int(hv.loc[key, "n_seeds"])
    except KeyError:
        return -1, 0
