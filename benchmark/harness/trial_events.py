"""A trial's progress on its way out: its log file, and the events the live view shows.

Inside the trial (:func:`trial_progress`) a :class:`~benchmark.arena.reporting.Reporter`
sends each event that passes its throttle to the trial's log file
(``<run>/trials/<trial>/log.txt``, one plain line each, with the trial's ``mpqbench`` log
records at INFO; ``tail -f`` follows it) and to ``send`` (the serial executor: the view
itself; Ray: :class:`BackgroundSender` to ``ray.tune.report``).

Events are the reporter's snapshots (``stage``, ``phase``, ``done``/``total``/``unit``,
``metrics``, ``budget``, seconds) plus ``{"kind": "log", "text": ...}`` for log records.
:func:`describe` and :func:`eta_seconds` read them; the CLI's view uses both.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from benchmark.arena import reporting
from benchmark.arena.protocol import BudgetMeter

LOG_NAME = "log.txt"
"""The trial's log file, in its trial folder."""

Send = Callable[[dict[str, Any]], None]

STAGE_FP = "set-up and FP pretraining"  # data, the cached FP start (trained if not cached)
STAGE_SEARCH = "search"


def stage_retrain(k: int, n: int) -> str:
    """The stage of candidate ``k`` of ``n``'s retrain track (``k`` from 1)."""
    return f"retrain finetune {k}/{n}"


def stage_inherit(k: int, n: int) -> str:
    """The stage of candidate ``k`` of ``n``'s inherit track (``k`` from 1)."""
    return f"inherit evaluation {k}/{n}"


def budget_of(meter: BudgetMeter) -> reporting.Budget:
    """What ``meter`` has charged, as the reporter's ``budget`` reads it."""
    budget = meter.budget

    def read() -> dict[str, float]:
        return {
            "samples": meter.samples,
            "max_samples": budget.max_search_samples,
            "seconds": meter.seconds,
            "max_seconds": budget.max_search_seconds,
        }

    return read


# --- reading events -----------------------------------------------------------------------
def eta_seconds(event: dict[str, Any]) -> float | None:
    """Seconds left in the event's search: the first of its budget's limits to be reached
    (samples at their rate so far, or the wall seconds left; an upper bound, a search may
    end sooner) unless it is in a training phase; else in its phase (from its rate so
    far); ``None`` when neither says."""
    done, total, took = event.get("done"), event.get("total"), event.get("phase_seconds")
    budget = event.get("budget")
    training = event.get("unit") == "steps"
    if done and total and took is not None and total > done and (training or not budget):
        return took * (total - done) / done
    if not budget:
        return None
    left = []
    if budget["max_samples"] and budget["samples"] > 0:
        rate = budget["samples"] / max(event["stage_seconds"], 1e-9)
        left.append(max(budget["max_samples"] - budget["samples"], 0) / rate)
    if budget["max_seconds"] and math.isfinite(budget["max_seconds"]):
        left.append(max(budget["max_seconds"] - budget["seconds"], 0.0))
    return min(left) if left else None


def eta_text(event: dict[str, Any]) -> str:
    """The event's ETA as text: ``3m05s``, ``≤3m05s`` for a search's budget, ``?``."""
    eta = eta_seconds(event)
    in_phase = event.get("done") and (event.get("total") or 0) > event["done"]
    training = in_phase and event.get("unit") == "steps"
    bound = "" if training or not event.get("budget") or eta is None else "≤"
    return bound + duration(eta)


