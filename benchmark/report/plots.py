"""Standard figures of a benchmark's result rows (PNG, written atomically).

* :func:`plot_accuracy_vs_bitops`: every feasible ``ok`` candidate's test top-1 (%) against
  its BitOPs / W8A8 BitOPs (a ratio), each method's Pareto front as a step line and the
  relative BitOPs constraints as dashed vertical lines; one figure per
  (space, dataset, preset, track).
* :func:`plot_accuracy_vs_search_cost`: per trial and track, the test top-1 (%) of the
  candidate selected on validation accuracy against the trial's search device-hours;
  one figure per (space, dataset, preset).

Presets are kept apart because their recipes differ (a smoke run and a paper run on one
axis would mislead); the preset is part of every title and file name.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from benchmark.arena.files import atomic_write_bytes  # noqa: E402
from benchmark.harness.records import normalise  # noqa: E402
from benchmark.report.aggregate import EVAL_TRACKS, select_per_seed  # noqa: E402
from benchmark.report.pareto import pareto_front  # noqa: E402

RATIO_LABEL = "BitOPs / W8A8 BitOPs (ratio)"
ACCURACY_LABEL = "top-1 test accuracy (%)"
SEARCH_LABEL = "search device-hours per trial (h)"
TRACK_MARKERS = {"retrain": "o", "inherit": "^"}
DPI = 120

_RELATIVE_BITOPS = re.compile(
    r"^\s*bitops\s*<=\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(x?|%)\s*$", re.IGNORECASE
)


def safe_name(*parts: str) -> str:
    """A file-name stem from ``parts``: letters, digits, ``.``, ``_`` and ``-`` only."""
    text = "_".join(str(p) for p in parts if str(p))
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return text or "plot"


def constraint_ratio(constraint: str) -> float | None:
    """The BitOPs limit of ``constraint`` as a ratio to W8A8, or ``None``.

    ``bitops<=0.5`` (or ``0.5x``, ``50%``) gives 0.5; absolute limits (``bitops<=0.3G``),
    size limits and unreadable strings give ``None``: they have no place on a ratio axis.
    """
    match = _RELATIVE_BITOPS.match(constraint or "")
    if not match:
        return None
    value = float(match[1]) / (100.0 if match[2] == "%" else 1.0)
    return value if math.isfinite(value) and value > 0 else None


def method_colors(methods: Sequence[str]) -> dict[str, tuple]:
    """A stable colour per method (sorted names mapped onto tab10, then tab20)."""
    names = sorted(set(methods))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _save(fig: Figure, path: Path) -> Path:
    """Render ``fig`` as PNG into ``path`` atomically and close it."""
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _candidates(frame: pd.DataFrame) -> pd.DataFrame:
    """Feasible ok evaluated candidates with finite test accuracy and BitOPs ratio."""
    rows = normalise(frame)
    keep = (
        (rows["status"] == "ok")
        & rows["feasible"]
        & rows["track"].isin(EVAL_TRACKS)
        & np.isfinite(rows["top1_test"])
        & np.isfinite(rows["bitops_ratio_w8a8"])
    )
    return rows[keep]


# --------------------------------------------------------------------- accuracy vs BitOPs
def plot_accuracy_vs_bitops(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per (space, dataset, preset, track): test top-1 (%) vs BitOPs / W8A8.

    Returns the files written (none for a frame without feasible ok candidates).
    """
    all_rows = normalise(frame)
    rows = _candidates(all_rows)
    if rows.empty:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = method_colors(rows["method"].unique())
    paths = []
    for (space, dataset, preset, track), group in rows.groupby(
        ["space", "dataset", "preset", "track"], sort=True
    ):
        limits = _constraint_limits(all_rows, space, dataset, preset)
        fig = _bitops_figure(group, colors, limits)
        fig.axes[0].set_title(f"{space} · {dataset} · {preset} preset · {track} track")
        name = safe_name("acc_vs_bitops", space, dataset, preset, track) + ".png"
        paths.append(_save(fig, out_dir / name))
    return paths


def _constraint_limits(rows: pd.DataFrame, space: str, dataset: str, preset: str) -> list:
    """(ratio, text) of the relative BitOPs constraints used for this space and dataset."""
    mask = (rows["space"] == space) & (rows["dataset"] == dataset) & (rows["preset"] == preset)
    limits = {}
    for text in rows.loc[mask, "constraint"].unique():
        ratio = constraint_ratio(text)
        if ratio is not None:
            limits[ratio] = text
    return sorted(limits.items())


