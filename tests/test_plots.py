"""Tests of benchmark.report.plots on hand-made rows: valid PNGs, edge cases do not crash."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from benchmark.harness.records import ResultRow, rows_to_frame
from benchmark.report.figures import constraint_ratio, safe_name
from benchmark.report.plot_fronts import plot_accuracy_vs_bitops
from benchmark.report.plot_search_cost import plot_accuracy_vs_search_cost, selected_per_trial
from benchmark.report.plots import write_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(method: str, seed: int, index: int, ratio: float, acc: float, **kw) -> ResultRow:
    fields = {
        "run_id": "run1",
        "trial_key": f"{method}-{kw.get('constraint', 'bitops<=0.5')}-s{seed}",
        "method": method,
        "space": "resnet20",
        "dataset": "digits",
        "preset": "smoke",
        "seed": seed,
        "constraint": "bitops<=0.5",
        "candidate_index": index,
        "track": "retrain",
        "feasible": True,
        "top1_val": acc,
        "top1_test": acc,
        "bitops_ratio_w8a8": ratio,
        "bitops": ratio * 2.6e9,
        "search_device_hours": 1.0,
    }
    fields.update(kw)
    return ResultRow(**fields)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC, path


@pytest.fixture
def frame() -> pd.DataFrame:
    return rows_to_frame(
        [
            row("A", 0, 0, 0.25, 90.0, search_device_hours=0.01),
            row("A", 0, 1, 0.5, 92.0, search_device_hours=0.01),
            row("A", 1, 0, 0.6, 91.0, constraint="bitops<=0.75", search_device_hours=0.02),
            row("A", 0, 0, 0.25, 88.0, track="inherit", search_device_hours=0.01),
            row("B", 0, 0, 0.4, 89.0, search_device_hours=5.0),  # a single point
            row("C", 0, 0, 0.9, 99.0, feasible=False, track="none"),  # never drawn
            row("D", 0, -1, math.nan, math.nan, status="failed", track="none"),
        ]
    )


def test_accuracy_vs_bitops_one_png_per_track(frame: pd.DataFrame, tmp_path: Path) -> None:
    paths = plot_accuracy_vs_bitops(frame, tmp_path)
    assert sorted(p.name for p in paths) == [
        "acc_vs_bitops_resnet20_digits_smoke_inherit.png",
        "acc_vs_bitops_resnet20_digits_smoke_retrain.png",
        "appendix_seed_fronts_resnet20_digits_smoke_inherit.png",
        "appendix_seed_fronts_resnet20_digits_smoke_retrain.png",
    ]
    for path in paths:
        assert_png(path)


def test_accuracy_vs_search_cost(frame: pd.DataFrame, tmp_path: Path) -> None:
    paths = plot_accuracy_vs_search_cost(frame, tmp_path)
    assert [p.name for p in paths] == ["acc_vs_search_cost_resnet20_digits_smoke.png"]
    assert_png(paths[0])


def test_selected_per_trial_uses_validation(frame: pd.DataFrame) -> None:
    extra = rows_to_frame([row("E", 0, 0, 0.3, 70.0, top1_test=95.0), row("E", 0, 1, 0.3, 80.0)])
    best = selected_per_trial(pd.concat([frame, extra], ignore_index=True))
    e = best[best["method"] == "E"]
    assert len(e) == 1 and e["top1_test"].iloc[0] == 80.0
    a = best[(best["method"] == "A") & (best["track"] == "retrain")]
    assert sorted(a["top1_test"]) == [91.0, 92.0]  # one per trial (two trials of A)


def test_single_point_method_and_write_plots(tmp_path: Path) -> None:
    one = rows_to_frame([row("solo", 0, 0, 0.3, 80.0, search_device_hours=0.0)])
    paths = write_plots(one, tmp_path / "plots")
    assert len(paths) == 3  # the median front, its seeds' appendix, the search cost
    for path in paths:
        assert_png(path)


def test_empty_and_all_nan_frames_give_no_plots(tmp_path: Path) -> None:
    empty = rows_to_frame([])
    assert write_plots(empty, tmp_path) == []
    nan = rows_to_frame([row("A", 0, 0, math.nan, math.nan, search_device_hours=math.nan)])
    assert write_plots(nan, tmp_path) == []
    assert not list(tmp_path.iterdir())


def test_constraint_ratio_parsing() -> None:
    assert constraint_ratio("bitops<=0.5") == 0.5
    assert constraint_ratio(" BitOPs <= 0.25x ") == 0.25
    assert constraint_ratio("bitops<=50%") == 0.5
    assert constraint_ratio("bitops<=0.3G") is None  # absolute: not on a ratio axis
    assert constraint_ratio("size<=0.25") is None
    assert constraint_ratio("") is None


def test_safe_name() -> None:
    assert (
        safe_name("acc", "mbv3-cifar", "cifar10", "a/b c<=0.5")
        == "acc_mbv3-cifar_cifar10_a-b-c-0.5"
    )
    assert safe_name("../..") == "plot"


# ------------------------------------------------------------ what the figures show
def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [t.get_text() for t in ax.texts]
        parts += [ax.get_title(loc="left"), ax.get_title()]
        parts += [label.get_text() for label in ax.get_xticklabels()]
    return "\n".join(parts)


def test_search_cost_figure_panels_counts_failures_and_no_search(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from benchmark.report.plot_search_cost import figures_accuracy_vs_search_cost

    frame = rows_to_frame(
        [
            # two trials of A at exactly the same cost and accuracy: one point, labelled ×2
            row("A", 0, 0, 0.4, 80.0, search_device_hours=0.1, samples_processed=100),
            row("A", 1, 0, 0.4, 80.0, search_device_hours=0.1, samples_processed=100),
            row("A", 0, 0, 0.2, 70.0, constraint="bitops<=0.25", search_device_hours=0.3,
                samples_processed=100),
            # no search at all: the "no search" column, not a log axis's far left
            row("U", 0, 0, 0.4, 75.0, search_device_hours=1e-8, samples_processed=0),
            # no point: listed under the figure
            row("F", 2, -1, math.nan, math.nan, status="over_budget", track="none"),
        ]
    )  # fmt: skip
    (fig,) = figures_accuracy_vs_search_cost(frame).values()
    try:
        text = _texts(fig)
        assert "bitops<=0.25" in text and "bitops<=0.5" in text  # a panel per constraint
        assert len(fig.axes) == 4  # 2 constraints × ("no search", cost)
        assert "×2" in text
        assert "no search" in text
        assert "F bitops<=0.5 seed 2 (over_budget)" in text
        no_search_axes = [ax for ax in fig.axes if "no search" in _tick_labels(ax)]
        drawn = [o for ax in no_search_axes for o in ax.collections if len(o.get_offsets())]
        assert len(drawn) == 1 and list(drawn[0].get_offsets()[0]) == [1.0, 75.0]  # U's slot
    finally:
        plt.close(fig)


def _tick_labels(ax) -> list[str]:
    return [label.get_text() for label in ax.get_xticklabels()]


def test_bitops_figure_draws_each_seeds_front() -> None:
    import matplotlib.pyplot as plt

    from benchmark.report.plot_fronts import figures_accuracy_vs_bitops

    frame = rows_to_frame(
        [
            row("A", 0, 0, 0.25, 90.0), row("A", 0, 1, 0.5, 92.0),
            row("A", 1, 0, 0.25, 88.0), row("A", 1, 1, 0.5, 91.0),
            row("A", 2, 0, 0.3, 85.0),
        ]
    )  # fmt: skip
    figures = figures_accuracy_vs_bitops(frame)
    median, seeds = (figures[f"{k}_resnet20_digits_smoke_retrain.png"]
                     for k in ("acc_vs_bitops", "appendix_seed_fronts"))  # fmt: skip
    try:
        ax = seeds.axes[0]  # the appendix: every seed's front
        fronts = [line for line in ax.lines if line.get_drawstyle().startswith("steps")]
        assert len(fronts) == 3  # one per seed, not one pooled front
        widths = sorted(line.get_linewidth() for line in fronts)
        assert widths == [0.8, 0.8, 2.0]  # the median-hypervolume seed is drawn thick
        assert "A (3 seed(s); thick: seed 1)" in [t.get_text() for t in ax.get_legend().texts]
        ax = median.axes[0]  # the main figure: one median line per method, its band
        (line,) = [ln for ln in ax.lines if ln.get_drawstyle().startswith("steps")]
        assert "A (median of 3 seeds)" in [t.get_text() for t in ax.get_legend().texts]
        y = line.get_ydata()
        # the median of the seeds' attainments: 88 from 0.25 (90, 88, none yet), still 88
        # from 0.3 (90, 88, 85), 91 from 0.5 (92, 91, 85)
        assert y[0] == 88.0 and y[-1] == 91.0 and list(y) == sorted(y)
        assert ax.collections  # the 25–75% band
    finally:
        plt.close(median)
        plt.close(seeds)


def test_attainment_is_the_best_front_point_at_or_below_each_cost() -> None:
    import numpy as np

    from benchmark.report.plot_fronts import attainment

    front = pd.DataFrame({"bitops_ratio_w8a8": [0.5, 0.2, 0.3], "top1_test": [92.0, 88.0, 90.0]})
    got = attainment(front, np.array([0.1, 0.2, 0.25, 0.3, 0.49, 0.5, 0.9]))
    assert got.tolist() == [-np.inf, 88.0, 88.0, 90.0, 90.0, 92.0, 92.0]


@pytest.mark.parametrize("hours", [(0.011, 0.15), (0.003, 0.05, 0.4), (1e-4, 2.0)])
def test_search_cost_log_axis_is_labelled_readably(hours: tuple[float, ...]) -> None:
    import matplotlib.pyplot as plt

    from benchmark.report.plot_search_cost import figures_accuracy_vs_search_cost

    frame = rows_to_frame(
        [
            row("A", seed, 0, 0.4, 80.0 + seed, search_device_hours=h, samples_processed=100)
            for seed, h in enumerate(hours)
        ]
    )
    (fig,) = figures_accuracy_vs_search_cost(frame).values()
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (ax,) = fig.axes
        assert ax.get_xscale() == "log"
        labels = [t for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
                  if t.get_visible() and t.get_text()
                  and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]  # fmt: skip
        assert len(labels) >= 3  # a short log axis has more than its powers of ten
        assert not any("^" in t.get_text() for t in labels)  # plain numbers: 0.02, not 2×10⁻²
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False)), [
            t.get_text() for t in labels
        ]
    finally:
        plt.close(fig)


def test_a_figure_is_written_as_png_and_a_deterministic_svg(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from benchmark.report.figures import save_png, svg_path

    def draw() -> object:
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], marker="o")
        ax.set_title("a figure")
        return fig

    first = save_png(draw(), tmp_path / "a.png")
    text = svg_path(first).read_text()
    save_png(draw(), tmp_path / "a.png")
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert svg_path(first).read_text() == text  # same figure, same file: reruns change nothing
    assert "<text" in text or "a figure" in text  # text kept as text
    save_png(draw(), tmp_path / "b.png")
    refs = lambda t: set(re.findall(r'(?:href="#|url\(#)([^")]+)', t))  # noqa: E731
    b_text = svg_path(tmp_path / "b.png").read_text()
    assert refs(text) and not refs(text) & refs(b_text)  # inlined on one page: no clash
