"""Accuracy vs search cost: what each trial's search cost and what it found.

One figure per (code version, space, dataset, preset), one row of panels per constraint.
Per trial and track, the test top-1 (%) of the candidate selected on validation accuracy
against the trial's search device-hours (colour = method, marker = track; a log axis when
the values span more than 10×). Trials whose search processed no training samples (or
took no time) are drawn in a separate "no search" column at the left, not at a log axis's
edge. Points that coincide are labelled with their count (×k). Trials that produced no
point (failed, over budget, no feasible candidate, no test score) are listed under the
figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from benchmark.report.figures import (
    ACCURACY_LABEL,
    SEARCH_LABEL,
    TRACK_MARKERS,
    method_colors,
    safe_name,
    save_all,
    version_parts,
)
from benchmark.report.selection import TRIAL_KEYS, prepared, select_per_seed
from benchmark.report.versions import CODE_VERSION

FIGURE_KEYS = (CODE_VERSION, "space", "dataset", "preset")
MAX_LISTED = 12  # failed trials named under a figure; the rest are counted


def selected_per_trial(frame: pd.DataFrame) -> pd.DataFrame:
    """Per trial and track, the candidate with the best validation accuracy (its test top-1
    in %, NaN when it has none), with the trial's ``search_device_hours`` (hours) and
    ``search_samples`` (once per trial)."""
    rows = prepared(frame)
    per_trial = rows.groupby(list(TRIAL_KEYS)).agg(
        search_device_hours=("search_device_hours", "max"),
        search_samples=("samples_processed", "max"),
    )
    stand_in = rows.assign(seed=rows["run_id"] + "\x00" + rows["trial_key"])
    best = select_per_seed(stand_in)  # "seed" stands for the trial here: one pick each
    best = best.drop(columns=["seed", "search_device_hours"]).reset_index(drop=True)
    seeds = rows[[*TRIAL_KEYS, "seed"]].drop_duplicates(list(TRIAL_KEYS))
    best = best.merge(seeds, on=list(TRIAL_KEYS), how="left")
    return best.merge(per_trial.reset_index(), on=list(TRIAL_KEYS), how="left")


def trials_without_point(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per trial with no drawable point: method, constraint, seed, ``why`` (its
    failure statuses, ``no feasible candidate`` or ``no test score``)."""
    rows = prepared(frame)
    best = selected_per_trial(rows)
    drawn = best[np.isfinite(best["top1_test"])]
    done = pd.MultiIndex.from_frame(drawn[list(TRIAL_KEYS)])
    missing = rows[~pd.MultiIndex.from_frame(rows[list(TRIAL_KEYS)]).isin(done)]
    selected = pd.MultiIndex.from_frame(best[list(TRIAL_KEYS)])
    out = []
    for (run_id, trial_key), trial in missing.groupby(list(TRIAL_KEYS), sort=True):
        bad = sorted(set(trial.loc[trial["status"] != "ok", "status"]))
        if bad:
            why = "/".join(bad)
        elif (run_id, trial_key) in selected:
            why = "no test score"
        else:
            why = "no feasible candidate"
        first = trial.iloc[0]
        out.append(
            {k: first[k] for k in (*FIGURE_KEYS, "method", "constraint", "seed")} | {"why": why}
        )
    columns = [*FIGURE_KEYS, "method", "constraint", "seed", "why"]
    return pd.DataFrame(out, columns=columns)


def no_search(points: pd.DataFrame) -> pd.Series:
    """Trials drawn in the "no search" column: no training samples processed, or no time."""
    return (points["search_samples"] <= 0) | (points["search_device_hours"] <= 0)


def figures_accuracy_vs_search_cost(frame: pd.DataFrame) -> dict[str, Figure]:
    """``{file name: figure}``, one per (code version, space, dataset, preset) with a trial
    that has a drawable point."""
    rows = prepared(frame)
    best = selected_per_trial(rows)
    hours = best["search_device_hours"]
    best = best[np.isfinite(best["top1_test"]) & np.isfinite(hours) & (hours >= 0)]
    if best.empty:
        return {}
    colors = method_colors(best["method"].unique())
    absent = trials_without_point(rows)
    figures = {}
    for key, group in best.groupby(list(FIGURE_KEYS), sort=True):
        version, space, dataset, preset = key
        mine = absent
        for column, value in zip(FIGURE_KEYS, key, strict=True):
            mine = mine[mine[column] == value]
        fig = _figure(group, colors, mine)
        suffix, part = version_parts(best, version)
        fig.suptitle(f"{space} · {dataset} · {preset} preset: accuracy vs search cost{suffix}")
        name = safe_name("acc_vs_search_cost", space, dataset, preset, part) + ".png"
        figures[name] = fig
    return figures


def plot_accuracy_vs_search_cost(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write :func:`figures_accuracy_vs_search_cost` as PNGs into ``out_dir``; the files
    written."""
    return save_all(figures_accuracy_vs_search_cost(frame), out_dir)


def _figure(group: pd.DataFrame, colors: dict[str, tuple], absent: pd.DataFrame) -> Figure:
    constraints = sorted(group["constraint"].unique())
    zero = no_search(group)
    columns = 2 if zero.any() else 1
    fig, axes = plt.subplots(
        len(constraints), columns, figsize=(8.0, 1.0 + 3.2 * len(constraints)), sharey=True,
        sharex="col",
        squeeze=False, width_ratios=[1, 6] if columns == 2 else [1],
    )  # fmt: skip
    methods = sorted(group["method"].unique())
    for row, constraint in enumerate(constraints):
        points = group[group["constraint"] == constraint]
        searched = points[~no_search(points)]
        cost_ax = axes[row, -1]
        _scatter(cost_ax, searched, searched["search_device_hours"].to_numpy(), colors)
        _set_cost_scale(cost_ax, group.loc[~zero, "search_device_hours"].to_numpy())
        cost_ax.set_title(constraint, fontsize=9, loc="left")
        cost_ax.grid(True, alpha=0.3)
        if columns == 2:
            _no_search_column(axes[row, 0], points[no_search(points)], methods, colors)
        axes[row, 0].set_ylabel(ACCURACY_LABEL)
    axes[-1, -1].set_xlabel(SEARCH_LABEL)
    handles, labels = _legend(group, colors)
    axes[0, -1].legend(
        handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=True
    )  # beside the axes: inside it covered points
    fig.text(0.01, 0.0, _caption(group, zero, absent), fontsize=8, color="0.3", va="top")
    return fig


def _scatter(ax: Axes, points: pd.DataFrame, x: np.ndarray, colors: dict[str, tuple]) -> None:
    """Points coloured by method, marked by track; coinciding points labelled ``×k``."""
    for (method, track), mine in points.assign(_x=x).groupby(["method", "track"], sort=True):
        ax.scatter(
            mine["_x"], mine["top1_test"], color=colors[method],
            marker=TRACK_MARKERS.get(track, "s"), s=36, alpha=0.8,
        )  # fmt: skip
    keys = pd.DataFrame({"x": np.round(x, 12), "y": points["top1_test"].round(2).to_numpy()})
    counts = keys.value_counts()
    for (px, py), k in counts[counts > 1].items():
        ax.annotate(f"×{k}", (px, py), xytext=(5, 4), textcoords="offset points", fontsize=8)


def _no_search_column(
    ax: Axes, points: pd.DataFrame, methods: list[str], colors: dict[str, tuple]
) -> None:
    """The "no search" column: one slot per method (spread so methods do not overlap)."""
    slot = {m: i for i, m in enumerate(methods)}
    x = points["method"].map(slot).to_numpy(dtype=float)
    _scatter(ax, points, x, colors)
    ax.set_xlim(-0.8, len(methods) - 0.2)
    ax.set_xticks([(len(methods) - 1) / 2])
    ax.set_xticklabels(["no search"])
    ax.grid(True, axis="y", alpha=0.3)


def _set_cost_scale(ax: Axes, hours: np.ndarray) -> None:
    """Log x axis when the positive hours span more than 10×, labelled in plain numbers
    (0.01, 0.02, 0.05 within three decades, powers of ten beyond) with unlabelled minor
    ticks: matplotlib's default labels every minor tick of a short log axis, and they
    overprinted."""
    positive = hours[hours > 0]
    if positive.size < 2 or positive.max() / positive.min() <= 10:
        return
    ax.set_xscale("log")
    decades = np.log10(positive.max() / positive.min())
    subs = (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=8))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _legend(group: pd.DataFrame, colors: dict[str, tuple]) -> tuple[list, list[str]]:
    handles, labels = [], []
    for method, track in group[["method", "track"]].drop_duplicates().sort_values(
        ["method", "track"]
    ).itertuples(index=False):  # fmt: skip
        marker = TRACK_MARKERS.get(track, "s")
        handles.append(plt.Line2D([], [], color=colors[method], marker=marker, linestyle=""))
        labels.append(f"{method} ({track})")
    return handles, labels


def _caption(group: pd.DataFrame, zero: pd.Series, absent: pd.DataFrame) -> str:
    lines = ["One point per trial and track: the candidate selected on validation accuracy."]
    if zero.any():
        longest = float(group.loc[zero, "search_device_hours"].max()) * 3600
        lines.append(
            f'"no search": trials whose search processed no training samples (at most '
            f"{longest:.3g} s of search)."
        )
    if len(absent):
        named = [
            f"{r.method} {r.constraint} seed {r.seed} ({r.why})"
            for r in absent.head(MAX_LISTED).itertuples(index=False)
        ]
        more = f"; and {len(absent) - MAX_LISTED} more" if len(absent) > MAX_LISTED else ""
        lines.append(f"Not drawn ({len(absent)} trial(s)): " + "; ".join(named) + more)
    return "\n".join(lines)
