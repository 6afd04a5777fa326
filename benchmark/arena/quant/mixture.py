"""A weighted mixture of bit-widths in one quantized layer (DNAS's shared-weight super-net).

With one latent weight ``W`` and factorised probabilities ``p_w`` over weight bit-widths
and ``p_a`` over activation bit-widths, a layer under a :class:`BitMixture` computes

    ``conv(Σ_j p_a,j·Q_aj(x), Σ_i p_w,i·Q_wi(W))``

which, the convolution (or matrix product) being bilinear, equals
``Σ_ij p_w,i·p_a,j·conv(Q_aj(x), Q_wi(W))`` with one convolution instead of one per pair
(``/work/shared/methods/dnas.md``). 32 bits is the full-precision branch (``Q = id``).
Everything is differentiable in the probabilities, the weight and the quantizers' state.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    terms are exact zeros).
    """
    out: Tensor | None = None
    for i, b in enumerate(bits):
        term = quantizer(x, b) * probs[i].to(device=x.device, dtype=x.dtype)
        out = term if out is None else out + term
    assert out is not None  # BitMixture.create rejects empty bit lists
    return out
