"""Statistics over seeds: the mean, its spread and its confidence interval."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def t_half_width(values: Iterable[float], confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t confidence interval of the mean of ``values`` (NaN
    dropped): ``t_{(1+confidence)/2, n-1} · s / √n`` with ``s`` the sample std (ddof=1).

    NaN for fewer than two values (one seed has no interval); 0 when they are all equal.
    """
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size < 2:
        return float("nan")
    sem = float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return float(stats.t.ppf((1 + confidence) / 2, arr.size - 1) * sem)
