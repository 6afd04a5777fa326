"""Which code wrote the records, and keeping records of different code apart.

Records from different mpqbench versions or git SHAs, or read from files that lack some of
the schema's columns (an older records format), are not comparable: the recipes, the
accounting or the columns changed between them. The leaderboard keeps each such *code
version* in its own task groups (the ``code_version`` column is part of every task key)
and says so in one warning line; ``allow_mixed`` pools them under one label instead.
"""

from __future__ import annotations

import warnings

import pandas as pd

CODE_VERSION = "code_version"
"""The column naming the code that wrote a row (``mpqbench 0.1.0 @ 1a2b3c4d5e6f``)."""

SCHEMA_MISSING = "schema_missing"
"""A column the loader adds: the schema columns the row's records file lacked ("" for none)."""

OLDER_SCHEMA = " (older records format)"


def code_versions(frame: pd.DataFrame) -> pd.Series:
    """Per row: ``mpqbench <version> @ <git sha>`` (``?`` for an unrecorded version, no
    ``@`` part without a sha), marked as an older records format where its file lacked
    schema columns."""
    version = frame["mpqbench_version"].astype(str).where(frame["mpqbench_version"] != "", "?")
    sha = frame["git_sha"].astype(str)
    label = "mpqbench " + version + sha.map(lambda s: f" @ {s}" if s else "")
    if SCHEMA_MISSING in frame.columns:
        older = frame[SCHEMA_MISSING].fillna("").astype(str) != ""
        label = label.where(~older, label + OLDER_SCHEMA)
    return label


def with_code_version(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its :data:`CODE_VERSION` column (computed when it is absent)."""
    if CODE_VERSION in frame.columns:
        return frame
    return frame.assign(**{CODE_VERSION: code_versions(frame)})


def keep_versions_apart(frame: pd.DataFrame, allow_mixed: bool = False) -> pd.DataFrame:
    """``frame`` with a :data:`CODE_VERSION` column per row; with ``allow_mixed`` one label
    for all rows (``mixed: a + b``), pooling them.

    Warns in one line when the rows come from more than one code version.
    """
    frame = frame.assign(**{CODE_VERSION: code_versions(frame)})
    seen = sorted(frame[CODE_VERSION].unique())
    if len(seen) < 2:
        return frame
    listed = "; ".join(seen)
    if allow_mixed:
        warnings.warn(
            f"leaderboard: records of {len(seen)} code versions are pooled (--allow-mixed): "
            f"{listed}",
            stacklevel=2,
        )
        return frame.assign(**{CODE_VERSION: "mixed: " + " + ".join(seen)})
    warnings.warn(
        f"leaderboard: records of {len(seen)} code versions are kept apart, each in its own "
        f"task groups: {listed} (--allow-mixed pools them)",
        stacklevel=2,
    )
    return frame
