"""One benchmark run: its folder and lock, its metadata, the trials still to run (after
``--resume``, also rows recovered from worker outboxes) and the executor that runs them.

The CLI parses and validates the request; this module does the work and says how it ended.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from pydantic import ConfigDict, Field, Strict, ValidationError
from pydantic.dataclasses import dataclass as schema_dataclass

from benchmark.arena.files import LockedError, file_lock
from benchmark.arena.presets import Preset, PresetError, load_preset, schema_error
from benchmark.harness import executors, shared_storage
from benchmark.harness.records import (
    OutboxError,
    RunStateError,
    RunStore,
    hardware,
    record_fp_starting_points,
    versions,
)
from benchmark.harness.spec import TrialSpec, checked_outbox

Texts = Annotated[list[Annotated[str, Strict()]], Field(min_length=1)]

MAX_SEED = 2**32 - 1
"""Largest seed every RNG in the harness accepts (numpy's legacy seeding is 32-bit)."""


@schema_dataclass(config=ConfigDict(extra="ignore"))
class StoredSettings:
    """The settings a run stores in its metadata (``settings``) and ``--resume`` takes
    back, with the types a readable ``metadata.json`` holds."""

    methods: Texts
    space: Texts
    dataset: Texts
    data_dir: Annotated[str, Strict()] | None
    download: Annotated[bool, Strict()]
    preset: Annotated[str, Strict()]
    constraint: Texts
    seeds: Annotated[
        list[Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)]], Field(min_length=1)
    ]  # as --seeds takes them
    cache_dir: Annotated[str, Strict()] | None
    cpus_per_trial: Annotated[float, Strict()]
    gpus_per_trial: Annotated[float, Strict()]
    max_search_seconds: Annotated[float, Strict()] | None
    max_search_samples: Annotated[int, Strict()] | None
    max_trial_seconds: Annotated[float, Strict()] | None
    method_options: Annotated[str, Strict()] | None


RESUMED_SETTINGS = tuple(f.name for f in fields(StoredSettings))
"""The settings a run stores in its metadata and ``--resume`` takes back."""

METADATA_KEYS = ("run_id", "settings", "trials")
"""Keys ``--resume`` needs in ``metadata.json`` besides the settings' own."""


def load_run_metadata(run_dir: Path) -> dict[str, Any]:
    """``run_dir/metadata.json``, checked for what ``--resume`` needs.

    Raises:
        FileNotFoundError: there is no such file.
        RunStateError: it is unreadable, not JSON, or of the wrong shape (one line naming
            the file and the key).
    """
    path = Path(run_dir) / "metadata.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as err:
        reason = " ".join(str(err).split()).split(". ")[0][:160]
        raise RunStateError(f"{path} is unreadable ({reason}); {_hint(run_dir)}") from None
    if not isinstance(meta, dict):
        raise RunStateError(f"{path} is not a JSON object; {_hint(run_dir)}")
    for key in METADATA_KEYS:
        if key not in meta:
            raise RunStateError(f"{path} has no {key!r} key; {_hint(run_dir)}")
    if not isinstance(meta["settings"], dict):
        raise RunStateError(f"{path}: 'settings' is not a JSON object; {_hint(run_dir)}")
    try:
        StoredSettings(**{k: v for k, v in meta["settings"].items() if k in RESUMED_SETTINGS})
    except ValidationError as err:
        text = schema_error(StoredSettings, err)
        raise RunStateError(f"{path}: settings {text}; {_hint(run_dir)}") from None
    return meta


def _hint(run_dir: Path) -> str:
    return (
        "it cannot be resumed: start a new run (its records stay readable by "
        f"`python -m benchmark leaderboard {run_dir}`)"
    )


def check_resume_recipe(meta: dict[str, Any], preset_name: str) -> str:
    """The recipe hash ``--resume`` runs with: the one the run started with, if the preset
    still has it (``""`` for a run from before recipe hashes).

    Raises:
        RunStateError: the preset's content changed since the run started (one line).
    """
    stored = meta.get("preset_hash")
    if stored is None and isinstance(meta.get("preset"), dict):  # older runs: from content
        try:
            recorded = Preset.from_dict(meta["preset"]).recipe_hash
        except PresetError:
            recorded = None
    else:
        recorded = stored
    current = load_preset(preset_name).recipe_hash
    if recorded is not None and recorded != current:
        raise RunStateError(
            f"the recipe changed: preset {preset_name} now has recipe {current}, but run "
            f"{meta['run_id']} ran with {recorded}; restore the preset file or start a new run"
        )
    return stored or ""


class RunLockedError(RuntimeError):
    """The run folder is being written by another process."""


