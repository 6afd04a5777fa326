"""How a trial's failures are recorded: the row's ``status`` and ``error`` text."""

from __future__ import annotations

import traceback
from pathlib import Path

from benchmark.arena.protocol import BudgetExceeded, DivergedError


def error_text(err: BaseException) -> str:
    """``Type: message (at file:line)`` of ``err``, at most 2,000 characters."""
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(err).__name__}: {err}{where}"[:2000]


def status_of(err: BaseException) -> str:
    """The row status of a failure: ``over_budget``, ``diverged`` or ``failed``."""
    if isinstance(err, BudgetExceeded):
        return "over_budget"
    if isinstance(err, DivergedError):
        return "diverged"
    return "failed"
