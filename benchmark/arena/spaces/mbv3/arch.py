"""The architecture encoding of ``mbv3-cifar``: kernel and expand ratio per block, depth per stage.

An :class:`MBV3Arch` has 9 block slots (3 stages × at most 3 blocks) and 3 stage depths.
Stage ``s`` runs its first ``depths[s]`` slots; the kernel and expand ratio of a slot beyond
the depth do not change the network. The *canonical* form fills those inactive slots with
the smallest choices (kernel 3, expand 3) so that two encodings of the same network are
equal (and have the same ``repr``, which keys the space's profile cache). Every helper
here (:func:`sample_arch`, :func:`mutate`, :func:`crossover`, :func:`max_arch`,
:func:`min_arch`, :data:`REFERENCE_ARCH`) returns canonical architectures.

Random helpers accept a :class:`random.Random` or a :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmark.arena.spaces.base import SpaceError

KERNEL_CHOICES: tuple[int, ...] = (3, 5)
"""Depthwise kernel sizes (pixels); 3 is the transformed centre of the 5×5 kernel."""
EXPAND_CHOICES: tuple[int, ...] = (3, 4, 6)
"""Expand ratios: the block's hidden width is ``in_channels · e``."""
DEPTH_CHOICES: tuple[int, ...] = (2, 3)
"""Blocks per elastic stage."""
NUM_STAGES = 3
MAX_DEPTH = max(DEPTH_CHOICES)
NUM_SLOTS = NUM_STAGES * MAX_DEPTH

Rng = random.Random | np.random.Generator


