"""Stops a trial that runs past its wall-time limit.

:func:`time_limit` raises :class:`TrialTimeout` inside the trial's thread when the
limit passes: through ``SIGALRM`` in the main thread (the serial executor), through an
asynchronous exception in any other thread (a Ray Tune function trainable runs in one).
Both reach Python code, sleeps included (a signal interrupts ``time.sleep``; the
asynchronous exception is seen between two bytecodes, so a sleep or a long C call ends
first). Code stuck in C is caught by ``on_hard_timeout``, called ``grace`` seconds
later from a watchdog thread: in a worker process it writes the trial's rows and ends
the process (the serial executor passes none, as it must not end the driver).
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from benchmark.arena.protocol import BudgetExceeded, SearchIgnoredStop, TrialTimeout


def _raise_in_thread(thread_id: int, exc: type[BaseException] = TrialTimeout) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))


@contextmanager
def time_limit(
    seconds: float | None,
    *,
    on_hard_timeout: Callable[[], None] | None = None,
    grace: float = 10.0,
) -> Iterator[None]:
    """Raise :class:`TrialTimeout` in this thread after ``seconds`` (wall seconds).

    ``None`` or a value ``<= 0`` means no limit. ``on_hard_timeout`` is called after
    ``seconds + grace`` if the block is still running then.
    """
    if not seconds or seconds <= 0:
        yield
        return
    lock = threading.Lock()
    state = {"done": False}
    thread_id = threading.get_ident()
    in_main = threading.current_thread() is threading.main_thread()
    timers: list[threading.Timer] = []

    def soft() -> None:
        with lock:
            if not state["done"]:
                _raise_in_thread(thread_id)

    def hard() -> None:
        with lock:
            if state["done"]:
                return
        if on_hard_timeout is not None:
            on_hard_timeout()

    previous = None
    if in_main:

        def on_alarm(signum: int, frame: object) -> None:
            if not state["done"]:
                raise TrialTimeout

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    else:
        timers.append(threading.Timer(seconds, soft))
    if on_hard_timeout is not None:
        timers.append(threading.Timer(seconds + grace, hard))
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        with lock:
            state["done"] = True
        for timer in timers:
            timer.cancel()
        if in_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


SEARCH_GRACE_SECONDS = 10.0
"""How long a search may run past its wall-clock budget's stop before it is ``over_budget``."""


class _WallClockStop(BudgetExceeded):
    """The search's wall-clock budget is spent (raised in the search's thread)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or ("the search's wall-clock budget is spent",)))


@contextmanager
def search_stop(seconds: float, *, grace: float = SEARCH_GRACE_SECONDS) -> Iterator[None]:
    """Stop a search that outlives its wall-clock budget: after ``seconds`` raise
    :class:`~benchmark.arena.protocol.BudgetExceeded` in this thread (the normal stop,
    as ``charge`` raises it), after ``seconds + grace``
    :class:`~benchmark.arena.protocol.SearchIgnoredStop` (a search that swallowed the
    stop). Both arrive between two Python bytecodes: a long C call finishes first.
    Timer threads, so it nests inside :func:`time_limit`'s ``SIGALRM``.
    """
    lock = threading.Lock()
    done = False
    thread_id = threading.get_ident()

    def fire(exc: type[BaseException]) -> Callable[[], None]:
        def go() -> None:
            with lock:
                if not done:
                    _raise_in_thread(thread_id, exc)

        return go

    timers = [
        threading.Timer(max(0.0, seconds), fire(_WallClockStop)),
        threading.Timer(max(0.0, seconds) + grace, fire(SearchIgnoredStop)),
    ]
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        with lock:
            done = True
        for timer in timers:
            timer.cancel()
