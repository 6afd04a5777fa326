"""Result rows, the per-run store and run metadata.

One tidy row per (run, method, task, candidate, track). A run lives in
``<out>/runs/<run-id>/`` as ``records.parquet`` + ``records.csv`` (rewritten
atomically as trials finish) and ``metadata.json``. Rows of one trial are written
together; a trial's key names what it ran, so a resumed run can skip finished work.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.arena.files import atomic_write_bytes, atomic_write_text

STATUSES = ("ok", "failed", "diverged", "over_budget", "crashed", "timeout")
TRACKS = ("retrain", "inherit", "none")


@dataclass
class ResultRow:
    """One candidate evaluated on one track (accuracy in %, time in hours/seconds)."""

    run_id: str
    trial_key: str
    method: str  # the variant's name: "ompq", or "ompq[beta=1]" with non-default options
    space: str
    dataset: str
    preset: str
    seed: int
    constraint: str
    status: str = "ok"
    error: str = ""
    candidate: str = ""
    candidate_index: int = -1
    track: str = "none"
    policy: str = "{}"  # JSON {"layer": {"w_bits": b, "a_bits": b}}
    arch: str = "null"  # JSON of the architecture, null for fixed spaces
    quant: str = ""  # JSON of the QuantConfig used on this track ("" when no track ran)
    fixed: str = ""  # JSON {"role or layer": bits} of the fixed layers' convention used
    feasible: bool | None = None
    top1_test: float = float("nan")
    top1_val: float = float("nan")
    macs: float = float("nan")
    bitops: float = float("nan")
    mflops64: float = float("nan")
    size_bits: float = float("nan")
    bitops_ratio_w8a8: float = float("nan")
    size_ratio_w8a8: float = float("nan")
    avg_w_bits: float = float("nan")
    avg_a_bits: float = float("nan")
    search_device_hours: float = float("nan")  # search wall hours × device_share
    search_wall_hours: float = float("nan")
    search_cpu_seconds: float = float("nan")  # the trial process's CPU time, all threads
    finetune_device_hours: float = float("nan")  # finetune wall hours × device_share
    finetune_wall_hours: float = float("nan")
    finetune_cpu_seconds: float = float("nan")
    eval_seconds: float = float("nan")
    samples_processed: int = 0
    stopped_by_budget: bool = False  # the budget ended the search; its offered candidates ran
    device: str = ""
    node: str = ""  # the Ray node id (hex) the trial ran on; "" without Ray or unknown
    trial_cpus: float = float("nan")  # CPUs reserved for the trial
    trial_gpus: float = float("nan")  # GPUs (a fraction of one) reserved for the trial
    device_share: float = float("nan")  # device units charged: trial_gpus on a GPU, else CPUs
    fp_samples: int = -1  # the shared FP start's training samples (-1: not recorded)
    fp_device_hours: float = float("nan")  # its build's wall hours × its builder's share
    fp_device: str = ""  # where it was built
    fp_built_at: str = ""  # when it was built (local time, ISO 8601)
    fp_source: str = ""  # "built" (by this trial) or "cache" (built before); "" unknown
    mpqbench_version: str = ""
    torch_version: str = ""
    ray_version: str = ""
    git_sha: str = ""
    finished_at: str = ""
    extra: str = "{}"  # JSON of method-specific labels (e.g. beta, variant)
    method_options: str = "{}"  # JSON of the --method-options the method ran with
    method_config: str = "{}"  # JSON of the method's whole config (preset section + options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS: tuple[str, ...] = tuple(ResultRow.__dataclass_fields__)

PLACEMENT_COLUMNS: tuple[str, ...] = ("node",)
"""Columns that say where a trial ran, not what it measured: records written before them
are read as ``""`` and are not an older records format."""


def rows_to_frame(rows: Iterable[Mapping[str, Any] | ResultRow]) -> pd.DataFrame:
    """A DataFrame with the schema's columns in order."""
    records = [r.to_dict() if isinstance(r, ResultRow) else dict(r) for r in rows]
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    return frame


def git_sha(cwd: Path | None = None) -> str:
    """The current git commit of the package checkout, or "" outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def versions() -> dict[str, str]:
    """Package, torch and ray versions plus the git sha (stored in every row)."""
    import torch

    import benchmark

    try:
        import ray

        ray_version = ray.__version__
    except ImportError:  # pragma: no cover - ray is a dependency
        ray_version = ""
    return {
        "mpqbench_version": benchmark.__version__,
        "torch_version": torch.__version__,
        "ray_version": ray_version,
        "git_sha": git_sha(),
    }


def hardware() -> dict[str, Any]:
    """What the driver runs on (trials record their own device per row)."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-<pid>``: sortable and unique per process."""
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


class RunStateError(ValueError):
    """A run folder's files are damaged or foreign (one line naming the file and what to do)."""


