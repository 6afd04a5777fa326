"""Runs the grid of trials (methods × spaces × datasets × constraints × seeds).

Two executors run the same :func:`benchmark.harness.trial.run_trial`:

- ``ray`` (default): a Ray Tune ``Tuner`` with one trial per (method, task), each with
  ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs (fractions allowed). Locally it
  starts Ray with the machine's CPUs; ``address`` joins a running cluster.
- ``serial``: the trials one after another in this process (debugging, and to
  measure Ray's overhead).

Rows are written to the run store as each trial finishes. What the trials do as they go
reaches ``events`` (a live view), if given: see :class:`TrialEvents`.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmark.harness import ray_session
from benchmark.harness.memory import give_back_memory
from benchmark.harness.records import RunStore
from benchmark.harness.spec import TrialSpec, read_outbox
from benchmark.harness.trial import run_trial, spec_row
from benchmark.harness.trial_events import BackgroundSender

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Grid:
    """The cross product a run covers."""

    methods: Sequence[str]
    spaces: Sequence[str]
    datasets: Sequence[str]
    constraints: Sequence[str]
    seeds: Sequence[int]
    preset: str

    def tasks(self) -> list[dict[str, Any]]:
        return [
            {"space": sp, "dataset": ds, "preset": self.preset, "constraint": c, "seed": s}
            for sp, ds, c, s in itertools.product(
                self.spaces, self.datasets, self.constraints, self.seeds
            )
        ]


def make_specs(
    grid: Grid, run_id: str, run_dir: Path, method_options: dict[str, dict], **common: Any
) -> list[TrialSpec]:
    """One :class:`TrialSpec` per (method, task), in a stable order."""
    return [
        TrialSpec(
            run_id=run_id,
            method=method,
            task=task,
            run_dir=str(run_dir),
            method_options=method_options.get(method, {}),
            **common,
        )
        for task in grid.tasks()
        for method in grid.methods
    ]


def summarize(rows: Sequence[dict[str, Any]]) -> str:
    """One compact line: status (and whether the budget stopped the search), candidates,
    best val-selected accuracy."""
    if not rows:
        return "no rows"
    statuses = sorted({r["status"] for r in rows})
    evaluated = [r for r in rows if r["track"] != "none" and r["status"] == "ok"]
    feasible = sum(1 for r in rows if r.get("feasible"))
    stopped = " (search stopped by its budget)" if rows[0].get("stopped_by_budget") else ""
    text = f"{'/'.join(statuses)}{stopped}, {feasible} feasible candidate rows"
    if evaluated:
        best = max(evaluated, key=lambda r: r["top1_val"])
        text += (
            f", best val {best['top1_val']:.1f}% → test {best['top1_test']:.1f}% "
            f"({best['candidate']}, {best['track']}, {best['bitops_ratio_w8a8']:.3f}× W8A8 BitOPs)"
        )
    hours = rows[0].get("search_wall_hours")
    if hours == hours and hours is not None:
        text += f", search {hours * 3600:.1f} s"  # wall time: what the user waited
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        text += f" — {bad[0]['error'][:160]}"
    return text


def _label(spec: TrialSpec) -> str:
    t = spec.task
    return f"{spec.method} on {t['space']}/{t['dataset']} {t['constraint']} seed {t['seed']}"


TrialEvents = Callable[[str, dict[str, Any]], None]
"""``(trial key, event)``: what the live view is told. Events of the run (key ``""``): ``{"kind":
"run", "line": the run's first line}``, ``{"kind": "queued",
"trials": [(key, label), ...]}`` first; then per trial ``{"kind": "start", "label": ...}``,
its progress events (:mod:`benchmark.harness.trial_events`) and ``{"kind": "end", "line": the
trial's one-line summary, "ok": bool, "seconds": wall seconds}``. With ``events`` the
runner leaves the trials' start and end lines to it."""


class _Announcer:
    """Tells a trial's start and end: as lines to ``progress``, or as events."""

    def __init__(
        self, specs: Sequence[TrialSpec], progress: Progress, events: TrialEvents | None
    ) -> None:
        self.labels = {spec.key: (i, _label(spec)) for i, spec in enumerate(specs, 1)}
        self.total = len(specs)
        self.progress = progress
        self.events = events
        self.starts: dict[str, float] = {}
        if events is not None:
            events("", {"kind": "queued", "trials": [(s.key, _label(s)) for s in specs]})

    def started(self, spec: TrialSpec) -> None:
        self.starts[spec.key] = time.perf_counter()
        i, label = self.labels[spec.key]
        if self.events is None:
            self.progress(f"[{i}/{self.total}] {label}: running")
        else:
            self.events(spec.key, {"kind": "start", "label": label})

    def event(self, spec: TrialSpec, event: dict[str, Any]) -> None:
        if self.events is not None:
            self.events(spec.key, event)

    def finished(self, spec: TrialSpec, rows: list[dict[str, Any]], timed: bool = True) -> None:
        i, label = self.labels[spec.key]
        took = time.perf_counter() - self.starts.get(spec.key, time.perf_counter())
        line = f"[{i}/{self.total}] {label}: {summarize(rows)}" + (
            f" [{took:.0f} s]" if timed else ""
        )
        if self.events is None:
            self.progress(line)
        else:
            ok = bool(rows) and all(r["status"] == "ok" for r in rows)
            self.events(spec.key, {"kind": "end", "line": line, "ok": ok, "seconds": took})


def run_serial(
    specs: Sequence[TrialSpec],
    store: RunStore,
    progress: Progress,
    *,
    events: TrialEvents | None = None,
) -> None:
    """Run every trial in this process, one after another."""
    announce = _Announcer(specs, progress, events)
    for spec in specs:
        announce.started(spec)
        send = None if events is None else lambda event, spec=spec: announce.event(spec, event)
        rows = run_trial(spec, events=send)
        give_back_memory()
        store.add(rows)
        announce.finished(spec, rows)


RAY_PROGRESS_SPACING = 0.5
"""Least seconds between two progress reports of a Ray trial (each blocks a thread of the
worker until the driver takes it)."""


def _ray_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    spec = TrialSpec(**config["spec"])
    sender = BackgroundSender(
        lambda events: tune.report({"progress_json": json.dumps(events, default=str)}),
        spacing=RAY_PROGRESS_SPACING,
    )
    try:
        # a retry after the worker ended itself past the time limit finds the rows it left
        rows = read_outbox(spec) or run_trial(
            spec, reporter=lambda metrics: None, hard_exit=True, events=sender
        )
    finally:
        sender.close()
        give_back_memory()  # the worker runs the next trial too (reuse_actors)
    tune.report({"rows_json": json.dumps(rows, default=str), "done_rows": len(rows)})


class RunnerError(Exception):
    """The runner cannot start (e.g. a cluster without the resources asked for)."""


def _check_cluster(cpus_per_trial: float, gpus_per_trial: float) -> None:
    import ray

    total = ray.cluster_resources()
    for name, wanted in (("CPU", cpus_per_trial), ("GPU", gpus_per_trial)):
        have = float(total.get(name, 0.0))
        if wanted > have:
            flag = f"--{name.lower()}s-per-trial"
            raise RunnerError(
                f"{flag} {wanted:g} but the Ray cluster has {have:g} {name}(s); "
                f"lower {flag} or add nodes"
            )


def _init_ray(address: str | None) -> None:
    """Start a private local Ray (loopback, token auth: Ray's defaults kept) or join the
    cluster at ``address`` in its auth mode (:mod:`benchmark.harness.ray_session`)."""
    import ray

    if address:
        ray_session.follow_cluster_auth()
        where = {"address": address, "include_dashboard": False}
    else:
        where = {"num_cpus": os.cpu_count(), **ray_session.local_init_options()}
    try:
        ray.init(log_to_driver=False, configure_logging=False, **where)
    except (ConnectionError, RuntimeError, ValueError) as err:  # AuthenticationError too
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        if address and ray_session.is_auth_refusal(text):
            raise RunnerError(
                f"the Ray cluster at {address} refused this driver ({first[:160]}); "
                f"{ray_session.TOKEN_HINT}"
            ) from None
        raise RunnerError(
            f"cannot start or join Ray at {address or 'this machine'} ({first}); "
            "check --address (`ray status` on the head node)"
        ) from None


RAY_GRID_RESTARTS = 2
"""How often the grid is started again, for the trials without rows, after Ray raised out
of ``Tuner.fit`` with no trial finished since the last time; then they are ``crashed``."""


def _ray_grid_errors() -> tuple[type[BaseException], ...]:
    from ray.exceptions import RayError
    from ray.tune.error import TuneError

    return (RayError, TuneError)


def _lost_trial_rows(spec: TrialSpec, error: str) -> list[dict[str, Any]]:
    """Rows of a trial whose worker is gone: what it left in its outbox, else ``crashed``."""
    return read_outbox(spec) or [spec_row(spec, status="crashed", error=error[:2000])]


def run_ray(
    specs: Sequence[TrialSpec],
    store: RunStore,
    progress: Progress,
    *,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    events: TrialEvents | None = None,
) -> None:
    """Run the trials as a Ray Tune grid; rows are stored as each trial reports them.

    Raises:
        OSError: the run store could not write a trial's rows (a full disk): the run
            stopped there; rows written before are intact.
    """
    announce = _Local(_Announcer(specs, progress, events))  # the view: trials queued
    _quiet_ray(address)
    import ray
    from ray import tune

    grid = _Grid(store, announce)
    started_here = False
    if not ray.is_initialized():
        if not address:  # seconds without a line otherwise: say what happens
            progress("starting Ray on this machine (a private instance on the loopback address)…")
        _init_ray(address)
        started_here = True
    try:
        _check_cluster(cpus_per_trial, gpus_per_trial)
        trainable = tune.with_resources(
            _ray_trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial}
        )
        grid.run_until_done(specs, trainable, progress)
        if grid.write_failed:  # the trials still running were stopped: left for --resume
            raise grid.write_failed[0]
        if grid.interrupted["flag"]:
            raise KeyboardInterrupt
        finished = store.finished_trials()
        for spec in specs:  # a trial Ray lost without an error event
            if spec.key not in finished:
                store.add(_lost_trial_rows(spec, "no result from the worker"))
    finally:
        if started_here:
            ray.shutdown()