def _bitops_figure(group: pd.DataFrame, colors: dict[str, tuple], limits: list) -> Figure:
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for method, points in group.groupby("method", sort=True):
        xy = points[["bitops_ratio_w8a8", "top1_test"]].to_numpy()
        color = colors[method]
        ax.scatter(xy[:, 0], xy[:, 1], color=color, alpha=0.45, s=22, linewidths=0)
        front = pareto_front(xy)
        ax.step(front[:, 0], front[:, 1], where="post", color=color, linewidth=1.8)
        ax.plot(front[:, 0], front[:, 1], "o", color=color, markersize=6, label=str(method))
    for ratio, text in limits:
        ax.axvline(ratio, color="0.35", linestyle="--", linewidth=1.0)
        ax.annotate(
            text,
            (ratio, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color="0.3",
        )
    _finish(ax, RATIO_LABEL, "Dots: every feasible candidate; lines: Pareto fronts.")
    return fig


def _finish(ax: Axes, xlabel: str, caption: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ACCURACY_LABEL)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", frameon=True)
    ax.text(0.0, -0.16, caption, transform=ax.transAxes, fontsize=8, color="0.35", va="top")


# --------------------------------------------------------------- accuracy vs search cost
def selected_per_trial(frame: pd.DataFrame) -> pd.DataFrame:
    """Per trial and track, the candidate with the best validation accuracy (its test top-1
    in %), with the trial's search device-hours (hours, once per trial)."""
    rows = normalise(frame)
    search = rows.groupby(["run_id", "trial_key"])["search_device_hours"].max()
    per_trial = rows.assign(seed=rows["run_id"] + "\x00" + rows["trial_key"])
    best = select_per_seed(per_trial)  # "seed" stands for the trial here: one pick each
    best = best.drop(columns="seed").reset_index(drop=True)
    best["search_device_hours"] = [
        search.get((r, t), np.nan) for r, t in zip(best["run_id"], best["trial_key"], strict=True)
    ]
    return best


def plot_accuracy_vs_search_cost(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per (space, dataset, preset): each trial's val-selected test top-1 (%) vs its
    search device-hours (log axis when the positive values span more than 10×).

    Trials without recorded search hours are left out. Returns the files written.
    """
    best = selected_per_trial(frame)
    best = best[np.isfinite(best["search_device_hours"]) & (best["search_device_hours"] >= 0)]
    if best.empty:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = method_colors(best["method"].unique())
    paths = []
    for (space, dataset, preset), group in best.groupby(["space", "dataset", "preset"]):
        fig, ax = plt.subplots(figsize=(7.5, 5.0))
        for (method, track), points in group.groupby(["method", "track"], sort=True):
            ax.scatter(
                points["search_device_hours"],
                points["top1_test"],
                color=colors[method],
                marker=TRACK_MARKERS.get(track, "s"),
                s=36,
                alpha=0.8,
                label=f"{method} ({track})",
            )
        _set_cost_scale(ax, group["search_device_hours"].to_numpy())
        ax.set_title(f"{space} · {dataset} · {preset} preset: accuracy vs search cost")
        caption = "One point per trial and track: the candidate selected on validation accuracy."
        _finish(ax, SEARCH_LABEL, caption)
        name = safe_name("acc_vs_search_cost", space, dataset, preset) + ".png"
        paths.append(_save(fig, out_dir / name))
    return paths


def _set_cost_scale(ax: Axes, hours: np.ndarray) -> None:
    """Log x axis when positive hours span more than 10× (symlog when some are 0)."""
    positive = hours[hours > 0]
    if positive.size < 2 or positive.max() / positive.min() <= 10:
        return
    if (hours == 0).any():
        ax.set_xscale("symlog", linthresh=float(positive.min()))
    else:
        ax.set_xscale("log")


def write_plots(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every standard figure of ``frame`` into ``out_dir``; returns the PNGs written."""
    return [
        *plot_accuracy_vs_bitops(frame, out_dir),
        *plot_accuracy_vs_search_cost(frame, out_dir),
    ]
