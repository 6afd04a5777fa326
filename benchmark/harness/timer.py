"""How the harness times a trial's stages: wall and CPU seconds of ``with`` blocks."""

from __future__ import annotations

import time


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
