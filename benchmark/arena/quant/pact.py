"""PACT: parameterized clipping activation (Choi et al. 2018, arXiv 1805.06085), DNAS's
activations.

Unsigned inputs (PACT as published, after a ReLU): ``y = clamp(x, 0, α)``,
``x̂ = round(y·(2^k − 1)/α)·α/(2^k − 1)`` with a learnable clip ``α`` (same unit as ``x``).
Gradients (PACT Eq. 3, straight-through round): ``∂x̂/∂x = 1`` inside ``[0, α]``, else 0;
``∂x̂/∂α = 1`` where ``x ≥ α``, else 0.

Signed inputs (not in PACT: the residual stream of ``mbv3-cifar``, a network's input): the
same clip on the grid ``[−2^(k−1), 2^(k−1) − 1]`` with step ``α/2^(k−1)``, i.e. ``x`` clipped
to ``[−α, α − step]``; ``∂x̂/∂α`` is the derivative of the bound a clipped value sits on
(−1 below, ``(2^(k−1) − 1)/2^(k−1)`` above).

``α`` starts, on a slot's first use, at the ``init_quantile`` quantile of ``|x|`` in that
batch (a data-driven start for a search warm-started from an FP checkpoint; PACT's own
initial value and its L2 penalty on ``α`` are not used: the shared training loop applies
no weight decay to quantizer state). One ``α`` shared by all bit-widths, or one per
bit-width (``per_bit``). Registered as kind ``"pact"`` (:class:`PACTConfig`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from benchmark.arena.quant.quantizer import (
    DEFAULT_BIT_CHOICES,
    Quantizer,
    QuantizerConfig,
    register_quantizer,
)

_EPS = 1e-8  # added to |α| (same unit as x)
_INIT_SAMPLE = 65536  # at most this many elements of the first batch set α


def _step(alpha: Tensor, levels: int) -> Tensor:
    return (alpha.abs() + _EPS) / levels


def _forward(x: Tensor, alpha: Tensor, qn: int, qp: int) -> Tensor:
    """``round(clamp(x/step, qn, qp))·step``, ``step = |α|/max(−qn, qp)``: four passes."""
    step = _step(alpha, max(-qn, qp))
    return (x / step).clamp_(qn, qp).round_().mul_(step)


class _PACTFunction(torch.autograd.Function):
    """Clip to the ``α`` grid and round. Saves ``x`` (which the layer before usually keeps
    alive anyway) and recomputes the clip masks in backward."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, qn: int, qp: int) -> Tensor:
        ctx.save_for_backward(x, alpha)
        ctx.grid = (qn, qp)
        return _forward(x, alpha, qn, qp)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, alpha = ctx.saved_tensors
        qn, qp = ctx.grid
        levels = max(-qn, qp)
        step = _step(alpha.detach(), levels)
        above = x > qp * step
        below = x < qn * step if qn < 0 else x < 0
        grad_x = grad.masked_fill(above | below, 0.0) if ctx.needs_input_grad[0] else None
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            total = torch.where(above, grad, 0.0).sum() * (qp / levels)
            if qn < 0:
                total = total + torch.where(below, grad, 0.0).sum() * (qn / levels)
            grad_alpha = (total * torch.sign(alpha)).reshape(alpha.shape)
        return grad_x, grad_alpha, None, None


def pact_quantize(x: Tensor, alpha: Tensor, qn: int, qp: int) -> Tensor:
    """Fake-quantize ``x`` with clip ``alpha`` (a 1-element tensor) on the grid
    ``[qn, qp]`` (``qn = 0``: PACT; ``qn < 0``: the signed variant)."""
    if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad):
        return _PACTFunction.apply(x, alpha, qn, qp)
    return _forward(x, alpha.detach(), qn, qp)


@dataclass(frozen=True)
class PACTConfig(QuantizerConfig):
    """PACT's options (dict form ``{"kind": "pact", "init_quantile": 0.99}``).

    Attributes:
        init_quantile: ``α`` starts at this quantile of ``|x|`` of the first batch a slot
            sees (``1.0``: the maximum).
    """

    kind: ClassVar[str] = "pact"
    init_quantile: float = 0.99

    def __post_init__(self) -> None:
        value = self.init_quantile
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"PACTConfig.init_quantile must be a number, got {value!r}")
        if not 0.0 < float(value) <= 1.0:
            raise ValueError(f"PACTConfig.init_quantile must be in (0, 1], got {value!r}")


@register_quantizer(PACTConfig)
class PACTQuantizer(Quantizer):
    """PACT with a learnable clip ``α``, shared by all bit-widths or kept per bit-width."""

    config: PACTConfig

    def __init__(
        self,
        signed: bool | None = None,
        bit_choices: Sequence[int] = DEFAULT_BIT_CHOICES,
        per_bit: bool = False,
        config: PACTConfig | None = None,
    ) -> None:
        super().__init__(signed=signed, bit_choices=bit_choices, per_bit=per_bit, config=config)
        self.alpha = nn.Parameter(torch.ones(self.num_slots))
        self.register_buffer("initialized", torch.zeros(self.num_slots, dtype=torch.bool))

    def quantize(self, x: Tensor, bits: int) -> Tensor:
        slot = self.slot(bits)
        if not bool(self.initialized[slot]):
            self.init_alpha(x, bits)
        qn, qp = self.grid(bits)
        return pact_quantize(x, self.alpha[slot : slot + 1], qn, qp)

    @torch.no_grad()
    def init_alpha(self, x: Tensor, bits: int) -> None:
        """``α`` of the slot used at ``bits``: the ``init_quantile`` quantile of ``|x|``."""
        slot = self.slot(bits)
        flat = x.detach().reshape(-1).abs()
        if flat.numel() > _INIT_SAMPLE:
            flat = flat[:: flat.numel() // _INIT_SAMPLE]
        k = max(1, min(flat.numel(), round(self.config.init_quantile * flat.numel())))
        value = float(flat.float().kthvalue(k).values) if flat.numel() else 1.0
        # through .data: another slot's α may already be saved for backward in this forward
        # (a mixture of bit-widths), and an in-place write would invalidate it
        self.alpha.data[slot] = max(value, 1e-3)
        self.initialized[slot] = True

    def clip(self, bits: int) -> float:
        """The clip ``α`` used at ``bits`` (same unit as the quantized tensor)."""
        return abs(float(self.alpha.detach()[self.slot(bits)]))
