"""The cells and tables the leaderboard is rendered from: a table of (text, sort key)
cells, with the task keys of each row for the HTML page's filters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from benchmark.report.leaderboard import Leaderboard
from benchmark.report.versions import CODE_VERSION

OVERALL = "Overall"
GROUPS = "Task groups (space · dataset · preset · constraint · track)"

Cell = tuple[str, float | str | None]


FILTER_KEYS: tuple[str, ...] = ("space", "dataset", "preset", "constraint", "track")
"""The task keys a reader can filter an HTML table's rows by."""


@dataclass
class Table:
    """A rendered table: headers and rows of (text, sort key) cells; ``None`` sorts last.

    ``row_keys`` (empty, or one dict per row) gives each row's values of
    :data:`FILTER_KEYS` where it belongs to one (the HTML page filters rows by them);
    ``name`` is a short identifier (the HTML table's id); ``rich`` tables' cells may hold
    ``**bold**`` spans (markdown as is, HTML as ``<strong>``).
    """

    title: str
    headers: list[str]
    rows: list[list[Cell]]
    note: str = ""
    section: str = OVERALL
    row_keys: list[dict[str, str]] = field(default_factory=list)
    name: str = ""
    rich: bool = False


def num_cell(value: float, fmt: str) -> Cell:
    """``value`` formatted, with its numeric sort key; NaN shows as an em dash."""
    if value is None or not np.isfinite(value):
        return "—", None
    return format(value, fmt), float(value)


def text_cell(value: object) -> Cell:
    """``value`` as text, sorted as text."""
    return str(value), str(value)


def mixed_versions(lb: Leaderboard) -> bool:
    """Whether ``lb`` keeps records of several code versions apart."""
    return len(lb.aggregate) > 0 and lb.aggregate[CODE_VERSION].nunique() > 1


def key_title(keys: Sequence[str], values: Sequence[object], lb: Leaderboard, sep: str) -> str:
    """The values of a task key joined by ``sep``; the code version only when the
    leaderboard keeps several apart."""
    shown = [
        str(v) for k, v in zip(keys, values, strict=True) if k != CODE_VERSION or mixed_versions(lb)
    ]
    return sep.join(shown)
