"""Weighted mixtures of bit-widths in one quantized layer (DNAS's super-net).

With one latent weight ``W`` and factorised probabilities ``p_w`` over weight bit-widths
and ``p_a`` over activation bit-widths, a layer under a :class:`BitMixture` computes

    ``conv(Σ_j p_a,j·Q_aj(x), Σ_i p_w,i·Q_wi(W))``

which, the convolution (or matrix product) being bilinear, equals
``Σ_ij p_w,i·p_a,j·conv(Q_aj(x), Q_wi(W))`` with one convolution instead of one per pair
(``docs/methods/dnas.md``). 32 bits is the full-precision branch (``Q = id``).
Everything is differentiable in the probabilities, the weight and the quantizers' state.

A :class:`BranchMixture` is the general super-net edge: ``K`` branches, each a
``(w_bits, a_bits)`` pair with its own weight tensor (DNAS's separate weights per branch) or
the layer's own one (shared), and a mixing weight ``m_k``:

    ``Σ_k m_k·conv(Q_ak(x), Q_wk(W_k))  =  Σ_a conv(Q_a(x), Σ_{k: a_k = a} m_k·Q_wk(W_k))``

The right-hand side (the convolution is linear in its weight) is what runs: one
convolution per distinct activation bit-width instead of one per branch, the same output
and gradients up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from benchmark.arena.policy import FP_BITS


@dataclass(frozen=True, eq=False)
class BitMixture:
    """Bit-widths (bits; 32 = FP) and their mixing weights, for weights and activations.

    Weights usually sum to 1 (a softmax or Gumbel-softmax draw); that is not checked.
    Build with :meth:`create`, which validates the shapes.
    """

    w_bits: tuple[int, ...]
    w_probs: Tensor
    a_bits: tuple[int, ...]
    a_probs: Tensor

    @classmethod
    def create(
        cls,
        w_bits: Sequence[int],
        w_probs: Tensor,
        a_bits: Sequence[int],
        a_probs: Tensor,
    ) -> BitMixture:
        """Check every bit list against its 1-D weight tensor (one weight per bit-width)."""
        return cls(
            _bits("w_bits", w_bits, w_probs),
            w_probs,
            _bits("a_bits", a_bits, a_probs),
            a_probs,
        )

    def check(self, weight_quantizer: nn.Module, act_quantizer: nn.Module) -> None:
        """Raise ``ValueError`` if a quantizer has no state for one of the bit-widths."""
        for quantizer, bits in ((weight_quantizer, self.w_bits), (act_quantizer, self.a_bits)):
            for b in bits:
                if b < FP_BITS:
                    quantizer.slot(b)


def _bits(name: str, bits: Sequence[int], probs: Tensor) -> tuple[int, ...]:
    values = tuple(int(b) for b in bits)
    if not values or any(b < 1 for b in values) or len(set(values)) != len(values):
        raise ValueError(f"{name} must be distinct positive bit-widths, got {list(bits)}")
    if not isinstance(probs, Tensor) or probs.dim() != 1 or probs.numel() != len(values):
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(
            f"{name} has {len(values)} bit-widths, so its weights must be a 1-D tensor of "
            f"{len(values)}, got {shape}"
        )
    if not probs.is_floating_point():
        raise ValueError(f"the weights of {name} must be a floating-point tensor")
    return values


def mix(quantizer: nn.Module, x: Tensor, bits: Sequence[int], probs: Tensor) -> Tensor:
    """``Σ_i probs[i]·quantizer(x, bits[i])`` in ``x``'s dtype and device, summed in list order.

    With one-hot ``probs`` the result equals ``quantizer(x, bits[k])`` exactly (the other
    terms are exact zeros). A quantizer with a ``fused_mix(x, bits, probs)`` method (PACT's
    fused CPU kernel, :meth:`~benchmark.arena.quant.pact.PACTQuantizer.fused_mix`) computes
    the same sum itself where that returns a tensor; ``None`` means: sum the terms here.
    """
    fused = getattr(quantizer, "fused_mix", None)
    if fused is not None:
        mixed = fused(x, bits, probs)
        if mixed is not None:
            return mixed
    out: Tensor | None = None
    for i, b in enumerate(bits):
        term = quantizer(x, b) * probs[i].to(device=x.device, dtype=x.dtype)
        out = term if out is None else out + term
    assert out is not None  # BitMixture.create rejects empty bit lists
    return out


@dataclass(frozen=True, eq=False)
class BranchMixture:
    """``K`` branches (bits; 32 = FP) with mixing weights and, optionally, a weight each.

    Attributes:
        w_bits / a_bits: each branch's weight and activation bit-widths; the pairs are
            distinct.
        probs: 1-D tensor of the ``K`` mixing weights (a Gumbel-softmax draw, say; not
            checked to sum to 1).
        weights: one weight tensor per branch, or ``None``: the layer's own weight for all.

    Build with :meth:`create`, which validates the shapes.
    """

    w_bits: tuple[int, ...]
    a_bits: tuple[int, ...]
    probs: Tensor
    weights: tuple[Tensor, ...] | None

    @classmethod
    def create(
        cls,
        pairs: Sequence[tuple[int, int]],
        probs: Tensor,
        weights: Sequence[Tensor] | None = None,
    ) -> BranchMixture:
        """Check ``pairs`` (distinct ``(w_bits, a_bits)``) against ``probs`` (one per pair)
        and ``weights`` (one per pair, or ``None``)."""
        pairs = [(int(w), int(a)) for w, a in pairs]
        if not pairs or len(set(pairs)) != len(pairs) or min(min(p) for p in pairs) < 1:
            raise ValueError(f"branches must be distinct positive (w_bits, a_bits), got {pairs}")
        k = len(pairs)
        if not isinstance(probs, Tensor) or probs.dim() != 1 or probs.numel() != k:
            shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
            raise ValueError(f"{k} branches need a 1-D tensor of {k} weights, got {shape}")
        if not probs.is_floating_point():
            raise ValueError("the branch weights must be a floating-point tensor")
        if weights is not None:
            weights = tuple(weights)
            if len(weights) != k or not all(isinstance(w, Tensor) for w in weights):
                raise ValueError(f"{k} branches need {k} weight tensors, got {len(weights)}")
        w_bits, a_bits = zip(*pairs, strict=True)
        return cls(tuple(w_bits), tuple(a_bits), probs, weights)

    def check(
        self, layer_weight: Tensor, weight_quantizer: nn.Module, act_quantizer: nn.Module
    ) -> None:
        """Raise ``ValueError`` for a weight of another shape than the layer's, or a
        bit-width a quantizer has no state for."""
        for w in self.weights or ():
            if w.shape != layer_weight.shape:
                raise ValueError(
                    f"a branch weight has shape {tuple(w.shape)}, the layer's is "
                    f"{tuple(layer_weight.shape)}"
                )
        for quantizer, bits in ((weight_quantizer, self.w_bits), (act_quantizer, self.a_bits)):
            for b in bits:
                if b < FP_BITS:
                    quantizer.slot(b)

    def by_act(self) -> list[tuple[int, list[int]]]:
        """``(a_bits, branch indices)`` per distinct activation bit-width, first-seen order."""
        groups: dict[int, list[int]] = {}
        for k, a in enumerate(self.a_bits):
            groups.setdefault(a, []).append(k)
        return list(groups.items())


def branch_sum(
    mixture: BranchMixture,
    x: Tensor,
    weight: Tensor,
    weight_quantizer: nn.Module,
    act_quantizer: nn.Module,
    op: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """``Σ_k m_k·op(Q_ak(x), Q_wk(W_k))`` computed as one ``op`` per distinct activation
    bit-width (see the module docstring); ``weight`` is the layer's own, used for every
    branch when the mixture has no weights. ``op`` is the layer's convolution / matrix
    product without bias."""
    weights = mixture.weights or (weight,) * len(mixture.w_bits)
    quantized: dict[tuple[int, int], Tensor] = {}  # (weight tensor, bits) -> Q(W), per call
    out: Tensor | None = None
    for a, ks in mixture.by_act():
        mixed: Tensor | None = None
        for k in ks:
            key = (id(weights[k]), mixture.w_bits[k])
            if key not in quantized:
                quantized[key] = weight_quantizer(weights[k], mixture.w_bits[k])
            term = quantized[key] * mixture.probs[k].to(device=x.device, dtype=x.dtype)
            mixed = term if mixed is None else mixed + term
        assert mixed is not None
        y = op(act_quantizer(x, a), mixed)
        out = y if out is None else out + y
    assert out is not None  # BranchMixture.create rejects empty branch lists
    return out
