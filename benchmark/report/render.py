"""The leaderboard as markdown, CSV and a self-contained sortable HTML page."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.arena.files import atomic_write_text
from benchmark.report.aggregate import TASK_KEYS
from benchmark.report.leaderboard import Leaderboard
from benchmark.report.pareto import DEFAULT_REF, FRONT_KEYS


@dataclass
class Table:
    """A rendered table: headers and rows of (text, sort key) cells; ``None`` sorts last."""

    title: str
    headers: list[str]
    rows: list[list[tuple[str, float | str | None]]]
    note: str = ""


def _num(value: float, fmt: str) -> tuple[str, float | None]:
    """``value`` formatted, with its numeric sort key; NaN shows as an em dash."""
    if value is None or not np.isfinite(value):
        return "—", None
    return format(value, fmt), float(value)


def _accuracy_cell(row: pd.Series) -> tuple[str, float | None]:
    """``mean ± std (n=k/s)``: k seeds with a result of s seeds run."""
    n, seeds = int(row["n"]), int(row["n_seeds"])
    count = f"(n={n}/{seeds})" if seeds != n else f"(n={n})"
    mean, std = row["top1_test_mean"], row["top1_test_std"]
    if n == 0 or not np.isfinite(mean):
        return f"— {count}", None
    spread = f" ± {std:.2f}" if np.isfinite(std) else ""
    return f"{mean:.2f}{spread} {count}", float(mean)


def _failure_cell(row: pd.Series) -> tuple[str, float]:
    n = int(row["n_failures"])
    text = f"{n} ({row['failure_statuses']})" if n else "0"
    return text, float(n)


def _group_table(key: tuple, group: pd.DataFrame) -> Table:
    """One task group (space, dataset, preset, constraint, track): a row per method."""
    headers = [
        "rank", "method", "top-1 test % (mean ± std)", "best test %", "val %",
        "BitOPs / W8A8", "GBitOPs", "size KiB", "search h / trial", "search samples / trial",
        "finetune h / trial", "feasible", "infeasible", "failures",
    ]  # fmt: skip
    rows = []
    for _, row in group.iterrows():
        rows.append(
            [
                _num(row["rank"], "g"),
                (str(row["method"]), str(row["method"])),
                _accuracy_cell(row),
                _num(row["top1_test_best"], ".2f"),
                _num(row["top1_val_mean"], ".2f"),
                _num(row["bitops_ratio_w8a8_mean"], ".3f"),
                _num(row["bitops_mean"] / 1e9, ".4g"),
                _num(row["size_bits_mean"] / 8 / 1024, ".1f"),
                _num(row["search_device_hours_mean"], ".3g"),
                _num(row["search_samples_mean"], ".3g"),
                _num(row["finetune_device_hours_mean"], ".3g"),
                (str(int(row["n_feasible"])), float(row["n_feasible"])),
                (str(int(row["n_infeasible"])), float(row["n_infeasible"])),
                _failure_cell(row),
            ]
        )
    return Table(" · ".join(str(k) for k in key), headers, rows)


def _rank_overview(lb: Leaderboard) -> Table:
    """Average rank per method: over every group, then per track."""
    ranks = lb.ranks
    tracks = [t for t in sorted(ranks["track"].unique()) if t != "all"] if len(ranks) else []
    headers = ["method", "average rank (all groups)", *[f"avg rank {t}" for t in tracks]]
    headers += ["groups ranked", "seeds with result / run", "failures"]
    overall = ranks[ranks["track"] == "all"] if len(ranks) else ranks
    rows = []
    for _, row in overall.iterrows():
        method = row["method"]
        mine = lb.aggregate[lb.aggregate["method"] == method]
        cells = [(str(method), str(method)), _num(row["average_rank"], ".2f")]
        for track in tracks:
            hit = ranks[(ranks["track"] == track) & (ranks["method"] == method)]
            cells.append(_num(hit["average_rank"].iloc[0], ".2f") if len(hit) else ("—", None))
        n_ok, n_all = int(mine["n"].sum()), int(mine["n_seeds"].sum())
        cells += [
            (str(int(row["n_groups"])), float(row["n_groups"])),
            (f"{n_ok} / {n_all}", float(n_ok)),
            (str(int(mine["n_failures"].sum())), float(mine["n_failures"].sum())),
        ]
        rows.append(cells)
    note = (
        "Rank 1 = best mean test top-1 in a task group (space, dataset, preset, constraint, "
        "track); ties averaged; a method with no feasible result shares the last places; "
        "groups with a single method are not ranked. "
        "Seeds and failures are summed over task groups (a failed trial counts once per track)."
    )
    return Table("Average rank", headers, rows, note)


def _hypervolume_overview(lb: Leaderboard) -> Table:
    """Hypervolume per method (rows) and (space, dataset, preset, track) (columns)."""
    hv = lb.hypervolume
    if hv.empty:
        return Table("Hypervolume", ["method"], [], "No feasible candidates.")
    hv = hv.assign(column=hv[list(FRONT_KEYS[:-1])].astype(str).agg("/".join, axis=1))
    columns = sorted(hv["column"].unique())
    rows = []
    for method in lb.ranks.loc[lb.ranks["track"] == "all", "method"]:
        cells: list[tuple[str, float | str | None]] = [(str(method), str(method))]
        for column in columns:
            hit = hv[(hv["method"] == method) & (hv["column"] == column)]
            if hit.empty:
                cells.append(("—", None))
            else:
                value, n_front = hit["hypervolume"].iloc[0], int(hit["n_front"].iloc[0])
                text, key = _num(value, ".2f")
                cells.append((f"{text} ({n_front} on front / {int(hit['n_points'].iloc[0])})", key))
        rows.append(cells)
    note = (
        "Area dominated by each method's front of test top-1 (%) vs BitOPs / W8A8 BitOPs, "
        f"bounded by the reference point (cost {DEFAULT_REF[0]:g}, top-1 {DEFAULT_REF[1]:g} %); "
        "unit ratio × %, 100 is the unreachable maximum. All feasible ok candidates, pooled "
        "over constraints and seeds. Columns: space/dataset/preset/track."
    )
    return Table("Hypervolume (accuracy vs BitOPs)", ["method", *columns], rows, note)


def leaderboard_tables(lb: Leaderboard) -> list[Table]:
    """The overall tables, then one table per task group."""
    tables = [_rank_overview(lb), _hypervolume_overview(lb)]
    if lb.aggregate.empty:
        return tables
    for key, group in lb.aggregate.groupby(list(TASK_KEYS), sort=True):
        tables.append(_group_table(key, group.sort_values("rank", kind="mergesort")))
    return tables


def _provenance(lb: Leaderboard) -> list[str]:
    runs = ", ".join(f"`{r}`" for r in lb.run_ids) or "(none)"
    devices = ", ".join(f"`{d}`" for d in lb.devices) or "(not recorded)"
    return [
        f"Numbers from {lb.n_rows} result rows of {len(lb.run_ids)} run(s): {runs}.",
        f"Devices seen (`device` column): {devices}.",
        "Per method, task and seed the feasible `ok` candidate with the best **validation** "
        "top-1 is selected; its **test** top-1 (%) is reported as mean ± std over seeds "
        "(std with ddof=1, none for one seed; n = seeds with a result, /s = seeds run). "
        "Costs are those of the selected candidates; device-hours are per trial.",
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(lb: Leaderboard) -> str:
    """The leaderboard as a markdown document."""
    lines = ["# mpqbench leaderboard", "", *[f"{p}  " for p in _provenance(lb)], ""]
    tables = leaderboard_tables(lb)
    for i, table in enumerate(tables):
        if i == 0:
            lines += ["## Overall", ""]
        if i == 2:
            lines += ["## Task groups (space · dataset · preset · constraint · track)", ""]
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
    parts += [f"<p>{_inline_markdown(p)}</p>" for p in _provenance(lb)]
    parts.append("<p class='note'>Click a column header to sort; click again to reverse.</p>")
    for i, table in enumerate(leaderboard_tables(lb)):
        if i == 0:
            parts.append("<h2>Overall</h2>")
        if i == 2:
            parts.append("<h2>Task groups (space · dataset · preset · constraint · track)</h2>")
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
