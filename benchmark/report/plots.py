"""Standard figures of a benchmark's result rows (PNG, written atomically).

* :func:`~benchmark.report.plot_fronts.plot_accuracy_vs_bitops`: every feasible ``ok``
  candidate's test top-1 (%) against its BitOPs / W8A8 BitOPs, each seed's Pareto front
  (the median-hypervolume seed's thick) and the relative BitOPs constraints; one figure
  per (space, dataset, preset, track).
* :func:`~benchmark.report.plot_search_cost.plot_accuracy_vs_search_cost`: per trial and
  track, the test top-1 (%) of the candidate selected on validation accuracy against the
  trial's search device-hours, a panel per constraint, a "no search" column, failed trials
  listed; one figure per (space, dataset, preset).
* :func:`~benchmark.report.plot_anytime.plot_anytime` (from the run folders' trials, not
  the rows): the best validation top-1 a search had measured against the samples charged,
  median and 25–75% band over seeds per method; one figure per (space, dataset, preset,
  constraint).
* :func:`~benchmark.report.plot_cd.plot_critical_difference` (from the aggregate): the
  methods' average ranks over the tasks every method ranked in, retrain track, with the
  Nemenyi critical difference (α 0.05); one figure.

Presets are kept apart because their recipes differ (a smoke run and a paper run on one
axis would mislead); the preset is part of every title and file name, and so is the code
version when records of several are kept apart.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.report.plot_fronts import plot_accuracy_vs_bitops
from benchmark.report.plot_search_cost import plot_accuracy_vs_search_cost


def write_plots(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every standard figure of ``frame`` into ``out_dir``; returns the PNGs written."""
    return [
        *plot_accuracy_vs_bitops(frame, out_dir),
        *plot_accuracy_vs_search_cost(frame, out_dir),
    ]
