"""QFA's subnet sampler: which (architecture, bits) each supernet step trains.

apple/ml-batchquant (``progressive_shrinking.py``, ``qfa_mbv3.py``): every step runs the
max subnet and the min subnet, each with ONE random bit-width for every searchable layer
(W = A), and ``num_random`` random subnets whose every quantizer's bits are drawn
independently. The stage's bit set is ``{2, 3, 4, 32}`` (stage 0) or ``{2, 3, 4}``
(stage 1). With 32 in the set, ``override_quantizer`` applies the stage-0 rule per layer:
if exactly one of (W, A) is 32, with probability 0.2 both become 32, else the 32 becomes a
random low bit-width.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmark.arena import FP_BITS, ElasticSearchSpace, LayerBits, SandwichSampler, SearchSpace

OVERRIDE_PROB = 0.2
"""Stage-0 rule: the chance that a layer with one 32 of (W, A) goes fully FP."""

FULL_DEPTH_PROB = 0.3
"""Predictor data: the chance that a sample runs every stage at its largest depth."""

UNIFORM_PRECISION_PROB = 0.3
"""Predictor data: the chance that a sample runs every searched layer at one bit-width."""


def stage0_override(
    w: int, a: int, low_bits: Sequence[int], rng: random.Random, prob: float = OVERRIDE_PROB
) -> tuple[int, int]:
    """QFA's rule for one layer: exactly one of (``w``, ``a``) at 32 → both 32 with
    probability ``prob``, else that 32 redrawn from ``low_bits``; other pairs unchanged."""
    if (w == FP_BITS) == (a == FP_BITS):
        return w, a
    if rng.random() < prob:
        return FP_BITS, FP_BITS
    if w == FP_BITS:
        w = rng.choice(list(low_bits))
    if a == FP_BITS:
        a = rng.choice(list(low_bits))
    return w, a


@dataclass
class QFASampler(SandwichSampler):
    """The sandwich of one QFA stage (``bits``: the stage's bit set, 32 = FP).

    ``space`` is the task's space under QFA's fixed convention; on a fixed-architecture
    space every architecture is ``None`` and only bits are sampled.
    """

    space: SearchSpace = None  # type: ignore[assignment]
    bits: tuple[int, ...] = (2, 3, 4)
    override_prob: float = OVERRIDE_PROB

    def __post_init__(self) -> None:
        self.bits = tuple(sorted(int(b) for b in self.bits))
        self.low_bits = tuple(b for b in self.bits if b < FP_BITS)
        if not self.low_bits:
            raise ValueError(f"qfa: a stage needs a bit-width below 32, got {self.bits}")

    @property
    def elastic(self) -> bool:
        return isinstance(self.space, ElasticSearchSpace)

    def uniform(self, arch: Any, rng: random.Random) -> dict[str, LayerBits]:
        """Every searchable layer of ``arch`` at one random bit-width of the stage (W = A)."""
        b = rng.choice(self.bits)
        return {n: LayerBits(b, b) for n in self.space.searchable_layers(arch)}

    def independent(self, arch: Any, rng: random.Random) -> dict[str, LayerBits]:
        """Every searchable layer's W and A bits drawn independently from the stage's set,
        then the stage-0 rule where 32 is in it."""
        policy = {}
        for name in self.space.searchable_layers(arch):
            w, a = rng.choice(self.bits), rng.choice(self.bits)
            if FP_BITS in self.bits:
                w, a = stage0_override(w, a, self.low_bits, rng, self.override_prob)
            policy[name] = LayerBits(w, a)
        return policy

    def predictor_sample(self, rng: random.Random) -> tuple[Any, dict[str, LayerBits]]:
        """One subnet of the predictor's data, stratified as ``collect_network_info.py``
        does: a random architecture, at full depth with probability ``FULL_DEPTH_PROB``
        (0.3), and with one random bit-width for every searched layer (W = A) with
        probability ``UNIFORM_PRECISION_PROB`` (0.3), else independent per-layer bits. The
        original's third stratum, full resolution (0.4), has no counterpart at 32×32."""
        arch = None
        if self.elastic:
            arch = self.space.sample_arch(rng)
            if rng.random() < FULL_DEPTH_PROB:
                data = arch.to_dict()
                data["depths"] = self.space.max_arch().to_dict()["depths"]
                arch = self.space.validate_arch(data)
        if rng.random() < UNIFORM_PRECISION_PROB:
            return arch, self.uniform(arch, rng)
        return arch, self.independent(arch, rng)

    def largest(self, rng: random.Random) -> tuple[Any, dict[str, LayerBits]]:
        arch = self.space.max_arch() if self.elastic else None
        return arch, self.uniform(arch, rng)

    def others(self, rng: random.Random) -> list[tuple[Any, dict[str, LayerBits]]]:
        smallest = self.space.min_arch() if self.elastic else None
        out = [(smallest, self.uniform(smallest, rng))]
        for _ in range(self.num_random):
            arch = self.space.sample_arch(rng) if self.elastic else None
            out.append((arch, self.independent(arch, rng)))
        return out

    def describe(self) -> dict[str, Any]:
        return {"num_random": self.num_random, "bits": list(self.bits), "rule": "qfa"}
