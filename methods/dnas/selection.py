"""Choosing DNAS's final architectures from the policies sampled from ``P_θ`` (spec: Final
architectures): the most accurate and the most efficient of those that meet the
constraint, then the next most accurate, best first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from benchmark.arena import Policy


@dataclass
class Sample:
    """One policy drawn from ``P_θ`` (or its argmax) and what the search learnt of it.

    Attributes:
        name: ``"sample<i>"`` or ``"argmax"``.
        policy: every layer's bits (fixed layers included).
        cost: BitOPs per 32×32 image or weight bits (the task's metric).
        ratio: ``cost`` over the space's W8A8 reference.
        feasible: whether it meets the task's constraint.
        log_prob: ``log P_θ`` of its searchable layers' choices.
        val_top1: validation top-1 (percent) with the super-net's weights after BN
            recalibration (``None`` until scored; infeasible samples are not scored).
        weights: the state dict it was scored with (the ``inherit`` track's weights).
    """

    name: str
    policy: Policy
    cost: float
    ratio: float
    feasible: bool
    log_prob: float
    val_top1: float | None = None
    weights: dict[str, Tensor] | None = field(default=None, repr=False)

    def key(self) -> tuple[tuple[str, int, int], ...]:
        return tuple((n, b.w_bits, b.a_bits) for n, b in self.policy.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cost": self.cost,
            "ratio_w8a8": self.ratio,
            "feasible": self.feasible,
            "log_prob": self.log_prob,
            "val_top1": self.val_top1,
            "bits": bits_summary(self.policy),
        }


def bits_summary(policy: Policy) -> dict[str, str]:
    """``{"layer": "w4a2", ...}``: a policy in the log's short form."""
    return {n: f"w{b.w_bits}a{b.a_bits}" for n, b in policy.items()}


def unique(samples: list[Sample]) -> list[Sample]:
    """``samples`` without repeated policies, first occurrence kept."""
    seen: set[tuple] = set()
    out = []
    for s in samples:
        if s.key() not in seen:
            seen.add(s.key())
            out.append(s)
    return out


def choose(samples: list[Sample], count: int) -> list[tuple[str, Sample]]:
    """``(role, sample)`` of the final candidates, best first: the most accurate feasible
    one (``"most-accurate"``), the cheapest feasible one (``"most-efficient"``; ties: the
    more accurate), then the next most accurate (``"next"``) up to ``count`` in all (both
    of the first two are kept even if ``count`` is 1). Only scored, feasible samples."""
    scored = [s for s in samples if s.feasible and s.val_top1 is not None]
    if not scored:
        return []
    ranked = sorted(scored, key=lambda s: (-s.val_top1, s.cost))
    chosen = [("most-accurate", ranked[0])]
    efficient = min(scored, key=lambda s: (s.cost, -s.val_top1))
    if efficient is not ranked[0]:
        chosen.append(("most-efficient", efficient))
    for s in ranked:
        if len(chosen) >= count:
            break
        if all(s is not c for _, c in chosen):
            chosen.append(("next", s))
    return chosen
