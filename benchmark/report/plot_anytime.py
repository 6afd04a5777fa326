"""Anytime curves: the best validation top-1 a search had measured against the training
samples it had been charged, from each trial's ``anytime.json`` (``ctx.anytime``).

Per (space, dataset, preset, constraint) one figure; per method the median over its seeds
of the best-so-far curve with the 25–75% band between seeds (a seed's curve is a step
function of samples, read on a shared log-spaced grid; before a seed's first score it has
no value and does not count). What is scored is the method's own measurement
(``ctx.score``: BN recalibrated, validation split), so the curves show how fast each search
finds what it believes is good, not the retrained accuracy; methods that never score
(OMPQ, HAWQ-V3, uniform) have no curve. This is the view NAS and HPO suites give.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmark.report.figures import method_colors, safe_name, save_all
from benchmark.report.load import run_folders

ANYTIME_KEYS: tuple[str, ...] = ("space", "dataset", "preset", "constraint")
ANYTIME_COLUMNS: tuple[str, ...] = (
    "run_id", "trial_key", "method", *ANYTIME_KEYS, "seed", "event", "samples",
    "search_seconds", "val_top1",
)  # fmt: skip
GRID_POINTS = 60


def read_anytime_events(run_dirs: Sequence[Path]) -> pd.DataFrame:
    """Every trial's anytime events under ``run_dirs`` (:data:`ANYTIME_COLUMNS`), each
    named by its trial's first row (``rows.json``); trials without either are left out."""
    records = []
    with warnings.catch_warnings():  # load_runs has said which paths hold no run
        warnings.simplefilter("ignore")
        runs = run_folders(run_dirs)
    for run in runs:
        trials = (run if run.is_dir() else run.parent) / "trials"
        if not trials.is_dir():
            continue
        for trial in sorted(p for p in trials.iterdir() if p.is_dir()):
            try:
                events = json.loads((trial / "anytime.json").read_text())["events"]
                first = json.loads((trial / "rows.json").read_text())[0]
            except (OSError, ValueError, KeyError, IndexError, TypeError):
                continue
            ident = [first.get(k) for k in ("run_id", "trial_key", "method", *ANYTIME_KEYS)]
            for event in events:
                records.append(
                    [*ident, first.get("seed"), event.get("event"), event.get("samples"),
                     event.get("search_seconds"), event.get("val_top1")]
                )  # fmt: skip
    frame = pd.DataFrame.from_records(records, columns=list(ANYTIME_COLUMNS))
    for column in ("samples", "search_seconds", "val_top1"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def best_so_far(events: pd.DataFrame, grid: np.ndarray) -> np.ndarray:
    """One trial's best measured val top-1 (%) at each of ``grid``'s sample counts (NaN
    before its first measurement)."""
    scored = events.dropna(subset=["val_top1", "samples"]).sort_values("samples")
    out = np.full(len(grid), np.nan)
    if scored.empty:
        return out
    samples = scored["samples"].to_numpy()
    best = np.maximum.accumulate(scored["val_top1"].to_numpy())
    index = np.searchsorted(samples, grid, side="right") - 1
    known = index >= 0
    out[known] = best[index[known]]
    return out


def figures_anytime(events: pd.DataFrame, keep: pd.DataFrame | None = None) -> dict[str, Figure]:
    """``{file name: figure}``, one per task with a scored event; ``keep`` (the board's
    rows) limits them to the trials the board counts (its repeats and versions rules)."""
    if keep is not None and not events.empty:
        counted = set(zip(keep["run_id"], keep["trial_key"], strict=True))
        pairs = zip(events["run_id"], events["trial_key"], strict=True)
        events = events[[pair in counted for pair in pairs]]
    events = events.dropna(subset=["val_top1", "samples"])
    events = events[events["samples"] > 0]
    if events.empty:
        return {}
    colors = method_colors(events["method"].unique())
    figures = {}
    for key, task in events.groupby(list(ANYTIME_KEYS), sort=True):
        low, high = float(task["samples"].min()), float(task["samples"].max())
        grid = np.geomspace(low, max(high, low * 1.01), GRID_POINTS)
        fig = Figure(figsize=(7.5, 4.6))
        ax = fig.subplots()
        for method, mine in task.groupby("method", sort=True):
            curves = np.array([best_so_far(t, grid) for _, t in mine.groupby("trial_key")])
            middle, lower, upper = _quantiles(curves)
            n = len(curves)
            ax.plot(grid, middle, color=colors[method], lw=2, label=f"{method} (n={n})")
            if n > 1:
                ax.fill_between(grid, lower, upper, color=colors[method], alpha=0.18, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel("training samples charged to the search")
        ax.set_ylabel("best validation top-1 measured so far (%)")
        ax.set_title(" · ".join(str(k) for k in key), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        figures[safe_name("anytime", *key) + ".png"] = fig
    return figures


def _quantiles(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, 25% and 75% over the seeds (rows) at each grid point, NaN where no seed has
    a value yet."""
    out = [np.full(curves.shape[1], np.nan) for _ in range(3)]
    for j in range(curves.shape[1]):
        values = curves[:, j][np.isfinite(curves[:, j])]
        if values.size:
            out[0][j], out[1][j], out[2][j] = np.quantile(values, [0.5, 0.25, 0.75])
    return out[0], out[1], out[2]


def plot_anytime(run_dirs: Sequence[Path], out_dir: Path, keep: pd.DataFrame) -> list[Path]:
    """Write :func:`figures_anytime` of the trials under ``run_dirs`` that ``keep`` (the
    board's rows) counts into ``out_dir``; the PNGs written."""
    return save_all(figures_anytime(read_anytime_events(run_dirs), keep), out_dir)