@dataclass(frozen=True)
class MBV3Arch:
    """One subnet of the elastic MobileNetV3-CIFAR supernet.

    Attributes:
        kernels: depthwise kernel size per block slot (9 slots, stage-major).
        expands: expand ratio per block slot (9 slots, stage-major).
        depths: number of active blocks per stage (3 stages).

    Lists are accepted and stored as tuples; invalid values raise :class:`SpaceError`.
    """

    kernels: tuple[int, ...]
    expands: tuple[int, ...]
    depths: tuple[int, ...]

    def __post_init__(self) -> None:
        for field, length, choices in (
            ("kernels", NUM_SLOTS, KERNEL_CHOICES),
            ("expands", NUM_SLOTS, EXPAND_CHOICES),
            ("depths", NUM_STAGES, DEPTH_CHOICES),
        ):
            value = getattr(self, field)
            if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
                raise SpaceError(
                    f"mbv3 arch: {field} must be a list of {length} ints, got {value!r}"
                )
            if len(value) != length:
                raise SpaceError(f"mbv3 arch: {field} must have {length} entries, got {len(value)}")
            values = []
            for i, v in enumerate(value):
                if isinstance(v, bool) or not isinstance(v, int | np.integer) or v not in choices:
                    raise SpaceError(
                        f"mbv3 arch: {field}[{i}] = {v!r} is not one of {list(choices)}"
                    )
                values.append(int(v))
            object.__setattr__(self, field, tuple(values))

    # --- structure --------------------------------------------------------------------
    def active_slots(self) -> list[int]:
        """Indices (0-8) of the block slots this architecture runs, in network order."""
        return [s * MAX_DEPTH + j for s in range(NUM_STAGES) for j in range(self.depths[s])]

    def canonical(self) -> MBV3Arch:
        """The same network with inactive slots set to kernel 3, expand 3."""
        active = set(self.active_slots())
        kernels = [k if i in active else KERNEL_CHOICES[0] for i, k in enumerate(self.kernels)]
        expands = [e if i in active else EXPAND_CHOICES[0] for i, e in enumerate(self.expands)]
        return MBV3Arch(tuple(kernels), tuple(expands), self.depths)

    # --- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, list[int]]:
        """JSON form: ``{"kernels": [9 ints], "expands": [9 ints], "depths": [3 ints]}``."""
        return {
            "kernels": list(self.kernels),
            "expands": list(self.expands),
            "depths": list(self.depths),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MBV3Arch:
        """Parse the JSON form; unknown or missing keys raise :class:`SpaceError`."""
        if not isinstance(data, Mapping):
            raise SpaceError(
                f"mbv3 arch must be a mapping with kernels/expands/depths, got {data!r}"
            )
        keys = {"kernels", "expands", "depths"}
        unknown = sorted(set(data) - keys)
        missing = sorted(keys - set(data))
        if unknown or missing:
            raise SpaceError(
                f"mbv3 arch needs exactly the keys kernels, expands, depths "
                f"(unknown: {unknown}, missing: {missing})"
            )
        return cls(data["kernels"], data["expands"], data["depths"])


def uniform_arch(depth: int, kernel: int, expand: int) -> MBV3Arch:
    """Every stage at ``depth``, every block at ``kernel`` and ``expand`` (canonical)."""
    return MBV3Arch((kernel,) * NUM_SLOTS, (expand,) * NUM_SLOTS, (depth,) * NUM_STAGES).canonical()


def max_arch() -> MBV3Arch:
    """The largest subnet: kernel 5, expand 6, depth 3 everywhere."""
    return uniform_arch(max(DEPTH_CHOICES), max(KERNEL_CHOICES), max(EXPAND_CHOICES))


def min_arch() -> MBV3Arch:
    """The smallest subnet: kernel 3, expand 3, depth 2 everywhere."""
    return uniform_arch(min(DEPTH_CHOICES), min(KERNEL_CHOICES), min(EXPAND_CHOICES))


REFERENCE_ARCH: MBV3Arch = uniform_arch(depth=3, kernel=3, expand=4)
"""What bits-only methods work on: full depth, kernel 3, expand 4 in every block (a middle
subnet of the cost range, 10.9 M MACs against 6.0 M for the smallest and 18.3 M for the largest)."""


def _choice(rng: Rng, options: Sequence[int]) -> int:
    if isinstance(rng, np.random.Generator):
        return int(options[int(rng.integers(len(options)))])
    return int(rng.choice(list(options)))


def _coin(rng: Rng, prob: float) -> bool:
    return float(rng.random()) < prob


def sample_arch(rng: Rng) -> MBV3Arch:
    """A uniformly random architecture: each depth, kernel and expand ratio drawn uniformly."""
    depths = [_choice(rng, DEPTH_CHOICES) for _ in range(NUM_STAGES)]
    kernels, expands = [], []
    for s in range(NUM_STAGES):
        for j in range(MAX_DEPTH):
            active = j < depths[s]
            kernels.append(_choice(rng, KERNEL_CHOICES) if active else KERNEL_CHOICES[0])
            expands.append(_choice(rng, EXPAND_CHOICES) if active else EXPAND_CHOICES[0])
    return MBV3Arch(tuple(kernels), tuple(expands), tuple(depths))


def mutate(arch: MBV3Arch, rng: Rng, prob: float = 0.1) -> MBV3Arch:
    """Resample each gene (depth, kernel, expand) with probability ``prob``.

    A slot that a deeper stage newly activates gets a fresh uniform kernel and expand ratio.
    """
    if not 0.0 <= prob <= 1.0:
        raise SpaceError(f"mutation probability must be in [0, 1], got {prob}")
    was_active = set(arch.active_slots())
    depths = [_choice(rng, DEPTH_CHOICES) if _coin(rng, prob) else d for d in arch.depths]
    kernels, expands = list(arch.kernels), list(arch.expands)
    for i in range(NUM_SLOTS):
        fresh = i not in was_active
        if fresh or _coin(rng, prob):
            kernels[i] = _choice(rng, KERNEL_CHOICES)
        if fresh or _coin(rng, prob):
            expands[i] = _choice(rng, EXPAND_CHOICES)
    return MBV3Arch(tuple(kernels), tuple(expands), tuple(depths)).canonical()


def crossover(a: MBV3Arch, b: MBV3Arch, rng: Rng) -> MBV3Arch:
    """Uniform crossover: each depth and each slot's (kernel, expand) from either parent.

    A slot is taken only from a parent in which it is active (from either if both).
    """
    depths = [a.depths[s] if _coin(rng, 0.5) else b.depths[s] for s in range(NUM_STAGES)]
    active_a, active_b = set(a.active_slots()), set(b.active_slots())
    kernels, expands = [], []
    for i in range(NUM_SLOTS):
        parents = [p for p, act in ((a, active_a), (b, active_b)) if i in act] or [a, b]
        kernels.append(parents[0].kernels[i] if _coin(rng, 0.5) else parents[-1].kernels[i])
        expands.append(parents[0].expands[i] if _coin(rng, 0.5) else parents[-1].expands[i])
    return MBV3Arch(tuple(kernels), tuple(expands), tuple(depths)).canonical()


def as_arch(arch: MBV3Arch | Mapping[str, Any] | None) -> MBV3Arch:
    """An :class:`MBV3Arch` (canonical) from an arch, its dict form or ``None`` (reference)."""
    if arch is None:
        return REFERENCE_ARCH
    if isinstance(arch, MBV3Arch):
        return arch.canonical()
    if isinstance(arch, Mapping):
        return MBV3Arch.from_dict(arch).canonical()
    raise SpaceError(f"mbv3 arch must be an MBV3Arch, a dict or None, got {type(arch).__name__}")