def duration(seconds: float | None) -> str:
    """``seconds`` as ``42s``, ``3m05s`` or ``2h07m`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def describe(event: dict[str, Any]) -> str:
    """The event as one plain line: stage, phase ``done/total unit``, samples of the
    budget, the last metrics and the ETA (ASCII only but for ``·``)."""
    parts = [event.get("stage") or "starting"]
    name = event.get("phase")
    if name and name != parts[0]:
        parts.append(name)
    done, total = event.get("done"), event.get("total")
    if total:
        parts.append(f"{_number(done)}/{_number(total)} {event.get('unit', '')}".rstrip())
    budget = event.get("budget")
    if budget:
        parts.append(f"{budget['samples']:,}/{budget['max_samples']:,} samples")
    values = event.get("metrics") or {}
    if values:
        parts.append(" ".join(f"{k} {_number(v)}" for k, v in list(values.items())[:4]))
    if eta_seconds(event) is not None:
        parts.append(f"ETA {eta_text(event)}")
    return " · ".join(parts)


# --- inside the trial ---------------------------------------------------------------------
class _LogRecords(logging.Handler):
    """The trial's ``mpqbench`` log records, as ``log`` events."""

    def __init__(self, out: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(logging.INFO)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.out({"kind": "log", "text": f"{record.name}: {record.getMessage()}"})
        except Exception:  # noqa: BLE001 - a log line never takes the trial down
            self.handleError(record)


@contextmanager
def trial_progress(
    trial_dir: Path, send: Send | None, *, interval: float = 0.5, burst: float = 0.1
) -> Iterator[reporting.Reporter]:
    """Report this trial's progress (and its ``mpqbench`` INFO log records) to
    ``trial_dir/log.txt`` and to ``send``, throttled as in
    :class:`~benchmark.arena.reporting.Reporter` (``interval``/``burst`` seconds)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    with open(trial_dir / LOG_NAME, "a", buffering=1, encoding="utf-8") as file:
        log = _LogFile(file)

        def out(event: dict[str, Any]) -> None:
            log.write(event)
            if send is not None:
                try:
                    send(event)
                except Exception:  # noqa: BLE001 - a broken view never takes a trial down
                    pass

        logger = logging.getLogger("mpqbench")
        handler, level = _LogRecords(out), logger.level
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        try:
            with reporting.reporting(reporting.Reporter(out, interval, burst)) as reporter:
                yield reporter
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)


class _LogFile:
    """The trial's ``log.txt``: one line per event; a failed write (a full disk) stops the
    writing, not the trial."""

    def __init__(self, file: TextIO) -> None:
        self.file: TextIO | None = file
        self.lock = threading.Lock()

    def write(self, event: dict[str, Any]) -> None:
        text = event["text"] if event.get("kind") == "log" else describe(event)
        with self.lock:
            if self.file is None:
                return
            try:
                self.file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
            except OSError:
                self.file = None


class BackgroundSender:
    """Sends events from a thread of its own, so that a training step never waits for the
    transport (``ray.tune.report`` blocks until the driver takes the result: ~30 ms
    measured on a loaded 2-core machine).

    Each send is a list of events: every stage change and log record since the last one,
    then the newest snapshot; sends are at least ``spacing`` seconds apart.
    :meth:`close` sends what is left and stops the thread.
    """

    def __init__(self, deliver: Callable[[list[dict[str, Any]]], None], spacing: float = 0.5):
        self.deliver = deliver
        self.spacing = spacing
        self._kept: list[dict[str, Any]] = []  # stage changes and log lines, in order
        self._latest: dict[str, Any] | None = None
        self._closed = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="mpqbench-progress", daemon=True)
        self._thread.start()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._wake:
            if event.get("kind") in ("stage", "log"):
                if len(self._kept) < 200:  # a flood of log lines: the rest only in log.txt
                    self._kept.append(event)
                self._latest = None if event.get("kind") == "stage" else self._latest
            else:
                self._latest = event
            self._wake.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _take(self) -> list[dict[str, Any]]:
        events = [*self._kept, *([self._latest] if self._latest else [])]
        self._kept, self._latest = [], None
        return events

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._kept or self._latest or self._closed):
                    self._wake.wait()
                events, closed = self._take(), self._closed
            if events:
                try:
                    self.deliver(events)
                except Exception:  # noqa: BLE001 - the trial goes on without its view
                    return
            if closed:
                return
            time.sleep(self.spacing)
