"""DoReFa-Net weight quantization (Zhou et al. 2016, arXiv 1606.06160), DNAS's weights.

Weights (a signed quantizer, what :meth:`QuantConfig.make_weight_quantizer` builds):
``W_q = 2·quantize_k(tanh(W) / (2·max|tanh(W)|) + 1/2) − 1`` with
``quantize_k(r) = round((2^k − 1)·r) / (2^k − 1)`` and a straight-through round (DoReFa
Eq. 9); the gradient flows through ``tanh`` and the max normalisation as autograd gives it.
The grid has ``2^k`` levels on ``[−1, 1]``.

``keep_scale`` (default on, not in DoReFa): ``W_q`` is multiplied by the least-squares
scale ``s = ⟨W, W_q⟩ / ⟨W_q, W_q⟩`` (a per-tensor constant, no gradient), so the layer keeps
the scale of its FP weights. DoReFa
trains from scratch with a BN after every conv; here search starts from an FP checkpoint
and some layers have no BN after them (a classifier, squeeze-excite convs), whose outputs
an unscaled ``[−1, 1]`` grid would change by orders of magnitude. ``keep_scale=False`` is
DoReFa as published.

An unsigned quantizer (DoReFa's activations, Eq. 11) gives ``quantize_k(clamp(x, 0, 1))``;
a signed one always applies the weight formula (DoReFa defines no signed activations; DNAS
quantizes activations with PACT, :mod:`benchmark.arena.quant.pact`). No learnable state:
``per_bit`` changes nothing. Registered as kind ``"dorefa"`` (:class:`DoReFaConfig`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from benchmark.arena.quant.quantizer import (
    DEFAULT_BIT_CHOICES,
    Quantizer,
    QuantizerConfig,
    register_quantizer,
)

_EPS = 1e-8  # keeps the max normalisation finite for an all-zero weight


def _round_ste(x: Tensor) -> Tensor:
    """``round(x)`` forward, identity backward (the straight-through estimator)."""
    return x + (x.round() - x).detach()


def quantize_unit(r: Tensor, bits: int) -> Tensor:
    """DoReFa's ``quantize_k``: ``r`` in ``[0, 1]`` onto ``2^bits`` levels, straight-through."""
    levels = float(2**bits - 1)
    return _round_ste(r * levels) / levels


@dataclass(frozen=True)
class DoReFaConfig(QuantizerConfig):
    """DoReFa's options (dict form ``{"kind": "dorefa", "keep_scale": true}``).

    Attributes:
        keep_scale: multiply quantized weights by their least-squares scale (see the module
            docstring); ``False``: DoReFa's ``[−1, 1]`` grid as published.
    """

    kind: ClassVar[str] = "dorefa"
    keep_scale: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.keep_scale, bool):
            raise TypeError(f"DoReFaConfig.keep_scale must be a bool, got {self.keep_scale!r}")


@register_quantizer(DoReFaConfig)
class DoReFaQuantizer(Quantizer):
    """DoReFa: tanh-normalised weights on a uniform ``[−1, 1]`` grid (signed), or clipped
    ``[0, 1]`` inputs (unsigned). Stateless."""

    config: DoReFaConfig

    def __init__(
        self,
        signed: bool | None = None,
        bit_choices: Sequence[int] = DEFAULT_BIT_CHOICES,
        per_bit: bool = False,
        config: DoReFaConfig | None = None,
    ) -> None:
        super().__init__(signed=signed, bit_choices=bit_choices, per_bit=per_bit, config=config)

    def quantize(self, x: Tensor, bits: int) -> Tensor:
        self.slot(bits)  # the same bit check as every quantizer
        if not self.signed:
            return quantize_unit(x.clamp(0.0, 1.0), bits)
        return self.quantize_weight(x, bits)

    def quantize_weight(self, w: Tensor, bits: int) -> Tensor:
        """DoReFa Eq. 9 on ``w`` (times the least-squares scale with ``keep_scale``)."""
        t = w.tanh()
        unit = t / (2.0 * t.abs().max() + _EPS) + 0.5
        q = 2.0 * quantize_unit(unit, bits) - 1.0
        if self.config.keep_scale:
            with torch.no_grad():
                scale = (w * q).sum() / (q * q).sum().clamp_min(_EPS)
            q = q * scale
        return q
