"""A trial's search log on disk: what the method's :class:`SearchResult` ``log`` holds (e.g.
DNAS's samples and feasible share, HAQ's episodes, QFA's predictor), kept beside the
trial's ``log.txt`` as ``search_log.json`` so that a claim or an audit can read it later."""

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
