"""What the standard figures share: names, colours, labels, the constraint parser, and
writing each figure atomically as a PNG (for markdown and the README) and an SVG beside it
(vector, for papers and the HTML page, which inlines it).

Importing this module selects matplotlib's ``Agg`` backend (files only, no display).
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
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from benchmark.arena.files import atomic_write_bytes  # noqa: E402
from benchmark.report.versions import CODE_VERSION  # noqa: E402

RATIO_LABEL = "BitOPs / W8A8 BitOPs (ratio)"
ACCURACY_LABEL = "top-1 test accuracy (%)"
SEARCH_LABEL = "search device-hours per trial (h)"
TRACK_MARKERS = {"retrain": "o", "inherit": "^"}
SEED_MARKERS = ("o", "s", "D", "v", "^", "<", ">", "p", "h", "*")
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


def version_parts(frame: pd.DataFrame, version: str) -> tuple[str, str]:
    """(title suffix, file-name part) naming ``version`` when ``frame`` holds several code
    versions (kept apart, one figure each); empty otherwise."""
    if CODE_VERSION not in frame.columns or frame[CODE_VERSION].nunique() < 2:
        return "", ""
    return f" · {version}", version


def save_png(fig: Figure, path: Path) -> Path:
    """Render ``fig`` as PNG into ``path`` and as SVG into ``path`` with the suffix
    ``.svg`` (text kept as text), both atomically, and close it; returns the PNG's path."""
    try:
        png, svg = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", dpi=DPI, bbox_inches="tight")
        # ids salted by the file name: unique between the figures one page inlines, and
        # the same file for the same figure (no date either), so a rerun changes nothing
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": Path(path).name}):
            fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    finally:
        plt.close(fig)
    atomic_write_bytes(path, png.getvalue())
    atomic_write_bytes(svg_path(path), svg.getvalue())
    return path


def svg_path(png: Path) -> Path:
    """The SVG written beside the PNG ``png``."""
    return Path(png).with_suffix(".svg")


def save_all(figures: dict[str, Figure], out_dir: Path) -> list[Path]:
    """Every ``{file name: figure}`` saved into ``out_dir`` (created); the paths, in order."""
    if not figures:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [save_png(fig, out_dir / name) for name, fig in figures.items()]