@dataclass
class RunRequest:
    """A validated run: the grid, the trials' common settings and how to execute them.

    ``settings`` holds the values of :data:`RESUMED_SETTINGS` as the user gave them (they
    are stored for ``--resume``); ``options`` is the parsed ``--method-options``.
    """

    grid: executors.Grid
    settings: dict[str, Any]
    options: dict[str, dict] = field(default_factory=dict)
    executor: str = "ray"
    address: str | None = None
    resume: bool = False
    command: str = ""
    preset_hash: str = ""  # the recipe's content hash (in trial keys); "" for older runs

    def trial_settings(self) -> dict[str, Any]:
        """The keyword arguments every :class:`~benchmark.harness.spec.TrialSpec` shares."""
        s = self.settings
        return {
            "data_dir": s["data_dir"],
            "download": s["download"],
            "cache_dir": s["cache_dir"],
            "max_search_seconds": s["max_search_seconds"],
            "max_search_samples": s["max_search_samples"],
            "max_trial_seconds": s["max_trial_seconds"],
            "cpus": s["cpus_per_trial"],
            "gpus": s["gpus_per_trial"],
            "preset_hash": self.preset_hash,
        }


@dataclass
class RunOutcome:
    """How a run ended: its rows, the trials left without rows, and whether it was stopped."""

    run_id: str
    run_dir: Path
    n_trials: int
    frame: pd.DataFrame
    missing: int
    interrupted: bool
    write_error: str | None = None  # why the run store stopped writing (e.g. a full disk)

    @property
    def n_not_ok(self) -> int:
        return int((self.frame["status"] != "ok").sum())


def _shared_folders(request: RunRequest, run_dir: Path) -> dict[str, str]:
    """``{flag: folder}`` every node of a cluster run must see (``{}`` for a local run)."""
    if request.executor != "ray" or not request.address:
        return {}
    folders = {"--out": str(run_dir.parents[1])}
    if request.settings.get("cache_dir"):
        folders["--cache-dir"] = str(request.settings["cache_dir"])
    return folders


def execute_run(
    request: RunRequest,
    run_id: str,
    run_dir: Path,
    *,
    write_leaderboard: Callable[[Path], Any] | None = None,
    progress: executors.Progress = executors.stderr_progress,
    events: executors.TrialEvents | None = None,
) -> RunOutcome:
    """Run (or resume) ``run_id`` in ``run_dir`` under the run-folder lock.

    ``write_leaderboard(run_dir)`` is called once the trials end, if any row exists; its
    failure is reported as a warning (the rows are safe). Ctrl-C ends the trials and
    returns with ``interrupted`` set. ``progress`` gets the run's lines; ``events``, if
    given, what the trials do as they go (:data:`~benchmark.harness.executors.TrialEvents`).

    Raises:
        RunLockedError: another process holds the run folder.
        RunStateError: (resume) its records or a trial's outbox are damaged.
        OSError: the run folder cannot be written.
    """
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(run_dir / ".lock", blocking=False):
            store = RunStore.open(run_dir, run_id if request.resume else None)
            return _execute_locked(
                request, run_id, run_dir, store, write_leaderboard, progress, events
            )
    except LockedError:
        raise RunLockedError(
            f"run {run_id} is being written by another process; wait for it to end"
        ) from None
    except OSError:
        if created:  # nothing of it was kept: no empty folder with a stale lock
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _execute_locked(
    request: RunRequest,
    run_id: str,
    run_dir: Path,
    store: RunStore,
    write_leaderboard: Callable[[Path], Any] | None,
    progress: executors.Progress,
    events: executors.TrialEvents | None,
) -> RunOutcome:
    shared = _shared_folders(request, run_dir)
    specs = executors.make_specs(
        request.grid, run_id, run_dir, request.options, **request.trial_settings(),
        shared_folders=shared,
    )  # fmt: skip
    if not request.resume:
        store.write_metadata(_metadata(request, run_id, specs))
    pending, recovered = _pending(specs, store)
    what = f"{len(specs)} trial(s)"
    if request.resume:
        what = f"resuming, {len(pending)} of {what} to run"
    extra = f" ({recovered} recovered from worker outboxes)" if recovered else ""
    start_line = f"run {run_id}: {what}{extra} → {run_dir}"
    if events is None:
        progress(start_line)
    else:  # a view shows it (or, quiet, not)
        events("", {"kind": "run", "line": start_line})
    interrupted, write_error = _run_pending(
        request, run_id, pending, store, shared, progress, events
    )
    if write_error is None:
        try:
            record_fp_starting_points(store)  # the shared FP cost, shown once
        except OSError as err:  # the rows are safe; say so and go on
            progress(f"warning: FP starting points not recorded in metadata.json ({err})")
    frame = store.frame()
    if write_leaderboard is not None and len(frame) and write_error is None:
        try:
            write_leaderboard(run_dir)
        except Exception as err:  # noqa: BLE001 - the rows are safe; say so and go on
            progress(
                f"warning: leaderboard not written ({type(err).__name__}: {err}); "
                f"rerun `python -m benchmark leaderboard {run_dir}`"
            )
    missing = len({s.key for s in specs} - store.finished_trials())
    outcome = RunOutcome(run_id, run_dir, len(specs), frame, missing, interrupted)
    if write_error is not None:
        outcome.write_error = write_error.strerror or str(write_error)
    _summarise(outcome, len(specs), progress)
    return outcome


