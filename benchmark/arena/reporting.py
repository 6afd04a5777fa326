"""Progress of a trial as it runs: the events the shared recipes send, for the live view
and the trial's log file, without a method doing anything.

The harness opens a :class:`Reporter` for each trial (:func:`reporting`); the recipes and
the toolkit call the module's functions, which do nothing outside a trial:

- :func:`phase` (a context manager): a step of the work with its own progress, e.g. a
  training loop's ``total`` steps (``finetune``), a recalibration, an evaluation;
- :func:`advance`: ``done`` of the phase's ``total`` units, with the last metrics (loss);
- :func:`metrics`: values to show, e.g. a method's ``ctx.report(...)``.

The harness's own level, the trial's *stage* (FP pretraining, search, retrain finetune of
candidate k/n, ...), is set with :meth:`Reporter.stage`.

Every event is a snapshot of the trial's whole state (a plain, JSON-ready ``dict``), so
that dropping one loses nothing but its moment. Throttled at the source: a stage change
always passes; a training phase's start and last step pass once ``burst`` seconds have
gone by since the last event (``milestones``); anything else once ``interval`` seconds have. What is
held back goes with the next event that passes (:meth:`Reporter.flush`, called at a stage
change and at the end, sends it at once); a training phase's last state, if held back, is
sent before the next event.
Times are wall seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

Sink = Callable[[dict[str, Any]], None]
"""Receives each event that passes the throttle."""

Budget = Callable[[], dict[str, float]]
"""What the budget meter has charged: ``samples``, ``max_samples``, ``seconds``, ``max_seconds``."""

_current: ContextVar[Reporter | None] = ContextVar("mpqbench_progress", default=None)


@dataclass
class _Phase:
    name: str
    total: float | None
    unit: str
    started: float
    milestones: bool
    done: float = 0.0


@dataclass
class Reporter:
    """The progress state of one trial and the throttle in front of its ``sink``.

    Args:
        sink: called with each event that passes.
        interval: least seconds between two step or metric events.
        burst: least seconds between two events when a training phase starts or ends.
        clock: monotonic seconds (tests pass a fake one).
    """

    sink: Sink
    interval: float = 0.5
    burst: float = 0.1
    clock: Callable[[], float] = time.monotonic
    budget: Budget | None = None
    _stage: str = field(default="", init=False)
    _stage_started: float = field(default=0.0, init=False)
    _phases: list[_Phase] = field(default_factory=list, init=False)
    _metrics: dict[str, Any] = field(default_factory=dict, init=False)
    _last_sent: float = field(default=-math.inf, init=False)
    _pending: bool = field(default=False, init=False)  # the state has changes not sent
    _held: dict[str, Any] | None = field(default=None, init=False)  # a closed phase's last
    _started: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._started = self._stage_started = self.clock()

    # the harness's level --------------------------------------------------------------
    def stage(self, name: str, *, budget: Budget | None = None) -> None:
        """Start the trial's stage ``name`` (its phases and metrics end); always sent.
        ``budget`` reports the samples charged during this stage (the search's)."""
        self.flush()  # what the last stage held back (its last metrics) goes first
        self._stage, self._stage_started = name, self.clock()
        self._phases.clear()
        self._metrics.clear()
        self.budget = budget
        self._send("stage")

    def flush(self) -> None:
        """Send what the throttle held back, if anything."""
        if self._pending:
            self._send("progress")
        elif self._held is not None:
            self.sink(self._held)
            self._held = None

    # the recipes' level ---------------------------------------------------------------
    def open_phase(self, name: str, total: float | None, unit: str, milestones: bool) -> None:
        if unit != "steps":  # an evaluation: the last training loss is not its figure
            for key in [k for k in self._metrics if "loss" in k]:
                del self._metrics[key]
        self._phases.append(_Phase(name, total, unit, self.clock(), milestones))
        self._offer(self.burst if milestones else self.interval)

    def close_phase(self) -> None:
        if self._phases and self._phases[-1].milestones and self._pending:
            # its last state (its last step) was held back: it goes before the next event
            self._held = {"kind": "progress", **self.snapshot()}
            self._pending = False
        if self._phases:
            self._phases.pop()

    def advance(self, done: float, total: float | None = None, **values: Any) -> None:
        if not self._phases:  # outside a phase: a phase of the stage itself
            self._phases.append(_Phase(self._stage, total, "steps", self._stage_started, False))
        current = self._phases[-1]
        current.done = done
        if total is not None:
            current.total = total
        self._metrics.update(_plain(values))
        last = current.milestones and current.total is not None and done >= current.total
        self._offer(self.burst if last else self.interval)

    def metrics(self, **values: Any) -> None:
        self._metrics.update(_plain(values))
        self._offer(self.interval)

    # events ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The trial's state now: stage, innermost phase, metrics, budget, seconds."""
        now = self.clock()
        event: dict[str, Any] = {
            "stage": self._stage,
            "stage_seconds": now - self._stage_started,
            "trial_seconds": now - self._started,
            "metrics": dict(self._metrics),
        }
        if self._phases:
            p = self._phases[-1]
            event.update(
                phase=p.name, done=p.done, total=p.total, unit=p.unit, phase_seconds=now - p.started
            )
        if self.budget is not None:
            event["budget"] = self.budget()
        return event

    def _offer(self, spacing: float) -> None:
        if self.clock() - self._last_sent >= spacing:
            self._send("progress")
        else:
            self._pending = True

    def _send(self, kind: str) -> None:
        if self._held is not None:
            self.sink(self._held)
        self._last_sent = self.clock()
        self._pending, self._held = False, None
        self.sink({"kind": kind, **self.snapshot()})


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as JSON-ready numbers and texts (tensors and numpy scalars as floats)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, bool | int | str) or value is None:
            out[name] = value
        else:
            try:
                out[name] = float(value)
            except (TypeError, ValueError):
                out[name] = str(value)[:80]
    return out


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Send this context's progress (this thread's, and tasks it starts) to ``reporter``."""
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)
        reporter.flush()


def current() -> Reporter | None:
    """The reporter of the trial running here, or ``None``."""
    return _current.get()


@contextmanager
def phase(
    name: str, total: float | None = None, unit: str = "steps", *, milestones: bool = False
) -> Iterator[None]:
    """A phase of ``total`` ``unit`` (``None``: not counted); the outer phase takes over
    again when it ends. ``milestones``: its start and its last step pass the throttle at
    the shorter ``burst`` spacing (a training loop; not a many-times-a-second evaluation)."""
    reporter = _current.get()
    if reporter is None:
        yield
        return
    reporter.open_phase(name, total, unit, milestones)
    try:
        yield
    finally:
        reporter.close_phase()


def advance(done: float, total: float | None = None, **values: Any) -> None:
    """``done`` units of the current phase (of ``total``) and its latest ``values``."""
    reporter = _current.get()
    if reporter is not None:
        reporter.advance(done, total, **values)


def metrics(**values: Any) -> None:
    """Values to show beside the trial's progress (numbers or short texts)."""
    reporter = _current.get()
    if reporter is not None:
        reporter.metrics(**values)
