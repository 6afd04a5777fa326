"""The leaderboard as one self-contained HTML page.

Nothing on the page is fetched: the stylesheet and the script are inline
(:mod:`benchmark.report.html_assets`) and the figures are inline SVG.
The main table holds every (task group, method) and is filtered by space, dataset,
preset, constraint and track (the figures of one task too); every table sorts by a click
on a header.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

from benchmark.report.cells import FILTER_KEYS, Table
from benchmark.report.figures import safe_name, svg_path
from benchmark.report.html_assets import CSS, JS
from benchmark.report.leaderboard import Leaderboard
from benchmark.report.tables import overall_tables, provenance, results_table

NAV_LABELS = {
    "best": "Best at each budget",
    "results": "Results",
    "ranks": "Average rank",
    "tracks": "Tracks side by side",
    "agreement": "Track agreement (τ)",
    "hypervolume": "Hypervolume",
    "fp": "FP starts",
}
"""The contents line's label of each table (by :attr:`Table.name`)."""


def inline_markdown(text: str) -> str:
    """Escape ``text`` for HTML, turning `code` and **bold** spans into tags."""
    parts = html.escape(text).split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    bold = out.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(bold))


def _is_text(table: Table, col: int) -> bool:
    """Whether column ``col`` holds text (left-aligned): no cell has a numeric sort key."""
    keys = [row[col][1] for row in table.rows]
    return bool(keys) and all(isinstance(k, str) for k in keys if k is not None)