def _metadata(request: RunRequest, run_id: str, specs: list[TrialSpec]) -> dict[str, Any]:
    """What ``metadata.json`` records of a new run: its command, settings, grid, preset,
    versions, hardware and trial keys."""
    grid = request.grid
    return {
        "run_id": run_id,
        "command": request.command,
        "settings": dict(request.settings),
        "grid": {k: list(v) if isinstance(v, list | tuple) else v for k, v in vars(grid).items()},
        "executor": request.executor,
        "preset": load_preset(grid.preset).to_dict(),
        "preset_hash": request.preset_hash,
        "versions": versions(),
        "hardware": hardware(),
        "trials": [s.key for s in specs],
    }


def _pending(specs: list[TrialSpec], store: RunStore) -> tuple[list[TrialSpec], int]:
    """The trials without rows, and how many were recovered from worker outboxes (finished
    in a worker, but the driver died before storing them)."""
    finished = store.finished_trials()
    pending = [s for s in specs if s.key not in finished]
    recovered = 0
    for spec in list(pending):
        try:
            rows = checked_outbox(spec)
        except OutboxError as err:
            raise OutboxError(f"{err}: delete it, and --resume reruns that trial") from None
        if rows is not None:
            recovered += store.add(rows) > 0
            pending.remove(spec)
    return pending, recovered


def _run_pending(
    request: RunRequest,
    run_id: str,
    pending: list[TrialSpec],
    store: RunStore,
    shared: dict[str, str],
    progress: executors.Progress,
    events: executors.TrialEvents | None,
) -> tuple[bool, OSError | None]:
    """Run ``pending`` on the request's executor: ``(interrupted, the write error that
    stopped it)``. A write error before any row is stored is raised."""
    try:
        if request.executor == "serial":
            executors.run_serial(pending, store, progress, events=events)
        elif pending:
            if shared:  # a cluster: say once if the folders look local, mark them for trials
                warning = shared_storage.local_storage_warning(shared)
                if warning is not None:
                    progress(warning)
                shared_storage.leave_markers(shared, run_id)
            executors.run_ray(
                pending,
                store,
                progress,
                address=request.address,
                cpus_per_trial=request.settings["cpus_per_trial"],
                gpus_per_trial=request.settings["gpus_per_trial"],
                events=events,
            )
    except KeyboardInterrupt:
        return True, None
    except OSError as err:  # the store could not write (a full disk): stop, keep what is there
        if not store.rows:
            raise
        return False, err
    finally:
        shared_storage.remove_markers(shared, run_id)
    return False, None


def _summarise(outcome: RunOutcome, trials: int, progress: executors.Progress) -> None:
    """The run's closing lines: a write error, the rows, and how to finish a stopped run."""
    run_dir, run_id, missing = outcome.run_dir, outcome.run_id, outcome.missing
    rows = len(outcome.frame)
    if outcome.write_error:
        progress(
            f"error: cannot write to {run_dir} ({outcome.write_error}); the run stopped, "
            f"the {rows} rows written before are intact"
        )
    progress(
        f"run {run_id}: {rows} rows, {outcome.n_not_ok} not ok, {missing} trial(s) "
        f"without rows; results in {run_dir}"
    )
    if outcome.interrupted or outcome.write_error:
        why = "interrupted" if outcome.interrupted else "stopped"
        then = "" if outcome.interrupted else "free some space, then "
        progress(
            f"{why}: {trials - missing} of {trials} trial(s) done; {then}"
            f"finish with `{resume_command(run_id, run_dir)}`"
        )


def resume_command(run_id: str, run_dir: Path) -> str:
    """The command that finishes the run ``run_id`` in ``run_dir`` (quoted for a shell)."""
    argv = ["python", "-m", "benchmark", "run", "--resume", run_id]
    return shlex.join([*argv, "--out", str(run_dir.parents[1])])
