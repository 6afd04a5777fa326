"""Whether two runs gave the same rows: what a refactor must not change.

Reads ``records.parquet`` of two run folders, pairs their rows by (method, task, seed,
candidate, track) and compares every column both have, except those that cannot repeat
(timings, run ids, versions, dates, file paths; in ``extra``, the keys naming timings).
Columns only one side has are listed (new columns are allowed). Exit 0 when every shared
column is equal, 1 otherwise.

    python scripts/compare_rows.py results/runs/before results/runs/after
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

KEY = ["method", "space", "dataset", "preset", "constraint", "seed", "candidate", "track"]
VOLATILE_WORDS = ("seconds", "hours", "run_id", "trial_key", "version", "git", "built_at", "_at")
VOLATILE = {"trial_dir", "fp_source", "fp_device_hours", "fp_built_at", "error"}


def _volatile(column: str) -> bool:
    return column in VOLATILE or any(word in column for word in VOLATILE_WORDS)


def _steady_json(text: object) -> object:
    """A JSON column (``extra``: a method's labels) without its volatile keys (timings)."""
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return text
    if isinstance(value, dict):
        return json.dumps({k: v for k, v in value.items() if not _volatile(k)}, sort_keys=True)
    return text


def compare(before: pd.DataFrame, after: pd.DataFrame) -> list[str]:
    """The differences, one line each (empty: the same rows)."""
    problems = []
    only_before = sorted(set(before) - set(after))
    if only_before:
        problems.append(f"columns gone: {', '.join(only_before)}")
    left = before.sort_values(KEY).reset_index(drop=True)
    right = after.sort_values(KEY).reset_index(drop=True)
    if len(left) != len(right) or not left[KEY].equals(right[KEY]):
        return [*problems, f"different rows: {len(left)} before, {len(right)} after"]
    for column in sorted(set(before) & set(after)):
        if _volatile(column):
            continue
        a, b = left[column], right[column]
        if column == "extra":
            a, b = a.map(_steady_json), b.map(_steady_json)
        same = (a == b) | (a.isna() & b.isna())
        if not bool(same.all()):
            i = int((~same).to_numpy().argmax())
            problems.append(f"{column}: e.g. {a.iloc[i]!r} before, {b.iloc[i]!r} after")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    frames = [pd.read_parquet(p / "records.parquet") for p in (args.before, args.after)]
    new = sorted(set(frames[1]) - set(frames[0]))
    problems = compare(*frames)
    print(f"{len(frames[0])} rows; new columns: {', '.join(new) or 'none'}")
    for line in problems:
        print(line)
    print("the same rows" if not problems else f"{len(problems)} difference(s)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
