"""A trial's search records on disk, beside its ``log.txt``: ``search_log.json``, what the
method's :class:`SearchResult` ``log`` holds (e.g. DNAS's samples and feasible share, HAQ's
episodes, QFA's predictor), and ``anytime.json``, every ``ctx.score`` and ``ctx.offer`` with
the samples and seconds the search had spent then, so that a claim, an audit or an anytime
curve can read them later."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from benchmark.arena.files import atomic_write_text

SEARCH_LOG = "search_log.json"
"""The file name in the trial's folder."""

log = logging.getLogger(__name__)


def write_search_log(trial_dir: Path, search_log: Any) -> Path | None:
    """Write ``search_log`` to ``trial_dir / search_log.json`` atomically: JSON, numpy and
    torch values as numbers or lists, other values as their text, NaN and infinities as
    ``null``. The path, or ``None`` when it could not be written (logged: the log is a
    record, never worth a trial)."""
    path = Path(trial_dir) / SEARCH_LOG
    try:
        text = json.dumps(_finite(search_log), indent=1, sort_keys=True, default=_plain)
        atomic_write_text(path, text + "\n")
    except (OSError, TypeError, ValueError) as err:
        log.warning("the search log was not written to %s: %s", path, err)
        return None
    return path


ANYTIME = "anytime.json"
"""The trial's anytime record (``ctx.anytime``), in its folder."""


def write_anytime(trial_dir: Path, events: list[dict[str, Any]]) -> Path | None:
    """Write the search's anytime record to ``trial_dir / anytime.json`` (``{"events":
    [...]}``: each ``ctx.score`` and ``ctx.offer`` with ``samples`` charged and
    ``search_seconds`` then, ``val_top1`` in percent where known); ``None`` when it could
    not be written (logged, as the search log)."""
    path = Path(trial_dir) / ANYTIME
    try:
        text = json.dumps({"events": _finite(events)}, indent=None, default=_plain)
        atomic_write_text(path, text + "\n")
    except (OSError, TypeError, ValueError) as err:
        log.warning("the anytime record was not written to %s: %s", path, err)
        return None
    return path


def read_anytime(trial_dir: Path) -> list[dict[str, Any]]:
    """The anytime record a trial wrote (its events), or ``[]``."""
    path = Path(trial_dir) / ANYTIME
    return json.loads(path.read_text())["events"] if path.exists() else []


def read_search_log(trial_dir: Path) -> Any:
    """The search log a trial wrote, or ``None`` when it wrote none."""
    path = Path(trial_dir) / SEARCH_LOG
    return json.loads(path.read_text()) if path.exists() else None


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float as ``None`` (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """A numpy or torch scalar or array as a number or a list; anything else as text."""
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    return str(value)
