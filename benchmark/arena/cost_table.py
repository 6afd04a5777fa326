"""Per-layer cost tables of a space and the expected cost under bit probabilities.

A :class:`CostTable` holds, for one architecture of a space, every quantizable layer's
MACs and weight parameters (one 32×32 image, network order), which layers the space's
convention fixes and at what bits, and the bit-widths the space allows
(``bit_choices`` plus 8 and 32 = FP). From these it gives each layer's cost at every
``(w_bits, a_bits)``: BitOPs ``MACs·b_w·b_a`` and weight bits ``params·b_w``, the same
definition as :mod:`benchmark.arena.cost`, so ``table.total(policy, "bitops")`` equals
``space.cost(policy, arch).bitops`` exactly. It is what a solver needs: per-layer
lookups, totals, the fixed layers' share and numpy coefficient arrays (LP / ILP, a
hardware table). It is also where a space costs a candidate: ``space.cost(policy, arch)``
is ``space.cost_table(arch).report(policy)``. Build one with
:meth:`SearchSpace.cost_table(arch) <benchmark.arena.spaces.base.SearchSpace.cost_table>`
(one per architecture and fixed-layer convention).

:func:`expected_cost` is the differentiable cost of a per-layer distribution over bit
choices (DNAS): torch in, a scalar torch tensor out.

Metrics are named as in constraints: ``"bitops"`` (BitOPs per 32×32 image) and
``"size"`` (bits of weight storage).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch
from torch import Tensor

from benchmark.arena.cost import (
    CostReport,
    LayerProfile,
    Reference,
    as_policy,
    cost_from_profiles,
)
from benchmark.arena.policy import LayerBits, Policy, PolicyError, validate_policy

METRICS = ("bitops", "size")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown cost metric {metric!r}: use 'bitops' or 'size'")


@dataclass(frozen=True)
class CostTable:
    """Per-layer costs of one architecture of a space (MACs per 32×32 image, bits).

    Attributes:
        layers: every quantizable layer's profile (MACs, params), in network order.
        fixed: layer name → bits, for the layers the space's convention fixes.
        bit_choices: the bit-widths the space allows, ascending (its ``bit_choices``
            plus 8 and 32 = FP); the order of every per-choice axis below.
    """

    layers: tuple[LayerProfile, ...]
    fixed: Mapping[str, LayerBits] = field(hash=False)
    bit_choices: tuple[int, ...]

    def __post_init__(self) -> None:
        names = [p.name for p in self.layers]
        unknown = [n for n in self.fixed if n not in set(names)]
        if unknown:
            raise ValueError(f"fixed layer {unknown[0]!r} is not a layer of the table")
        order = {n: i for i, n in enumerate(names)}
        fixed = dict(sorted(self.fixed.items(), key=lambda kv: order[kv[0]]))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "fixed", MappingProxyType(fixed))
        object.__setattr__(self, "bit_choices", tuple(sorted(set(self.bit_choices))))
        object.__setattr__(self, "_by_name", {p.name: p for p in self.layers})

    def __reduce__(self) -> tuple:
        """Pickle (checkpoints, Ray) through the constructor: a mapping proxy does not."""
        return (type(self), (self.layers, dict(self.fixed), self.bit_choices))

    # --- layers -----------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """Every layer, network order."""
        return tuple(p.name for p in self.layers)

    @property
    def searchable(self) -> tuple[str, ...]:
        """The layers a policy chooses bits for (not fixed), network order: the rows of
        :meth:`coefficients` and the keys :func:`expected_cost` expects."""
        return tuple(p.name for p in self.layers if p.name not in self.fixed)

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """Every ``(w_bits, a_bits)`` over :attr:`bit_choices`, weight bits outer:
        ``(b0, b0), (b0, b1), ..., (b1, b0), ...`` (the order of :meth:`pair_coefficients`
        and of ``pair_probs`` in :func:`expected_cost`)."""
        return tuple(itertools.product(self.bit_choices, repeat=2))

    def profile(self, layer: str) -> LayerProfile:
        """MACs and params of ``layer``; an unknown name raises :class:`PolicyError`."""
        try:
            return self._by_name[layer]  # type: ignore[attr-defined]
        except KeyError:
            raise PolicyError(
                f"unknown layer {layer!r}; this table has {', '.join(self.names[:4])}, ..."
            ) from None

    # --- one layer ----------------------------------------------------------------------
    def bitops(self, layer: str, w_bits: int, a_bits: int) -> int:
        """BitOPs per 32×32 image of ``layer`` at ``w_bits``/``a_bits``: MACs·b_w·b_a."""
        self._check_bits(w_bits, a_bits)
        return self.profile(layer).macs * w_bits * a_bits

    def size_bits(self, layer: str, w_bits: int) -> int:
        """Bits of ``layer``'s weights at ``w_bits``: params·b_w."""
        self._check_bits(w_bits)
        return self.profile(layer).params * w_bits

    def weight_bit_cost(self, layer: str, metric: str, a_bits: int | None = None) -> int:
        """What one weight bit of ``layer`` costs (the cost is linear in ``w_bits``):
        MACs·a_bits BitOPs per image for ``bitops`` (``a_bits`` required), params bits
        for ``size``."""
        _check_metric(metric)
        if metric == "size":
            return self.profile(layer).params
        if a_bits is None:
            raise ValueError("weight_bit_cost: the bitops metric needs a_bits")
        self._check_bits(a_bits)
        return self.profile(layer).macs * a_bits

    def layer_cost(self, layer: str, bits: LayerBits, metric: str) -> int:
        """``layer``'s cost at ``bits`` in ``metric`` (BitOPs per image or bits)."""
        _check_metric(metric)
        if metric == "bitops":
            return self.bitops(layer, bits.w_bits, bits.a_bits)
        return self.size_bits(layer, bits.w_bits)

    # --- whole policies -----------------------------------------------------------------
    def fixed_total(self, metric: str) -> int:
        """The fixed layers' cost at their convention's bits (BitOPs per image or bits)."""
        return sum(self.layer_cost(n, b, metric) for n, b in self.fixed.items())

    def full_policy(self, policy: Mapping[str, LayerBits | Mapping[str, int]]) -> Policy:
        """``policy`` checked and completed with the fixed layers' bits, every layer in
        network order.

        ``policy`` may use :class:`LayerBits` or their JSON form. Every searchable layer
        must be given, at bits of :attr:`bit_choices`; fixed layers only at their fixed
        bits. Raises :class:`PolicyError` naming the first problem.
        """
        policy = as_policy(policy)
        for name, bits in self.fixed.items():
            if name in policy and policy[name] != bits:
                raise PolicyError(
                    f"layer {name!r} is fixed at W{bits.w_bits}A{bits.a_bits} by the space's "
                    "convention; drop it from the policy or choose another convention "
                    "(SearchSpace.with_fixed, Candidate.fixed)"
                )
        rest = {n: b for n, b in policy.items() if n not in self.fixed}
        validate_policy(rest, self.searchable, self.bit_choices)
        return {n: self.fixed[n] if n in self.fixed else rest[n] for n in self.names}

    def report(self, policy: Mapping[str, LayerBits | Mapping[str, int]]) -> CostReport:
        """The whole model's cost under a full or searchable-only ``policy`` (checked and
        completed as :meth:`full_policy` does): MACs, BitOPs, MFLOPs/64 and weight bits
        for one 32×32 image, with their W8A8 references (:mod:`benchmark.arena.cost`)."""
        return cost_from_profiles(self.layers, self.full_policy(policy))

    def w8a8(self) -> Reference:
        """This architecture at W8A8 on every counted layer (BitOPs per image, bits)."""
        report = cost_from_profiles(self.layers, {})
        return Reference(report.bitops_w8a8, report.size_bits_w8a8)

    def total(self, policy: Mapping[str, LayerBits], metric: str) -> int:
        """Cost of a full or searchable-only policy (fixed layers added at their
        convention's bits): BitOPs per 32×32 image (``bitops``) or weight bits (``size``).
        Checked as :meth:`full_policy` does."""
        _check_metric(metric)
        full = self.full_policy(policy)
        return sum(self.layer_cost(n, b, metric) for n, b in full.items())

    # --- arrays for solvers -------------------------------------------------------------
    def coefficients(self, metric: str, bits: Sequence[int] | None = None) -> np.ndarray:
        """Per-choice costs of the searchable layers (rows in :attr:`searchable` order),
        int64: for ``bitops`` shape ``(layers, len(bits), len(bits))``, entry ``[l, i, j]``
        = BitOPs per image of layer ``l`` at ``w_bits = bits[i]``, ``a_bits = bits[j]``;
        for ``size`` shape ``(layers, len(bits))``, ``[l, i]`` = weight bits at
        ``w_bits = bits[i]``. ``bits`` defaults to :attr:`bit_choices`. Add
        :meth:`fixed_total` for a whole model's cost.
        """
        _check_metric(metric)
        b = self._bits_array(bits)
        if metric == "size":
            return self._column("params")[:, None] * b[None, :]
        return self._column("macs")[:, None, None] * b[None, :, None] * b[None, None, :]

    def pair_coefficients(
        self, metric: str, pairs: Sequence[tuple[int, int]] | None = None
    ) -> np.ndarray:
        """Costs of the searchable layers at each ``(w_bits, a_bits)`` of ``pairs``
        (default :attr:`pairs`), int64, shape ``(layers, len(pairs))``: BitOPs per image
        (``bitops``) or weight bits (``size``, which ignores ``a_bits``)."""
        _check_metric(metric)
        w, a = self._pairs_arrays(pairs)
        if metric == "size":
            return self._column("params")[:, None] * w[None, :]
        return self._column("macs")[:, None] * (w * a)[None, :]

    def to_dict(self) -> dict:
        """JSON-ready table: per layer its MACs, params, fixed bits (or None) and costs
        ``bitops["w4a8"]`` (BitOPs per image) and ``size_bits["w4"]`` (bits)."""
        rows = []
        for p in self.layers:
            fixed = self.fixed.get(p.name)
            rows.append(
                {
                    "name": p.name,
                    "kind": p.kind,
                    "macs": p.macs,
                    "params": p.params,
                    "fixed": None if fixed is None else fixed.to_dict(),
                    "bitops": {f"w{w}a{a}": p.macs * w * a for w, a in self.pairs},
                    "size_bits": {f"w{w}": p.params * w for w in self.bit_choices},
                }
            )
        return {"bit_choices": list(self.bit_choices), "layers": rows}

    # --- helpers ------------------------------------------------------------------------
    def _check_bits(self, *bits: int) -> None:
        for b in bits:
            if b not in self.bit_choices:
                raise PolicyError(f"{b} bits is not in the allowed set {list(self.bit_choices)}")

    def _column(self, attr: str) -> np.ndarray:
        profiles = [self._by_name[n] for n in self.searchable]  # type: ignore[attr-defined]
        return np.array([getattr(p, attr) for p in profiles], dtype=np.int64)

    def _bits_array(self, bits: Sequence[int] | None) -> np.ndarray:
        bits = self.bit_choices if bits is None else tuple(bits)
        self._check_bits(*bits)
        return np.array(bits, dtype=np.int64)

    def _pairs_arrays(
        self, pairs: Sequence[tuple[int, int]] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        pairs = self.pairs if pairs is None else tuple(tuple(p) for p in pairs)
        for w, a in pairs:
            self._check_bits(w, a)
        return (
            np.array([w for w, _ in pairs], dtype=np.int64),
            np.array([a for _, a in pairs], dtype=np.int64),
        )


def expected_cost(
    table: CostTable,
    w_probs: Mapping[str, Tensor] | None = None,
    a_probs: Mapping[str, Tensor] | None = None,
    metric: str = "bitops",
    *,
    pair_probs: Mapping[str, Tensor] | None = None,
    bits: Sequence[int] | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
) -> Tensor:
    """The expected cost under per-layer probabilities over bit choices, differentiable.

    Factorised (``w_probs`` and ``a_probs``): each maps every searchable layer
    (``table.searchable``) to a 1-D tensor of probabilities over ``bits`` (default
    ``table.bit_choices``, ascending, e.g. ``(2, 3, 4, 8, 32)``); the result is
    ``Σ MACs·E[b_w]·E[b_a]`` BitOPs per 32×32 image for ``bitops``, ``Σ params·E[b_w]``
    bits for ``size`` (``a_probs`` not needed), plus :meth:`CostTable.fixed_total`.

    Joint (``pair_probs``): each searchable layer → probabilities over ``pairs`` (default
    ``table.pairs``, weight bits outer); the result is ``Σ_l Σ_k p_lk·cost_l(pair_k)`` plus
    the fixed layers' cost.

    The probabilities are used as given (not normalised: a Gumbel-softmax draw or a
    straight-through one-hot works too). Returns a scalar tensor with the probabilities'
    dtype and device; gradients flow to them.
    """
    _check_metric(metric)
    if (pair_probs is None) == (w_probs is None):
        raise ValueError("expected_cost: give either w_probs (and a_probs) or pair_probs")
    fixed = float(table.fixed_total(metric))
    if pair_probs is not None:
        probs = _stack(table, pair_probs, len(table._pairs_arrays(pairs)[0]), "pair_probs")
        coefs = torch.as_tensor(table.pair_coefficients(metric, pairs))
        return (probs * coefs.to(probs)).sum() + fixed
    values = torch.as_tensor(table._bits_array(bits))
    w = _stack(table, w_probs, len(values), "w_probs")
    e_w = w @ values.to(w)
    if metric == "size":
        return (torch.as_tensor(table._column("params")).to(w) * e_w).sum() + fixed
    if a_probs is None:
        raise ValueError("expected_cost: the bitops metric needs a_probs as well as w_probs")
    a = _stack(table, a_probs, len(values), "a_probs")
    e_a = a @ values.to(a)
    return (torch.as_tensor(table._column("macs")).to(w) * e_w * e_a).sum() + fixed


def _stack(table: CostTable, probs: Mapping[str, Tensor], size: int, what: str) -> Tensor:
    """``probs`` as a (searchable layers × size) tensor, rows in ``table.searchable`` order."""
    searchable = table.searchable
    unknown = [n for n in probs if n not in set(searchable)]
    if unknown:
        raise PolicyError(
            f"{what}: {unknown[0]!r} is not a searchable layer of this table (fixed layers are "
            "costed at their convention's bits)"
        )
    missing = [n for n in searchable if n not in probs]
    if missing:
        raise PolicyError(f"{what}: no probabilities for layer {missing[0]!r}")
    rows = []
    for name in searchable:
        p = torch.as_tensor(probs[name])
        if p.ndim != 1 or p.shape[0] != size:
            raise ValueError(
                f"{what}[{name!r}] must be a 1-D tensor of {size} probabilities, "
                f"got shape {tuple(p.shape)}"
            )
        rows.append(p)
    return torch.stack(rows)
