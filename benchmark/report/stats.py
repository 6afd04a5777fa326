"""Statistics over seeds: the mean, its spread and its confidence interval, and the paired
comparison of two methods over the same seeds."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

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


@dataclass(frozen=True)
class PairedDifference:
    """A paired comparison of two methods over the seeds both have a result for.

    Attributes:
        n: pairs (seeds) compared.
        mean: mean of ``a - b`` over the pairs (the unit of the values, e.g. % top-1).
        ci95: half-width of the Student-t interval of that mean (:func:`t_half_width` of the
            differences; NaN for fewer than two pairs, 0 when every difference is equal).
        p_value: two-sided p-value of the paired t-test (``scipy.stats.ttest_rel``) that the
            mean difference is 0; NaN for fewer than two pairs or differences without spread
            (the test is undefined there).
    """

    n: int
    mean: float
    ci95: float
    p_value: float


SPREAD_NOISE = 1e-9
"""Relative spread of paired differences taken as none: 98.70 − 98.98 on three seeds
differs from itself by float rounding (~1e-15), which a t-test reads as p ≈ 1e-27."""


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> PairedDifference:
    """Paired comparison of ``a`` against ``b`` (equal length, paired by position, e.g. by
    seed); pairs with a NaN on either side are dropped. See :class:`PairedDifference`."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in length: {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    diff = x[keep] - y[keep]
    n = int(diff.size)
    if n == 0:
        return PairedDifference(0, float("nan"), float("nan"), float("nan"))
    mean = float(diff.mean())
    p_value = float("nan")
    spread = float(diff.std(ddof=1)) if n >= 2 else 0.0
    if n >= 2 and spread > SPREAD_NOISE * max(1.0, abs(mean)):  # else: no spread, no t-test
        with warnings.catch_warnings():  # nearly equal differences: scipy's precision note
            warnings.simplefilter("ignore", RuntimeWarning)
            p_value = float(stats.ttest_rel(x[keep], y[keep]).pvalue)
    return PairedDifference(n, mean, t_half_width(diff, confidence), p_value)


POWER = 0.8
"""Power at which :func:`min_detectable_difference` is stated."""


def min_detectable_difference(
    sd: float, n: int, *, alpha: float = 1 - CONFIDENCE, power: float = POWER
) -> float:
    """The smallest true mean paired difference that a two-sided paired t-test at level
    ``alpha`` detects with probability ``power`` over ``n`` pairs whose differences have
    standard deviation ``sd`` (the unit of ``sd``, e.g. percentage points).

    Exact under normal differences: the power of the test is that of a noncentral t with
    ``n − 1`` degrees of freedom and noncentrality ``δ·√n / sd``, solved for δ. About
    ``(t_{1−α/2} + t_{power})·sd/√n`` for large ``n``. NaN for ``n < 2`` or a non-finite
    ``sd``; 0 when ``sd`` is 0.
    """
    if n < 2 or not math.isfinite(sd) or sd < 0:
        return float("nan")
    if sd == 0:
        return 0.0
    df = n - 1
    critical = float(stats.t.ppf(1 - alpha / 2, df))

    def shortfall(delta: float) -> float:
        nc = delta * math.sqrt(n) / sd
        lower = float(stats.nct.cdf(-critical, df, nc))  # tiny for δ > 0; NaN on underflow
        upper = float(stats.nct.sf(critical, df, nc))
        return upper + (lower if math.isfinite(lower) else 0.0) - power

    high = sd
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-9 * sd))


def pooled_sd(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """The pooled standard deviation of several samples (each with its own mean), and its
    degrees of freedom: ``√(Σ (nᵢ−1)·sᵢ² / Σ (nᵢ−1))`` over samples of two or more finite
    values. ``(NaN, 0)`` when no sample has two."""
    sum_sq, dof = 0.0, 0
    for values in groups:
        arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
        if arr.size >= 2:
            sum_sq += float(((arr - arr.mean()) ** 2).sum())
            dof += arr.size - 1
    return (math.sqrt(sum_sq / dof), dof) if dof else (float("nan"), 0)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given: the family is the finite
    values (NaN stays NaN and is not counted). The k-th smallest of m becomes
    ``max over j ≤ k of min(1, (m − j + 1)·p_(j))``, so a comparison is significant at level
    α after the adjustment exactly when Holm's step-down procedure rejects it."""
    values = [float(p) for p in p_values]
    finite = sorted((p, i) for i, p in enumerate(values) if math.isfinite(p))
    adjusted = [float("nan")] * len(values)
    running, m = 0.0, len(finite)
    for k, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted
