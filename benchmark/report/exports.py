"""The leaderboard's tables as long-format exports: one row per (table, task, method,
metric), ranks, the tracks' τ and hypervolume included.

``leaderboard_long.csv`` and ``leaderboard.json`` hold the same rows: ``table`` (which
table: ``best``, ``results``, ``ranks``, ``hypervolume``, ``tracks``, ``track_agreement``),
the task keys that table has (``space``, ``dataset``, ``preset``, ``constraint``,
``track``; empty where a table has none, e.g. ranks are per track only), ``method``,
``metric`` (the column's name in the table, units as :mod:`benchmark.report.aggregate`
states them), ``value`` (a number) or ``text`` (a word: a verdict, the seeds run, failure
statuses). The code version is a column only when the board keeps several apart; a
single one (also a long "mixed: …" label of pooled versions) is said once, in the JSON's
``code_versions`` and in the markdown header, never repeated on every row.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

from benchmark.report.leaderboard import Leaderboard
from benchmark.report.versions import CODE_VERSION

KEY_COLUMNS: tuple[str, ...] = (
    CODE_VERSION, "space", "dataset", "preset", "constraint", "track", "method"
)  # fmt: skip
LONG_COLUMNS: tuple[str, ...] = ("table", *KEY_COLUMNS, "metric", "value", "text")
TABLES: tuple[str, ...] = ("best", "results", "ranks", "hypervolume", "tracks", "track_agreement")


def _tables(lb: Leaderboard) -> dict[str, pd.DataFrame]:
    return {
        "best": lb.best,
        "results": lb.aggregate,
        "ranks": lb.ranks,
        "hypervolume": lb.hypervolume,
        "tracks": lb.tracks,
        "track_agreement": lb.track_agreement,
    }


def long_table(lb: Leaderboard) -> pd.DataFrame:
    """Every table of ``lb`` in long format (:data:`LONG_COLUMNS`, less the code version
    when there is only one)."""
    parts = []
    for name, table in _tables(lb).items():
        if table is None or table.empty:
            continue
        keys = [k for k in KEY_COLUMNS if k in table.columns]
        melted = table.melt(id_vars=keys, var_name="metric", value_name="_v")
        numeric = pd.to_numeric(melted["_v"], errors="coerce")
        is_number = melted["_v"].map(
            lambda v: isinstance(v, int | float) and not isinstance(v, bool)
        )
        melted["value"] = numeric.where(is_number)
        melted["text"] = melted["_v"].where(~is_number).astype("string")
        melted.insert(0, "table", name)
        parts.append(melted.drop(columns="_v"))
    if not parts:
        return pd.DataFrame(columns=list(LONG_COLUMNS))
    out = pd.concat(parts, ignore_index=True).reindex(columns=list(LONG_COLUMNS))
    for key in KEY_COLUMNS:
        out[key] = out[key].astype("string").fillna("")
    out["text"] = out["text"].fillna("")
    if out.loc[out[CODE_VERSION] != "", CODE_VERSION].nunique() <= 1:
        out = out.drop(columns=CODE_VERSION)
    return out


def export_json(lb: Leaderboard) -> str:
    """The long rows as one JSON document with the board's provenance: ``code_versions``
    (label → rows), ``run_ids``, ``devices`` and ``rows`` (strict JSON: NaN as null)."""
    table = long_table(lb)
    rows = [
        {k: _plain(v) for k, v in record.items() if not (k == "text" and v == "")}
        for record in table.to_dict(orient="records")
    ]
    document = {
        "code_versions": lb.code_versions,
        "run_ids": lb.run_ids,
        "devices": lb.devices,
        "columns": list(table.columns),
        "rows": rows,
    }
    return json.dumps(document, indent=None, separators=(",", ":")) + "\n"


def _is_number(value: Any) -> bool:
    """A number cell (numpy's too), not a flag or a word; NaN counts (an empty number)."""
    return isinstance(value, numbers.Number) and not isinstance(value, bool | np.bool_)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA:
        return None
    return value


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a text cell as a formula (OWASP's CSV injection list)."""


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that a spreadsheet would run as a formula (starting
    with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) prefixed with ``'``, which
    shows it as text; numbers are left alone (a negative number is not text)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            values = out[column]
            risky = values.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_STARTS))
            out[column] = values.where(~risky.astype(bool), "'" + values.astype(str))
    return out
