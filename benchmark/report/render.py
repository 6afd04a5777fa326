"""The leaderboard as markdown, CSV and a self-contained sortable HTML page."""

from __future__ import annotations

import html
from pathlib import Path

from benchmark.arena.files import atomic_write_text
from benchmark.report.leaderboard import Leaderboard
from benchmark.report.tables import Table, leaderboard_tables, provenance


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
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem;
       color: #222; max-width: 110rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
td:nth-child(-n+2), th:nth-child(-n+2) { text-align: left; }
th { background: #f0f3f7; cursor: pointer; user-select: none; position: sticky; top: 0; }
th:hover { background: #dde5ee; }
th.asc::after { content: " \\25B2"; } th.desc::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafafa; }
p.note { color: #555; font-size: 0.85rem; max-width: 60rem; }
code { background: #f3f3f3; padding: 0 0.2rem; }
"""

_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = !th.classList.contains("asc");
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(asc ? "asc" : "desc");
    function key(row) {
      var cell = row.cells[col], raw = cell.getAttribute("data-sort");
      if (raw === null || raw === "") return null;
      var num = parseFloat(raw);
      return isNaN(num) ? raw.toLowerCase() : num;
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null) return y === null ? 0 : 1;  // missing values always last
      if (y === null) return -1;
      var c = x < y ? -1 : x > y ? 1 : 0;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _inline_markdown(text: str) -> str:
    """Escape ``text`` for HTML, turning `code` and **bold** spans into tags."""
    parts = html.escape(text).split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    bold = out.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(bold))


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = []
        for text, key in row:
            sort = "" if key is None else html.escape(str(key), quote=True)
            cells.append(f'<td data-sort="{sort}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def render_html(lb: Leaderboard) -> str:
    """The leaderboard as one self-contained HTML page (inline CSS and sorting script)."""
    parts = ["<h1>mpqbench leaderboard</h1>"]
    parts += [f"<p>{_inline_markdown(p)}</p>" for p in provenance(lb)]
    parts.append("<p class='note'>Click a column header to sort; click again to reverse.</p>")
    section = None
    for table in leaderboard_tables(lb):
        if table.section != section:
            section = table.section
            parts.append(f"<h2>{html.escape(section)}</h2>")
        parts.append(f"<h3>{html.escape(table.title)}</h3>")
        if table.note:
            parts.append(f"<p class='note'>{html.escape(table.note)}</p>")
        parts.append(_html_table(table) if table.rows else "<p><em>No results.</em></p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>mpqbench leaderboard</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + f"\n<script>{_JS}</script>"
        "\n</body></html>\n"
    )


def write_leaderboard(lb: Leaderboard, out_dir: Path) -> list[Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv`` (the aggregate table, tidy) and a
    self-contained sortable ``leaderboard.html`` into ``out_dir``, each atomically.

    Returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "leaderboard.md": render_markdown(lb),
        "leaderboard.csv": lb.aggregate.to_csv(index=False),
        "leaderboard.html": render_html(lb),
    }
    paths = []
    for name, text in files.items():
        path = out_dir / name
        atomic_write_text(path, text)
        paths.append(path)
    return paths
