"""How a trial's failures are recorded (status and error text) and how its stages are timed."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from benchmark.arena.protocol import BudgetExceeded, DivergedError


def error_text(err: BaseException) -> str:
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(err).__name__}: {err}{where}"[:2000]


def status_of(err: BaseException) -> str:
    if isinstance(err, BudgetExceeded):
        return "over_budget"
    if isinstance(err, DivergedError):
        return "diverged"
    return "failed"


class Timer:
    """Accumulates the wall seconds (``seconds``) and this process's CPU seconds, all its
    threads together (``cpu_seconds``), spent inside ``with timer:`` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        self._cpu0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.cpu_seconds += time.process_time() - self._cpu0
