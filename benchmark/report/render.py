"""The leaderboard as markdown and CSV, and the files of a leaderboard (with the HTML page
of :mod:`benchmark.report.html_page`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmark.arena.files import atomic_write_text
from benchmark.report.cards import card_lines
from benchmark.report.exports import export_json, long_table, spreadsheet_safe
from benchmark.report.html_page import render_html
from benchmark.report.leaderboard import Leaderboard
from benchmark.report.tables import leaderboard_tables, provenance


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(lb: Leaderboard) -> str:
    """The leaderboard as a markdown document."""
    lines = ["# mpqbench leaderboard", "", *[f"{p}  " for p in provenance(lb)], ""]
    section = None
    for table in leaderboard_tables(lb):
        if table.section != section:
            section = table.section
            lines += [f"## {section}", ""]
        lines += [f"### {table.title}", ""]
        if table.note:
            lines += [table.note, ""]
        if not table.rows:
            lines += ["_No results._", ""]
            continue
        lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
        lines.append("|" + "|".join("---" for _ in table.headers) + "|")
        for row in table.rows:
            lines.append("| " + " | ".join(_md_cell(text) for text, _ in row) + " |")
        lines.append("")
    lines += card_lines(lb.frame)
    return "\n".join(lines)


def write_leaderboard(lb: Leaderboard, out_dir: Path, figures: Sequence[Path] = ()) -> list[Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv`` (the aggregate table, tidy: one row per
    task group and method), ``leaderboard_long.csv`` and ``leaderboard.json`` (every table
    in long format, :mod:`benchmark.report.exports`) and a self-contained
    ``leaderboard.html`` (sortable, filterable, with ``figures``, PNG files, embedded) into
    ``out_dir``, each atomically.

    Returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "leaderboard.md": render_markdown(lb),
        "leaderboard.csv": spreadsheet_safe(lb.aggregate).to_csv(index=False),
        "leaderboard_long.csv": spreadsheet_safe(long_table(lb)).to_csv(index=False),
        "leaderboard.json": export_json(lb),
        "leaderboard.html": render_html(lb, figures),
    }
    paths = []
    for name, text in files.items():
        path = out_dir / name
        atomic_write_text(path, text)
        paths.append(path)
    return paths
