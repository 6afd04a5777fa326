"""Reading the records of many runs into one frame for the leaderboard and the plots."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.harness.records import COLUMNS, PLACEMENT_COLUMNS, normalise, read_records
from benchmark.report.selection import CANDIDATE_KEYS
from benchmark.report.versions import SCHEMA_MISSING


class LeaderboardError(ValueError):
    """Nothing to build a leaderboard from (no readable records)."""


def load_runs(run_dirs: Sequence[Path]) -> pd.DataFrame:
    """Read the records of every run under ``run_dirs`` into one normalised frame.

    Each entry may be a run folder (``records.parquet``, else ``records.csv``), an ``--out``
    folder holding ``runs/<id>/``, a folder of run folders, or a records file itself. A file
    that cannot be read is skipped with a warning naming it; exact duplicates of
    (run_id, trial_key, candidate_index, track) are dropped (first kept).

    Raises:
        LeaderboardError: when no records could be read at all.
    """
    frames: list[pd.DataFrame] = []
    for run_dir in run_folders(run_dirs):
        frame = _read_run(run_dir)
        if frame is not None:
            frames.append(frame)
    if not frames:
        names = ", ".join(str(p) for p in run_dirs) or "(no paths given)"
        raise LeaderboardError(f"no readable records.parquet or records.csv in: {names}")
    frame = normalise(pd.concat(frames, ignore_index=True))
    return drop_duplicate_rows(frame)


def run_folders(run_dirs: Sequence[Path]) -> list[Path]:
    """The run folders (or single records files) that ``run_dirs`` stand for, each once
    (a path that is no run, or holds none, is warned about and skipped)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for entry in run_dirs:
        for run_dir in _run_folders(Path(entry)):
            key = run_dir.resolve()
            if key not in seen:
                seen.add(key)
                out.append(run_dir)
    return out


def _run_folders(path: Path) -> list[Path]:
    """The run folders (or single records files) that ``path`` stands for."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        warnings.warn(f"leaderboard: {path} does not exist; skipped", stacklevel=3)
        return []
    if _has_records(path):
        return [path]
    parent = path / "runs" if (path / "runs").is_dir() else path
    runs = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not runs:
        warnings.warn(f"leaderboard: no run folders under {path}; skipped", stacklevel=3)
    return runs


def _has_records(folder: Path) -> bool:
    return (folder / "records.parquet").is_file() or (folder / "records.csv").is_file()


def _read_run(run: Path) -> pd.DataFrame | None:
    """Records of one run folder or file; ``None`` (with a warning) when unreadable."""
    candidates = [run] if run.is_file() else [run / "records.parquet", run / "records.csv"]
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        warnings.warn(f"leaderboard: no records file in {run}; skipped", stacklevel=3)
        return None
    for path in existing:
        try:
            frame = read_records(path)
        except Exception as exc:  # noqa: BLE001 - any corrupt file is skipped, not fatal
            warnings.warn(
                f"leaderboard: cannot read {path} ({type(exc).__name__}: {exc}); skipped",
                stacklevel=3,
            )
            continue
        try:
            return normalise(_without_impossible_rows(_marked_schema(frame, path), path))
        except Exception as exc:  # noqa: BLE001 - one bad run never sinks the board
            warnings.warn(
                f"leaderboard: cannot use {path} ({type(exc).__name__}: {exc}); skipped",
                stacklevel=3,
            )
            return None
    return None


PERCENT_COLUMNS = ("top1_val", "top1_test")
"""Accuracies: NaN or within [0, 100] (percent)."""
NON_NEGATIVE_COLUMNS = (
    "bitops", "bitops_ratio_w8a8", "size_bits", "search_device_hours", "search_wall_hours",
    "finetune_device_hours", "finetune_wall_hours",
)  # fmt: skip
"""Costs: NaN or finite and ≥ 0."""


def _without_impossible_rows(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``frame`` less the rows no run can write (a seed that is not a whole number, an
    accuracy outside 0–100 %, a negative or infinite cost), with one warning naming how
    many and the first of them: a hand-edited or damaged file costs its bad rows only."""
    bad = pd.Series(False, index=frame.index)
    reasons: list[str] = []

    def number(column: str) -> pd.Series:
        if column not in frame.columns:
            return pd.Series(np.nan, index=frame.index)
        return pd.to_numeric(frame[column], errors="coerce").astype("float64")

    checks = [("seed", lambda v: v.notna() & (~np.isfinite(v) | (v != np.round(v)) |
                                              (v.abs() > 2**62)))]  # fmt: skip
    checks += [(c, lambda v: v.notna() & ~v.between(0.0, 100.0)) for c in PERCENT_COLUMNS]
    checks += [(c, lambda v: v.notna() & (~np.isfinite(v) | (v < 0))) for c in NON_NEGATIVE_COLUMNS]
    for column, impossible in checks:
        value = number(column)
        wrong = impossible(value)
        bad |= wrong
        reasons += [f"{column} {v:g}" for v in value[wrong].head(1)]
    if bad.any():
        warnings.warn(
            f"leaderboard: {path}: {int(bad.sum())} row(s) with impossible values dropped "
            f"({', '.join(reasons[:3])})",
            stacklevel=4,
        )
    return frame.loc[~bad]


def _marked_schema(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``frame`` with its :data:`SCHEMA_MISSING` column: the schema columns its file lacks
    (an older records format: kept apart from complete records, with one warning line)."""
    missing = [c for c in COLUMNS if c not in frame.columns and c not in PLACEMENT_COLUMNS]
    if missing:
        shown = ", ".join(missing[:4]) + (
            f", … ({len(missing)} in all)" if len(missing) > 4 else ""
        )
        warnings.warn(
            f"leaderboard: {path} lacks {len(missing)} schema column(s) ({shown}): an older "
            "records format, kept apart (--allow-mixed pools it)",
            stacklevel=4,
        )
    return frame.assign(**{SCHEMA_MISSING: ",".join(missing)})


def drop_duplicate_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop repeated (run_id, trial_key, candidate_index, track) rows, keeping the first;
    warns when the repeats differ in content (a sign of two different runs sharing an id)."""
    keys = list(CANDIDATE_KEYS)
    repeated = frame.duplicated(keys, keep="first")
    if repeated.any():
        identical = frame.astype(str).duplicated(keep="first")
        conflicting = int((repeated & ~identical).sum())
        if conflicting:
            warnings.warn(
                f"leaderboard: {conflicting} rows repeat a (run_id, trial_key, candidate_index,"
                " track) key with different content; the first one is kept",
                stacklevel=2,
            )
    return frame.loc[~repeated].reset_index(drop=True)