@dataclass
class RunStore:
    """The files of one run; ``add`` is thread-safe and rewrites the tables atomically."""

    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, run_dir: Path, run_id: str | None = None) -> RunStore:
        """Open (or create) a run folder, loading rows already written.

        Raises:
            RunStateError: ``records.parquet`` is empty, unreadable, not a records table,
                or (given ``run_id``) holds another run's rows; the message says whether
                the trials' outboxes still hold rows to rebuild it from.
        """
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        store = cls(run_dir)
        if store.records_path.exists():
            store.rows = store._read_rows(run_id)
        return store

    def _read_rows(self, run_id: str | None) -> list[dict[str, Any]]:
        path = self.records_path
        try:
            frame = read_records(path)
        except Exception as err:  # noqa: BLE001 - pyarrow raises many kinds for junk
            reason = " ".join(str(err).split()).split(". ")[0][:160] or type(err).__name__
            if path.stat().st_size == 0:
                reason = "an empty file"
            raise RunStateError(f"{path} is damaged ({reason}); {self._rebuild_hint()}") from None
        others = sorted(set(frame["run_id"].astype(str)) - {run_id}) if run_id else []
        if others:
            raise RunStateError(
                f"{path} holds rows of run {others[0]}, not of {run_id}: it was copied from "
                f"another run; {self._rebuild_hint()}"
            )
        return frame.to_dict("records")

    def _rebuild_hint(self) -> str:
        """What still holds this run's rows, and how to use it."""
        outboxes = sum(1 for p in (self.run_dir / "trials").glob("*/rows.json") if _has_rows(p))
        if not outboxes:
            return "no trial outbox holds rows: move it aside and --resume reruns every trial"
        return (
            f"{outboxes} trial outbox(es) under {self.run_dir / 'trials'} still hold rows: move "
            "it aside and --resume rebuilds the records from them"
        )

    @classmethod
    def check(cls, run_dir: Path, run_id: str) -> None:
        """Check a run folder's records and trial outboxes before resuming it (reads only).

        Raises:
            RunStateError: as :meth:`open`, or a trial outbox is damaged (delete it, and
                ``--resume`` reruns that trial).
        """
        store = cls(Path(run_dir))
        if store.records_path.exists():
            store._read_rows(run_id)
        for outbox in sorted((store.run_dir / "trials").glob("*/rows.json")):
            try:
                read_outbox_file(outbox)
            except OutboxError as err:
                raise OutboxError(f"{err}: delete it, and --resume reruns that trial") from None

    @property
    def records_path(self) -> Path:
        return self.run_dir / "records.parquet"

    @property
    def csv_path(self) -> Path:
        return self.run_dir / "records.csv"

    @property
    def metadata_path(self) -> Path:
        return self.run_dir / "metadata.json"

    def finished_trials(self) -> set[str]:
        return {str(r["trial_key"]) for r in self.rows}

    def add(self, rows: Iterable[Mapping[str, Any] | ResultRow]) -> int:
        """Append one trial's rows (skipping a trial already stored) and rewrite the tables."""
        new = [r.to_dict() if isinstance(r, ResultRow) else dict(r) for r in rows]
        if not new:
            return 0
        with self._lock:
            done = self.finished_trials()
            new = [r for r in new if str(r["trial_key"]) not in done]
            if not new:
                return 0
            frame = rows_to_frame([*self.rows, *new])
            atomic_write_bytes(self.records_path, frame.to_parquet(index=False))
            atomic_write_text(self.csv_path, frame.to_csv(index=False))
            self.rows.extend(new)  # only once written: a failed write (full disk) adds nothing
        return len(new)

    def frame(self) -> pd.DataFrame:
        return rows_to_frame(self.rows)

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks that hold the store
        return {"run_dir": self.run_dir, "rows": self.rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.run_dir, self.rows, self._lock = state["run_dir"], state["rows"], threading.Lock()

    def write_metadata(self, metadata: Mapping[str, Any]) -> None:
        atomic_write_text(self.metadata_path, json.dumps(metadata, indent=2, default=str))


class OutboxError(RunStateError):
    """A trial's outbox exists but does not hold result rows (one line)."""


def read_outbox_file(path: Path) -> list[dict[str, Any]] | None:
    """The result rows in a trial's outbox file, ``None`` when there is none.

    Raises:
        OutboxError: it is unreadable, not JSON, or not a non-empty list of rows that
            each have a trial key and a known status.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise OutboxError(f"trial outbox {path} is unreadable ({err})") from None
    try:
        rows = json.loads(text)
    except ValueError as err:
        raise OutboxError(f"trial outbox {path} is not JSON ({err})") from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise OutboxError(f"trial outbox {path} is not a list of result rows")
    if any(not r.get("trial_key") or r.get("status") not in STATUSES for r in rows):
        raise OutboxError(f"trial outbox {path} holds rows without a trial key or status")
    return rows


def _has_rows(outbox: Path) -> bool:
    try:
        return read_outbox_file(outbox) is not None
    except OutboxError:
        return False


def read_records(path: Path) -> pd.DataFrame:
    """Read one records file (``records.parquet`` or ``records.csv``) as written.

    CSV string columns stay strings (a trial key may look numeric). Raises ``ValueError``
    for a table that is not a records table (no ``run_id`` / ``trial_key`` columns).
    """
    path = Path(path)
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype={c: str for c in _STRING_COLUMNS}, keep_default_na=True)
    else:
        frame = pd.read_parquet(path)
    if "run_id" not in frame.columns or "trial_key" not in frame.columns:
        raise ValueError("not a records table (no run_id / trial_key columns)")
    return frame


_STRING_COLUMNS = (
    "run_id", "trial_key", "method", "space", "dataset", "preset", "constraint", "status",
    "error", "candidate", "track", "policy", "arch", "quant", "fixed", "device", "node",
    "mpqbench_version", "torch_version", "ray_version", "git_sha", "finished_at", "extra",
    "method_options", "method_config", "fp_device", "fp_built_at", "fp_source",
)  # fmt: skip
_INT_COLUMNS = ("seed", "candidate_index", "samples_processed", "fp_samples")
_INT_MISSING = {"samples_processed": 0}  # else -1: not recorded
_BOOL_COLUMNS = ("feasible", "stopped_by_budget")
_FLOAT_COLUMNS = tuple(
    c for c in COLUMNS if c not in (*_STRING_COLUMNS, *_INT_COLUMNS, *_BOOL_COLUMNS)
)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every schema column present and typed: strings (no NaN), ints,
    floats and a boolean ``feasible`` (missing counts as not feasible).

    Records written before a column existed read back gracefully: a missing column is
    empty / NaN / -1 (``samples_processed``: 0), except the wall hours, which older records
    wrote as their device-hours (device-hours were unscaled wall hours then)."""
    out = frame.copy()
    if "search_wall_hours" not in out.columns and "search_device_hours" in out.columns:
        out["search_wall_hours"] = out["search_device_hours"]  # written as wall hours then
    if "finetune_wall_hours" not in out.columns and "finetune_device_hours" in out.columns:
        out["finetune_wall_hours"] = out["finetune_device_hours"]
    for col in COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    for col in _STRING_COLUMNS:
        out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
    for col in _INT_COLUMNS:
        missing = _INT_MISSING.get(col, -1)
        out[col] = pd.to_numeric(out[col], errors="coerce").fillna(missing).astype("int64")
    for col in _FLOAT_COLUMNS:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    for col in _BOOL_COLUMNS:
        out[col] = out[col].map(_as_bool).astype(bool)
    out["status"] = out["status"].str.strip().str.lower()
    out["track"] = out["track"].str.strip().str.lower().replace("", "none")
    extra = [c for c in out.columns if c not in COLUMNS]
    return out[[*COLUMNS, *extra]]


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


FP_START_KEYS = ("space", "dataset", "preset", "seed", "fp_built_at", "fp_device")


def fp_starting_points(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The shared FP starts (FP checkpoints / supernets) that ``rows`` were trained from,
    once each: per (space, dataset, preset, seed) and build, its training ``samples``,
    ``device_hours`` (its build's wall hours × its builder's device share; NaN where not
    recorded), ``device``, ``built_at``, ``from_cache`` (no trial among ``rows`` built it:
    it came from the cache, built earlier), ``built_in_runs`` and ``n_trials`` using it.

    Rows without an FP record (a trial that failed before it, or records written before
    the ``fp_*`` columns) are left out. This is the cost that is shown once and never
    charged to a method.
    """
    frame = normalise(rows)
    known = frame[(frame["fp_source"] != "") & (frame["fp_samples"] >= 0)]
    if known.empty:
        return []
    trials = known.drop_duplicates(["run_id", "trial_key"])
    out = []
    for key, group in trials.groupby(list(FP_START_KEYS), sort=True):
        space, dataset, preset, seed, built_at, device = key
        built = group[group["fp_source"] == "built"]
        hours = group["fp_device_hours"].dropna()
        out.append(
            {
                "space": space,
                "dataset": dataset,
                "preset": preset,
                "seed": int(seed),
                "samples": int(group["fp_samples"].max()),
                "device_hours": float(hours.iloc[0]) if len(hours) else float("nan"),
                "device": device,
                "built_at": built_at,
                "from_cache": built.empty,
                "built_in_runs": sorted(set(built["run_id"])),
                "n_trials": len(group),
            }
        )
    return out


def record_fp_starting_points(store: RunStore) -> None:
    """Add the run's :func:`fp_starting_points` to its ``metadata.json`` (key
    ``fp_starting_points``; NaN device-hours written as ``null``)."""
    try:
        metadata = json.loads(store.metadata_path.read_text())
    except (OSError, ValueError):
        metadata = {}
    starts = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in start.items()}
        for start in fp_starting_points(store.frame())
    ]
    store.write_metadata({**metadata, "fp_starting_points": starts})
