"""One benchmark run: its folder and lock, its metadata, the trials still to run (after
``--resume``, also rows recovered from worker outboxes) and the executor that runs them.

The CLI parses and validates the request; this module does the work and says how it ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.arena.files import LockedError, file_lock
from benchmark.arena.presets import load_preset
from benchmark.harness import runner
from benchmark.harness.records import RunStore, hardware, record_fp_starting_points, versions
from benchmark.harness.spec import read_outbox

RESUMED_SETTINGS = (
    "methods",
    "space",
    "dataset",
    "data_dir",
    "download",
    "preset",
    "constraint",
    "seeds",
    "cache_dir",
    "cpus_per_trial",
    "gpus_per_trial",
    "max_search_seconds",
    "max_search_samples",
    "max_trial_seconds",
    "method_options",
)
"""The settings a run stores in its metadata and ``--resume`` takes back."""


class RunLockedError(RuntimeError):
    """The run folder is being written by another process."""


@dataclass
class RunRequest:
    """A validated run: the grid, the trials' common settings and how to execute them.

    ``settings`` holds the values of :data:`RESUMED_SETTINGS` as the user gave them (they
    are stored for ``--resume``); ``options`` is the parsed ``--method-options``.
    """

    grid: runner.Grid
    settings: dict[str, Any]
    options: dict[str, dict] = field(default_factory=dict)
    executor: str = "ray"
    address: str | None = None
    resume: bool = False
    command: str = ""

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

    @property
    def n_not_ok(self) -> int:
        return int((self.frame["status"] != "ok").sum())


def execute_run(
    request: RunRequest,
    run_id: str,
    run_dir: Path,
    *,
    write_leaderboard: Callable[[Path], Any] | None = None,
    progress: runner.Progress = runner.stderr_progress,
) -> RunOutcome:
    """Run (or resume) ``run_id`` in ``run_dir`` under the run-folder lock.

    ``write_leaderboard(run_dir)`` is called once the trials end, if any row exists; its
    failure is reported as a warning (the rows are safe). Ctrl-C ends the trials and
    returns with ``interrupted`` set.

    Raises:
        RunLockedError: another process holds the run folder.
        OSError: the run folder cannot be written.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(run_dir / ".lock", blocking=False):
            store = RunStore.open(run_dir)
            return _execute_locked(request, run_id, run_dir, store, write_leaderboard, progress)
    except LockedError:
        raise RunLockedError(
            f"run {run_id} is being written by another process; wait for it to end"
        ) from None


def _execute_locked(
    request: RunRequest,
    run_id: str,
    run_dir: Path,
    store: RunStore,
    write_leaderboard: Callable[[Path], Any] | None,
    progress: runner.Progress,
) -> RunOutcome:
    grid, settings = request.grid, request.settings
    specs = runner.make_specs(grid, run_id, run_dir, request.options, **request.trial_settings())
    if not request.resume:
        store.write_metadata(
            {
                "run_id": run_id,
                "command": request.command,
                "settings": dict(settings),
                "grid": {
                    k: list(v) if isinstance(v, list | tuple) else v for k, v in vars(grid).items()
                },
                "executor": request.executor,
                "preset": load_preset(grid.preset).to_dict(),
                "versions": versions(),
                "hardware": hardware(),
                "trials": [s.key for s in specs],
            }
        )
    finished = store.finished_trials()
    pending = [s for s in specs if s.key not in finished]
    recovered = 0
    for spec in list(pending):  # finished in a worker, but the driver died before storing
        rows = read_outbox(spec)
        if rows is not None:
            recovered += store.add(rows) > 0
            pending.remove(spec)
    what = f"{len(specs)} trial(s)"
    if request.resume:
        what = f"resuming, {len(pending)} of {what} to run"
    extra = f" ({recovered} recovered from worker outboxes)" if recovered else ""
    progress(f"run {run_id}: {what}{extra} → {run_dir}")
    interrupted = False
    try:
        if request.executor == "serial":
            runner.run_serial(pending, store, progress)
        elif pending:
            runner.run_ray(
                pending,
                store,
                progress,
                address=request.address,
                cpus_per_trial=settings["cpus_per_trial"],
                gpus_per_trial=settings["gpus_per_trial"],
            )
    except KeyboardInterrupt:
        interrupted = True
    try:
        record_fp_starting_points(store)  # the shared FP cost, shown once
    except OSError as err:  # the rows are safe; say so and go on
        progress(f"warning: FP starting points not recorded in metadata.json ({err})")
    frame = store.frame()
    if write_leaderboard is not None and len(frame):
        try:
            write_leaderboard(run_dir)
        except Exception as err:  # noqa: BLE001 - the rows are safe; say so and go on
            progress(
                f"warning: leaderboard not written ({type(err).__name__}: {err}); "
                f"rerun `python -m benchmark leaderboard {run_dir}`"
            )
    missing = len({s.key for s in specs} - store.finished_trials())
    outcome = RunOutcome(run_id, run_dir, len(specs), frame, missing, interrupted)
    progress(
        f"run {run_id}: {len(frame)} rows, {outcome.n_not_ok} not ok, {missing} trial(s) "
        f"without rows; results in {run_dir}"
    )
    if interrupted:
        progress(
            f"interrupted: {len(specs) - missing} of {len(specs)} trial(s) done; "
            f"finish with `python -m benchmark run --resume {run_id} --out {run_dir.parents[1]}`"
        )
    return outcome