def _quiet_ray(address: str | None) -> None:
    """Ray's environment and loggers for a run: no usage report, no Tune logs or tracebacks
    (trial errors are rows and progress lines), workers at normal priority locally."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report over the network
    # Ray starts its workers at nice 15: on a machine with other work the trials then get
    # almost no CPU (measured: 1-5% each beside two busy processes) and wall-clock budgets
    # run out. A local run's trials compete as ordinary processes.
    if not address:
        os.environ.setdefault("RAY_worker_niceness", "0")
    # rows are stored by the run store; Tune's per-trial CSV/JSON/TensorBoard logs are not
    # needed, and writing them is per-trial overhead
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    import logging

    for name in ("ray", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)


class _Grid:
    """One run's Tune grid: stores each trial's rows as it reports them, stops on a failed
    write or Ctrl-C, and starts the grid again for the trials without rows when Ray stops
    it (at most :data:`RAY_GRID_RESTARTS` times in a row without a trial finishing)."""

    def __init__(self, store: RunStore, announce: _Local) -> None:
        self.store, self.announce = store, announce
        self.interrupted = {"flag": False}  # plain data: Tune pickles the callbacks
        self.write_failed: list[OSError] = []  # the run store could not write (a full disk)

    def store_rows(self, rows: list[dict[str, Any]]) -> bool:
        """Store ``rows``; on a failed write remember it, so that the run stops."""
        try:
            self.store.add(rows)
        except OSError as err:
            self.write_failed.append(err)
            return False
        return True

    def run_until_done(
        self, specs: Sequence[TrialSpec], trainable: Any, progress: Progress
    ) -> None:
        grid_errors = _ray_grid_errors()
        failures = 0  # Ray errors in a row without a trial finishing in between
        while True:
            finished = self.store.finished_trials()
            pending = [spec for spec in specs if spec.key not in finished]
            if not pending:
                return
            try:
                self._fit(pending, trainable)
                return
            except grid_errors as err:  # e.g. Ray's memory monitor killed a worker
                if self.interrupted["flag"] or self.write_failed:
                    return
                done = self.store.finished_trials()
                failures = 1 if len(done) > len(finished) else failures + 1
                line = str(err).strip().splitlines()
                reason = f"{type(err).__name__}: {line[0][:300] if line else ''}".rstrip(": ")
                if failures > RAY_GRID_RESTARTS:
                    error = f"Ray stopped the grid {failures} times in a row: {reason}"
                    for spec in (s for s in pending if s.key not in done):
                        rows = _lost_trial_rows(spec, error)
                        if self.store_rows(rows):
                            self.announce.target.finished(spec, rows, timed=False)
                    return
                progress(f"Ray stopped the grid ({reason}): starting it again for the "
                         "trials without rows")  # fmt: skip

    def _fit(self, pending: Sequence[TrialSpec], trainable: Any) -> None:
        from ray import tune

        tuner = tune.Tuner(
            trainable,
            param_space={"spec": tune.grid_search([asdict(s) for s in pending])},
            # a fresh worker process per trial (~10 s a trial, scripts/bench_runner.py):
            # reused workers grew by ~0.28 GB a trial in session 8, and even giving memory
            # back after each trial (give_back_memory) one sat 30-39% over its first
            # trial's RSS for 8 of 30 trials (docs/benchmarks.md, issue 36)
            tune_config=tune.TuneConfig(reuse_actors=False),
            run_config=tune.RunConfig(
                name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str((self.store.run_dir / "ray").resolve()),
                verbose=0,
                callbacks=[_tune_callback(self)],
                stop=_tune_stopper(self.write_failed),
                failure_config=tune.FailureConfig(max_failures=1),
            ),
        )
        with _graceful_interrupt(self.interrupted):
            try:
                tuner.fit()
            except (EOFError, OSError, pickle.UnpicklingError) as err:  # Ray's own files
                # (a full disk truncates them: EOFError, or 'pickle data was truncated')
                text = " ".join(str(err).split())[:200] or type(err).__name__
                raise OSError(
                    f"Ray could not write or read back its files under {self.store.run_dir / 'ray'}"
                    f" ({type(err).__name__}: {text}; a full disk?)"
                ) from None


def _tune_stopper(write_failed: list[OSError]) -> Any:
    """A Tune stopper that ends every trial once a write of the run store has failed."""
    from ray import tune

    class _StopOnWriteFailure(tune.Stopper):
        def __call__(self, trial_id: str, result: dict) -> bool:
            return bool(write_failed)

        def stop_all(self) -> bool:
            return bool(write_failed)

    return _StopOnWriteFailure()


def _tune_callback(grid: _Grid) -> Any:
    """The Tune callback that announces trials, forwards their events and stores their
    rows (a crashed worker's trial gets a ``crashed`` row)."""
    from ray import tune

    announce = grid.announce

    class _Rows(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            announce.target.started(TrialSpec(**trial.config["spec"]))

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            spec = TrialSpec(**trial.config["spec"])
            if "progress_json" in result:
                for event in json.loads(result["progress_json"]):
                    announce.target.event(spec, event)
            if "rows_json" not in result:
                return
            rows = json.loads(result["rows_json"])
            if not grid.store_rows(rows):
                return
            announce.target.finished(spec, rows)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if grid.interrupted["flag"] or grid.write_failed:  # stopped: left for --resume
                return
            spec = TrialSpec(**trial.config["spec"])
            error = str(trial.get_error() or "the worker process died").strip()
            lines = [line for line in error.splitlines() if line.strip()]
            text = f"worker crashed (retried once): {lines[-1] if lines else error}"
            rows = _lost_trial_rows(spec, text)
            if not grid.store_rows(rows):
                return
            announce.target.finished(spec, rows, timed=False)

    return _Rows()


class _Local:
    """Holds what the driver's Tune callback tells (a live view: threads, a terminal); Tune
    pickles its run config, callbacks included, and this leaves it out of the pickle."""

    def __init__(self, target: _Announcer) -> None:
        self.target = target

    def __getstate__(self) -> dict[str, Any]:
        return {"target": None}


@contextmanager
def _graceful_interrupt(flag: dict[str, bool]) -> Iterator[None]:
    """First Ctrl-C (or SIGHUP, SIGTERM): set ``flag["flag"]`` and ask Tune to stop its
    trials and return (Tune's SIGUSR1 handler); a second one raises ``KeyboardInterrupt``
    at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

    def on_sigint(signum: int, frame: Any) -> None:
        if flag["flag"]:
            raise KeyboardInterrupt
        flag["flag"] = True
        line = "interrupt: stopping the running trials (Ctrl-C again to force)"
        print(line, file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)

    # a closed terminal (SIGHUP) and `timeout` / a job scheduler (SIGTERM) stop the run as
    # Ctrl-C does; set after ray.init, whose handlers they replace for the grid's time
    stops = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)
    previous = {sig: signal.signal(sig, on_sigint) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if previous_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous_env


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
