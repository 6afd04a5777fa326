"""A method's own fixed-layer convention, when the task's limit allows it.

The shared cost model counts a full-precision layer at 32×32 BitOPs (DESIGN §1), so a
method whose original keeps its first conv (and SE convs, classifier) FP, as OQAT and QFA
do, cannot meet a tight BitOPs limit on ``mbv3-cifar``: the FP stem alone costs about
0.65× the space's W8A8 reference. Both papers cost FP layers as 8-bit ones
(``MACs·min(b_w,8)·min(b_a,8)``); the benchmark does not, since that would make an FP layer
free next to a method that quantizes it.

The protocol's rule (docs/protocol.md, "Fixed layers"): such a method keeps its own
convention whenever the cheapest candidate under it meets the limit; otherwise it takes
the space's convention (8-bit stem and classifier on ``mbv3-cifar``), and its log and every
row's ``fixed`` column say which was used. ``mode="method"`` insists on the method's own
convention (an unreachable limit is then refused before any training), ``mode="space"``
always uses the space's.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.arena.cost import CostReport
from benchmark.arena.protocol import Constraint
from benchmark.arena.spaces.base import SearchSpace
from benchmark.arena.spaces.fixed import FixedSpec

FIT_MODES = ("auto", "method", "space")
"""``fixed`` option values of methods with their own convention (see the module doc)."""


@dataclass(frozen=True)
class FixedFit:
    """The convention chosen for a search.

    Attributes:
        fixed: the convention to give ``space.with_fixed`` and ``Candidate.fixed``
            (``None``: the space's own).
        space: the task's space under that convention.
        why: one line for the search log.
    """

    fixed: FixedSpec | None
    space: SearchSpace
    why: str


def lowest_cost(space: SearchSpace, low_bits: int) -> CostReport:
    """Cost of ``space``'s smallest architecture with every searchable layer at
    W = A = ``low_bits`` and its fixed layers per the space's convention."""
    arch = space.smallest_arch
    return space.cost(space.uniform_policy(low_bits, low_bits, arch), arch)


def fit_fixed(
    space: SearchSpace,
    constraint: Constraint,
    own: FixedSpec,
    *,
    mode: str = "auto",
    method: str,
    own_label: str,
    low_bits: int | None = None,
) -> FixedFit:
    """Choose between a method's own fixed-layer convention and the space's.

    Args:
        space: the task's space (its convention is the fallback).
        constraint: the task's constraint.
        own: the method's convention (e.g. ``32`` for every fixed layer FP).
        mode: ``"auto"`` (own unless the limit cannot be met with it), ``"method"`` or
            ``"space"``; see :data:`FIT_MODES`.
        method: the method's name, for messages.
        own_label: the method's convention in words, for the log.
        low_bits: the lowest uniform bit-width the method can give every searchable layer
            (default: the space's lowest bit choice).

    Raises:
        ValueError: an unknown ``mode``, or a limit that the chosen convention's cheapest
            candidate misses (one line with the minimum achievable value).
    """
    if mode not in FIT_MODES:
        raise ValueError(f"{method}: fixed must be one of {', '.join(FIT_MODES)}; got {mode!r}")
    low = min(space.bit_choices) if low_bits is None else int(low_bits)
    mine = space.with_fixed(own)
    if mode != "space":
        cheapest = lowest_cost(mine, low)
        if constraint.satisfied(cheapest, space.reference()):
            return FixedFit(own, mine, f"{own_label} (the method's own convention)")
        if mode == "method":
            least = constraint.measure(cheapest, space.reference())
            raise ValueError(
                f"{method}: {constraint.text} cannot be met under its own convention "
                f"({own_label}; an FP layer costs 32x32 BitOPs): minimum achievable "
                f"{least:.4g} (smallest architecture at W{low}A{low}); loosen the "
                "constraint or use the option fixed='auto'"
            )
    cheapest = lowest_cost(space, low)
    if not constraint.satisfied(cheapest, space.reference()):
        least = constraint.measure(cheapest, space.reference())
        raise ValueError(
            f"{method}: {constraint.text} cannot be met on {space.name}: minimum achievable "
            f"{least:.4g} (smallest architecture at W{low}A{low}); loosen the constraint"
        )
    if mode == "space":
        return FixedFit(None, space, "the space's convention (option fixed='space')")
    return FixedFit(
        None,
        space,
        f"the space's convention: under {own_label} (an FP layer costs 32x32 BitOPs) even "
        f"the cheapest candidate misses {constraint.text}",
    )