def html_table(table: Table) -> str:
    """``table`` as a sortable ``<table>`` (filterable when its rows carry task keys)."""
    text_cols = {c for c in range(len(table.headers)) if _is_text(table, c)}
    head = "".join(
        f'<th class="{"text" if c in text_cols else "num"}">{html.escape(h)}</th>'
        for c, h in enumerate(table.headers)
    )
    body = []
    for i, row in enumerate(table.rows):
        keys = table.row_keys[i] if table.row_keys else {}
        attrs = "".join(f' data-{k}="{html.escape(v, quote=True)}"' for k, v in keys.items())
        cells = []
        for c, (text, key) in enumerate(row):
            sort = "" if key is None else html.escape(str(key), quote=True)
            kind = "text" if c in text_cols else "num" if key is not None else "num none"
            shown = inline_markdown(text) if table.rich else html.escape(text)
            cells.append(f'<td class="{kind}" data-sort="{sort}">{shown}</td>')
        body.append(f"<tr{attrs}>" + "".join(cells) + "</tr>")
    classes = "sortable filterable" if table.row_keys else "sortable"
    ident = f' id="{html.escape(table.name)}"' if table.name else ""
    shown = f'<p class="shown" id="{table.name}-shown"></p>' if table.row_keys else ""
    return (
        f'{shown}<div class="scroll"><table{ident} class="{classes}"><thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def filter_values(tables: Sequence[Table]) -> dict[str, set[str]]:
    """Per filter key, the values the tables' rows carry (keys without any left out)."""
    values = {
        key: {keys[key] for t in tables for keys in t.row_keys if key in keys}
        for key in FILTER_KEYS
    }
    return {key: found for key, found in values.items() if found}


def _filters(values: dict[str, set[str]]) -> str:
    """One menu per filter key of ``values`` (:func:`filter_values`), listing its values."""
    menus = []
    for key, found in values.items():
        options = "".join(
            f'<option value="{html.escape(v, quote=True)}">{html.escape(v)}</option>'
            for v in sorted(found)
        )
        menus.append(
            f'<label>{key}<select data-filter="{key}" id="filter-{key}">'
            f'<option value="">all</option>{options}</select></label>'
        )
    if not menus:
        return ""
    return (
        '<div class="filters" id="filters"><strong>Filter</strong>' + "".join(menus) + "<button "
        'type="button" id="reset-filters">show all</button><span class="note">Filters apply '
        "to the tables whose rows belong to one task and to the figures of one task; click "
        "a column header to sort.</span>"
        "</div>"
    )


def figure_keys(name: str, values: dict[str, set[str]]) -> dict[str, str]:
    """The filter values a figure belongs to, read from its file name: for each key of
    ``values`` (the values the tables' rows carry), the one value whose file-name form is
    a ``_``-separated part of ``name``; a key with none or several is left out (the
    figure then shows whatever that filter chooses)."""
    parts = set(Path(name).stem.split("_"))
    keys = {}
    for key, options in values.items():
        hits = [v for v in options if safe_name(v) in parts]
        if len(hits) == 1:
            keys[key] = hits[0]
    return keys


def _figures(figures: Sequence[Path], values: dict[str, set[str]]) -> str:
    """Each figure inline: its SVG (written beside the PNG) as markup, else the PNG as
    base64 data; captioned with the PNG's file name (both files are next to the page).
    A figure carries the filter values of its task (``data-space`` ...), so the filter
    menus hide the figures of other tasks as they hide table rows."""
    if not figures:
        return "<p><em>No figures (no feasible candidate with a test score).</em></p>"
    parts = []
    for path in figures:
        name = html.escape(Path(path).name)
        keys = figure_keys(Path(path).name, values)
        attributes = "".join(
            f' data-{key}="{html.escape(value, quote=True)}"' for key, value in keys.items()
        )
        vector = svg_path(Path(path))
        if vector.exists():
            body = inline_svg(vector.read_text(encoding="utf-8"), name)
        else:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            body = f'<img alt="{name}" src="data:image/png;base64,{data}">'
        parts.append(
            f'<figure class="filterable"{attributes}>{body}<figcaption>{name}</figcaption></figure>'
        )
    return "".join(parts)


def inline_svg(text: str, label: str) -> str:
    """An SVG file's markup made fit to sit inside HTML: its XML declaration, doctype,
    metadata and namespace declarations dropped (HTML's parser supplies the namespaces),
    the ids nothing refers to dropped (matplotlib names every group ``axes_1`` ...,
    which would repeat between figures on one page), labelled for screen readers
    (``role="img"``, ``aria-label``)."""
    start = text.find("<svg")
    if start < 0:
        raise ValueError(f"{label}: not an SVG file")
    body = _METADATA.sub("", text[start:])
    referenced = set(_REFERENCE.findall(body))  # markers and clip paths: salted, unique
    body = _ID.sub(lambda m: m[0] if m[1] in referenced else "", body)  # "axes_1" & co.
    opening = body[: body.index(">") + 1]
    tag = _XMLNS.sub("", opening).replace("<svg", f'<svg role="img" aria-label="{label}"', 1)
    return tag + body[len(opening) :]


_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_REFERENCE = re.compile(r'(?:href="#|url\(#)([^")]+)')
_ID = re.compile(r'\s+id="([^"]+)"')
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')


def _section(table: Table) -> str:
    anchor = f' id="section-{table.name}"' if table.name else ""
    parts = [f"<h2{anchor}>{html.escape(table.title)}</h2>"]
    if table.note:
        parts.append(f"<p class='note'>{inline_markdown(table.note)}</p>")
    parts.append(html_table(table) if table.rows else "<p><em>No results.</em></p>")
    return "\n".join(parts)


def _warnings(lines: Sequence[str]) -> str:
    """The board's warnings, folded under one line that counts them."""
    if not lines:
        return ""
    body = "".join(f"<p class='warn'>{inline_markdown(w)}</p>" for w in lines)
    count = f"{len(lines)} warning{'s' if len(lines) > 1 else ''}"
    summary = f"<summary>{count} (code versions, devices)</summary>"
    return f"<details class='warnings'>{summary}{body}</details>"


def render_html(lb: Leaderboard, figures: Sequence[Path] = ()) -> str:
    """The leaderboard as one self-contained HTML page: the best at each budget first,
    the filter menus, the results table, the other overall tables and ``figures`` (PNG
    paths; the SVG beside each is inlined, and the filters reach them); the warnings
    folded."""
    best, *rest = overall_tables(lb)  # the summary leads: who wins at each budget
    tables = [best, results_table(lb), *rest]
    values = filter_values(tables)  # what the menus offer and the figures carry
    lines = provenance(lb)
    warnings = [line for line in lines if line.startswith("**Warning:**")]
    rules = [line for line in lines if line not in warnings]
    contents = " ".join(
        f'<a href="#section-{t.name}">{html.escape(NAV_LABELS.get(t.name, t.title))}</a>'
        for t in tables
        if t.name
    )
    parts = [
        "<h1>mpqbench leaderboard</h1>",
        f"<p>{inline_markdown(rules[0])}</p>" if rules else "",
        _warnings(warnings),
        "<details><summary>How the numbers are made</summary>"
        + "".join(f"<p>{inline_markdown(p)}</p>" for p in rules[1:])
        + "</details>",
        f'<nav>{contents} <a href="#section-figures">Figures</a></nav>',
        _filters(values),
        *(_section(t) for t in tables),
        '<h2 id="section-figures">Figures</h2>',
        _figures(figures, values),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>mpqbench leaderboard</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(p for p in parts if p) + "\n"
        f"<script>{JS}</script>\n</body></html>\n"
    )
