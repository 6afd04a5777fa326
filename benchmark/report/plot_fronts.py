"""Accuracy vs BitOPs: every final candidate and each seed's Pareto front.

One figure per (code version, space, dataset, preset, track). Per method (one colour):
every feasible ``ok`` candidate's test top-1 (%) against its BitOPs / W8A8 BitOPs, with a
marker per seed; each seed's front (chosen on validation top-1, drawn at test top-1, as in
:mod:`benchmark.report.pareto`) as a thin step line, the median-hypervolume seed's front
thick; the relative BitOPs constraints as dashed vertical lines.
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
from benchmark.report.pareto import FRONT_KEYS, hypervolume_table, seed_front_candidates
from benchmark.report.selection import prepared
from benchmark.report.versions import CODE_VERSION

FIGURE_KEYS = (CODE_VERSION, "space", "dataset", "preset", "track")


def figures_accuracy_vs_bitops(frame: pd.DataFrame) -> dict[str, Figure]:
    """``{file name: figure}``, one per (code version, space, dataset, preset, track) with
    a feasible ``ok`` candidate that has a test score."""
    rows = prepared(frame)
    candidates = seed_front_candidates(rows)
    candidates = candidates[np.isfinite(candidates["top1_test"])]
    if candidates.empty:
        return {}
    hv = hypervolume_table(rows).set_index(list(FRONT_KEYS))
    colors = method_colors(candidates["method"].unique())
    figures = {}
    for key, group in candidates.groupby(list(FIGURE_KEYS), sort=True):
        version, space, dataset, preset, track = key
        limits = _constraint_limits(rows, key[:4])
        fig = _bitops_figure(group, colors, limits, hv, key)
        suffix, part = version_parts(candidates, version)
        fig.axes[0].set_title(f"{space} · {dataset} · {preset} preset · {track} track{suffix}")
        name = safe_name("acc_vs_bitops", space, dataset, preset, track, part) + ".png"
        figures[name] = fig
    return figures


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
