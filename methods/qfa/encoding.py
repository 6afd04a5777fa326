"""QFA's encodings of a subnet: the NSGA-II genome and the predictor's one-hot features.

Genome (integers): one gene per architecture entry (``space.arch_choices()``: kernel and
expand per block slot, depth per stage on ``mbv3-cifar``), then a W and an A gene per
searchable layer of the largest architecture (layers of blocks an architecture does not
run are ignored). Each gene indexes its choices.

Features (apple/ml-batchquant ``collect_network_info.py``): per-slot kernel and expand
one-hot, zero for slots the depth leaves out; depth as a thermometer per stage
(``[d ≥ c for c in choices]``); a one-hot over the space's bit choices for the W and the A
bits of every searchable layer (zero for layers the architecture lacks). Resolution is
fixed at 32 here, so it has no feature. :meth:`Encoding.decode_features` inverts
:meth:`Encoding.features` (inactive slots come back canonical).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmark.arena import ElasticSearchSpace, LayerBits, SearchSpace


@dataclass
class Encoding:
    """Genome and features of ``(arch, policy)`` on ``space`` (QFA's fixed convention).

    ``bits``: the W and A bit choices the genes and one-hots cover (default: the space's;
    QFA gives its stage-1 set {2, 3, 4}, what the supernet was last trained and the predictor
    sampled at, so that ``resnet20``'s 8-bit choice is not searched unseen).
    """

    space: SearchSpace
    bits: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        space = self.space
        self.elastic = isinstance(space, ElasticSearchSpace)
        self.genes: dict[str, tuple[tuple[int, ...], ...]] = (
            space.arch_choices() if self.elastic else {}
        )
        allowed = set(space.bit_choices)
        chosen = allowed if self.bits is None else allowed & {int(b) for b in self.bits}
        if not chosen:
            raise ValueError(f"qfa: none of the bits {self.bits} is a choice of {space.name}")
        self.bit_choices = tuple(sorted(chosen))
        top = space.max_arch() if self.elastic else None
        self.layers: tuple[str, ...] = tuple(space.searchable_layers(top))
        self.slotted = {f for f, c in self.genes.items() if f != "depths"}

    # --- genome -------------------------------------------------------------------------
    @property
    def upper(self) -> np.ndarray:
        """Largest index of every gene (the lower bound is 0)."""
        arch = [len(c) - 1 for choices in self.genes.values() for c in choices]
        return np.array(arch + [len(self.bit_choices) - 1] * (2 * len(self.layers)), int)

    def decode(self, genome: Sequence[int]) -> tuple[Any, dict[str, LayerBits]]:
        """``(arch, policy)`` of a genome; the policy covers the arch's searchable layers."""
        genome = [int(g) for g in genome]
        arch = None
        i = 0
        if self.elastic:
            data = {}
            for field, choices in self.genes.items():
                data[field] = [c[genome[i + j]] for j, c in enumerate(choices)]
                i += len(choices)
            arch = self.space.validate_arch(data)
        n = len(self.layers)
        w, a = genome[i : i + n], genome[i + n : i + 2 * n]
        bits = self.bit_choices
        present = set(self.space.searchable_layers(arch))
        policy = {
            name: LayerBits(bits[w[k]], bits[a[k]])
            for k, name in enumerate(self.layers)
            if name in present
        }
        return arch, policy

    def genome(self, arch: Any, policy: Mapping[str, LayerBits]) -> np.ndarray:
        """A genome that decodes to ``(arch, policy)`` (absent layers at the lowest bits)."""
        out: list[int] = []
        if self.elastic:
            data = self.space.validate_arch(arch).to_dict()
            for field, choices in self.genes.items():
                out += [c.index(v) for c, v in zip(choices, data[field], strict=True)]
        idx = {b: k for k, b in enumerate(self.bit_choices)}
        w = [idx[policy[n].w_bits] if n in policy else 0 for n in self.layers]
        a = [idx[policy[n].a_bits] if n in policy else 0 for n in self.layers]
        return np.array(out + w + a, int)

    # --- predictor features ---------------------------------------------------------
    @property
    def num_features(self) -> int:
        arch = sum(len(c) for choices in self.genes.values() for c in choices)
        return arch + 2 * len(self.layers) * len(self.bit_choices)

    def features(self, arch: Any, policy: Mapping[str, LayerBits]) -> np.ndarray:
        """The one-hot feature vector (float32) of ``(arch, policy)``."""
        parts: list[np.ndarray] = []
        if self.elastic:
            arch = self.space.validate_arch(arch)
            data, active = arch.to_dict(), set(arch.active_slots())
            for field, choices in self.genes.items():
                for j, (c, v) in enumerate(zip(choices, data[field], strict=True)):
                    if field in self.slotted:
                        parts.append(_one_hot(c, v if j in active else None))
                    else:
                        parts.append(np.array([float(v >= x) for x in c], np.float32))
        for attr in ("w_bits", "a_bits"):
            for name in self.layers:
                value = getattr(policy[name], attr) if name in policy else None
                parts.append(_one_hot(self.bit_choices, value))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def decode_features(self, vector: Sequence[float]) -> tuple[Any, dict[str, LayerBits]]:
        """``(arch, policy)`` of a feature vector (the inverse of :meth:`features`)."""
        v = np.asarray(vector, float)
        i, arch = 0, None
        if self.elastic:
            data: dict[str, list[int]] = {}
            for field, choices in self.genes.items():
                values = []
                for c in choices:
                    chunk, i = v[i : i + len(c)], i + len(c)
                    if field in self.slotted:
                        values.append(c[int(chunk.argmax())] if chunk.any() else min(c))
                    else:
                        values.append(max(x for x, on in zip(c, chunk, strict=True) if on))
                data[field] = values
            arch = self.space.validate_arch(data)  # canonical: inactive slots at the minimum
        k = len(self.bit_choices)
        n = len(self.layers)
        found: dict[str, list[int]] = {}
        for _part in range(2):
            for name in self.layers:
                chunk, i = v[i : i + k], i + k
                if chunk.any():
                    found.setdefault(name, []).append(self.bit_choices[int(chunk.argmax())])
        assert i == len(v) and all(len(b) == 2 for b in found.values()), (i, n)
        return arch, {name: LayerBits(*found[name]) for name in self.layers if name in found}


def _one_hot(choices: Sequence[int], value: int | None) -> np.ndarray:
    out = np.zeros(len(choices), np.float32)
    if value is not None:
        out[list(choices).index(value)] = 1.0
    return out
