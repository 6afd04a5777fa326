"""What ``run`` shows while its trials go: a live view on a terminal, plain lines elsewhere.

:class:`RunView` takes the run's lines (``view.line``) and its trials' events (``view(key,
event)``: :data:`benchmark.harness.executors.TrialEvents`).

- **Terminal** (rich ``Live``, redrawn twice a second): one line per running trial (method,
  task, stage, progress in the phase, samples of the budget, last metrics, ETA), finished
  trials printed above it with their one-line summary (failed ones in red), a footer with
  trials done / running / queued, the elapsed time and the run's ETA. rich rather than
  tqdm: several trials' lines at once, each with its own fields, and lines printed above.
- **Not a terminal** (a file, CI, ``nohup``): plain lines, each after its wall-clock time
  (``HH:MM:SS``), no control characters; one per trial's stage change and at most one
  progress line per trial per ``plain_every`` seconds.
- ``quiet``: the run's warnings, errors and final summary only; ``verbose``: the methods'
  log lines too.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from benchmark.harness.trial_events import describe, duration, eta_seconds, eta_text


@dataclass
class _Trial:
    index: int
    label: str
    started: float | None = None
    event: dict[str, Any] = field(default_factory=dict)
    last_plain: float = 0.0
    last_stage: str | None = None
    seconds: float | None = None  # its wall seconds, once finished

    @property
    def running(self) -> bool:
        return self.started is not None and self.seconds is None


def _task_of(label: str) -> tuple[str, str]:
    """``"uniform on mbv3-cifar/digits bitops<=0.3 seed 0"`` → ``(method, task)``."""
    method, _, task = label.partition(" on ")
    return method, task


class RunView:
    """The run's output while it goes (see the module's docstring).

    Args:
        stream: where to write (default ``sys.stderr``).
        live: the terminal view (default: when ``stream`` is a terminal).
        quiet / verbose: as ``run --quiet`` / ``--verbose``.
        plain_every: least seconds between two progress lines of a trial, not a terminal.
        clock: monotonic seconds (tests pass a fake one).
        stamp: the wall-clock time a plain line starts with (default ``HH:MM:SS``).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool | None = None,
        quiet: bool = False,
        verbose: bool = False,
        plain_every: float = 60.0,
        clock: Any = time.monotonic,
        stamp: Any = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.quiet, self.verbose = quiet, verbose
        self.plain_every = plain_every
        self.clock = clock
        self.stamp = stamp or (lambda: time.strftime("%H:%M:%S"))
        self.trials: dict[str, _Trial] = {}
        self.failed = 0
        self.started = clock()
        self.most_running = 1
        self._lock = threading.RLock()
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.is_live = (isatty if live is None else live) and not quiet
        self._live: Any = None
        self._console: Any = None
        if self.is_live:
            from rich.console import Console

            self._console = Console(file=self.stream, force_terminal=True, highlight=False)

    # --- the run's side ------------------------------------------------------------------
    def __enter__(self) -> RunView:
        if self.is_live:
            from rich.live import Live

            self._live = Live(
                self,
                console=self._console,
                refresh_per_second=2,
                transient=True,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def detach(self) -> None:
        """The terminal is gone (a hang-up): stop the live view and write nothing more."""
        with self._lock:
            live, self._live = self._live, None
            self._console, self.is_live = None, False
            self.stream = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the run
        if live is not None:
            try:
                live.stop()
            except OSError:  # its last redraw has nowhere to go
                pass

    def line(self, text: str, style: str | None = None) -> None:
        """A line of the run (a warning, the final summary), printed in every mode; a
        stream that can no longer be written (a closed terminal) is dropped, not raised."""
        with self._lock:
            try:
                if self._console is not None:
                    self._console.print(text, style=style, markup=False, highlight=False)
                else:
                    print(f"{self.stamp()} {text}", file=self.stream, flush=True)
            except OSError:
                self._console, self.stream = None, open(os.devnull, "w")  # noqa: SIM115

    def log_handler(self, level: int = logging.WARNING) -> logging.Handler:
        """A logging handler that prints through the view (above the live lines)."""
        view = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                view.line(self.format(record))

        handler = _Handler(level)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        return handler

    def __call__(self, key: str, event: dict[str, Any]) -> None:
        """One event of the run or of trial ``key``."""
        kind = event.get("kind")
        with self._lock:
            if kind == "run":
                if not self.quiet:
                    self.line(event["line"])
            elif kind == "queued":
                for i, (trial_key, label) in enumerate(event["trials"], 1):
                    self.trials[trial_key] = _Trial(i, label)
            elif kind == "log":
                if self.verbose and not self.quiet:
                    self.line(event["text"], style="dim")
            elif key in self.trials:
                self._trial_event(self.trials[key], kind, event)

    def _trial_event(self, trial: _Trial, kind: Any, event: dict[str, Any]) -> None:
        now = self.clock()
        prefix = f"[{trial.index}/{len(self.trials)}] {trial.label}"
        if kind == "start":
            trial.started = now
            running = sum(1 for t in self.trials.values() if t.running)
            self.most_running = max(self.most_running, running)
            if not self.quiet and not self.is_live:
                self.line(f"{prefix}: running")
        elif kind == "end":
            trial.seconds = float(event.get("seconds", 0.0))
            self.failed += not event.get("ok", True)
            if not self.quiet:
                self.line(event["line"], style=None if event.get("ok", True) else "red")
        else:  # progress or stage
            trial.event = event
            stage = event.get("stage")
            if self.quiet or self.is_live:
                return
            if stage != trial.last_stage or now - trial.last_plain >= self.plain_every:
                trial.last_stage, trial.last_plain = stage, now
                self.line(f"{prefix}: {describe(event)}")

    # --- reading the state ---------------------------------------------------------------
    def counts(self) -> tuple[int, int, int]:
        """Trials ``(done, running, queued)``."""
        with self._lock:
            done = sum(1 for t in self.trials.values() if t.seconds is not None)
            running = sum(1 for t in self.trials.values() if t.running)
            return done, running, len(self.trials) - done - running

    def run_eta(self) -> float | None:
        """Seconds until the run ends: the mean finished trial's wall time for each trial
        queued and what the running ones have left of it (at least their current phase's
        ETA), over the trials run at once (``None`` before a trial has finished)."""
        with self._lock:
            took = [t.seconds for t in self.trials.values() if t.seconds is not None]
            if not took:
                return None
            mean = sum(took) / len(took)
            now = self.clock()
            left = 0.0
            for t in self.trials.values():
                if t.seconds is not None:
                    continue
                if t.started is None:
                    left += mean
                else:  # at least what its current phase has left
                    left += max(mean - (now - t.started), eta_seconds(t.event) or 0.0)
            return left / self.most_running

    def footer(self) -> str:
        done, running, queued = self.counts()
        failed = f" ({self.failed} not ok)" if self.failed else ""
        return (
            f"{done} done{failed} · {running} running · {queued} queued · "
            f"elapsed {duration(self.clock() - self.started)} · {self.run_eta_text(running)}"
        )

    def run_eta_text(self, running: int) -> str:
        """The footer's ETA: never a bare ``?`` nor a ``0s`` while trials still run."""
        eta = self.run_eta()
        if eta is None:
            return "ETA after the first trial ends"
        if running and eta < 1:
            return "ETA: the running trials are past the mean trial's time"
        return f"ETA {duration(eta)}"

    def rows(self) -> list[list[str]]:
        """The live lines' cells: trial, task, stage, progress, samples, metrics, ETA."""
        out = []
        with self._lock:
            for t in self.trials.values():
                if not t.running:
                    continue
                e = t.event
                method, task = _task_of(t.label)
                stage = e.get("stage") or "starting"
                if e.get("phase") and e["phase"] != stage:
                    stage += f" · {e['phase']}"
                step = ""
                if e.get("total"):
                    step = f"{e['done']:,.0f}/{e['total']:,.0f} {e.get('unit', '')}".rstrip()
                budget = e.get("budget")
                samples = f"{budget['samples']:,}/{budget['max_samples']:,}" if budget else ""
                values = " ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in list((e.get("metrics") or {}).items())[:3]
                )
                eta = eta_text(e) if eta_seconds(e) is not None else "—"
                out.append([method, task, stage, step, samples, values, eta])
        return out

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
        for name, style in (
            ("trial", "bold"),
            ("task", ""),
            ("stage", "cyan"),
            ("progress", ""),
            ("samples", ""),
            ("last", ""),
            ("ETA", ""),
        ):
            table.add_column(name, style=style, no_wrap=True, overflow="ellipsis")
        for cells in self.rows():
            table.add_row(*cells)
        return Group(table, Text(self.footer(), style="bold"))
