"""LSQ: learned step size quantization (Esser et al., 2020), as OQAT and QFA use it.

``x̂ = round(clamp(x/|s|, Qn, Qp))·|s|`` with a straight-through round; the
gradient through the clamp is zero outside ``[Qn, Qp]``; the step's gradient is
scaled by ``1/sqrt(numel·Qp)``; ``s`` starts at ``2·mean|x|/sqrt(Qp)`` on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from benchmark.quant.base import DEFAULT_BIT_CHOICES, Quantizer, register_quantizer

_EPS = 1e-8


class _LSQFunction(torch.autograd.Function):
    """Fused LSQ: the forward pass also prepares what the backward pass needs.

    Saved for backward: the out-of-range mask (bool) and ``d = ∂x̂/∂s`` (``round(v) − v``
    inside the range, ``Qn``/``Qp`` outside), so the backward pass is two passes over
    memory (masking ``grad`` and ``Σ grad·d``) instead of recomputing the quantization.
    """

    @staticmethod
    def forward(ctx, x: Tensor, step: Tensor, qn: int, qp: int, grad_scale: float) -> Tensor:
        s = step.abs() + _EPS
        v = x * (1.0 / s)
        clamped = v.clamp(qn, qp)
        q = clamped.round()
        out = q * s
        outside = torch.ne(v, clamped)  # clipped by the range (bool)
        del v
        d = q.sub_(clamped.masked_fill_(outside, 0.0)) if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(outside, d, step)
        ctx.grad_scale = grad_scale
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        outside, d, step = ctx.saved_tensors
        grad_x = grad.masked_fill(outside, 0.0) if ctx.needs_input_grad[0] else None
        grad_step = None
        if ctx.needs_input_grad[1]:
            grad_step = (grad * d).sum() * (ctx.grad_scale * torch.sign(step))
            grad_step = grad_step.reshape(step.shape)
        return grad_x, grad_step, None, None, None


def lsq_quantize(x: Tensor, step: Tensor, qn: int, qp: int, grad_scale: float) -> Tensor:
    """Fake-quantize ``x`` with step ``step`` (a 1-element tensor) on the grid ``[qn, qp]``."""
    return _LSQFunction.apply(x, step, qn, qp, grad_scale)


@register_quantizer("lsq")
class LSQQuantizer(Quantizer):
    """LSQ with one learnable step size, shared by all bit-widths or kept per bit-width."""

    def __init__(
        self,
        signed: bool | None = None,
        bit_choices: Sequence[int] = DEFAULT_BIT_CHOICES,
        per_bit: bool = False,
    ) -> None:
        super().__init__(signed=signed, bit_choices=bit_choices, per_bit=per_bit)
        self.step = nn.Parameter(torch.ones(self.num_slots))
        self.register_buffer("initialized", torch.zeros(self.num_slots, dtype=torch.bool))

    def quantize(self, x: Tensor, bits: int) -> Tensor:
        slot = self.slot(bits)
        qn, qp = self.grid(bits)
        if not bool(self.initialized[slot]):
            self.init_step(x, bits)
        grad_scale = 1.0 / math.sqrt(x.numel() * qp)
        return lsq_quantize(x, self.step[slot : slot + 1], qn, qp, grad_scale)

    @torch.no_grad()
    def init_step(self, x: Tensor, bits: int) -> None:
        """``s = 2·mean|x|/sqrt(Qp)`` for the slot used at ``bits``."""
        slot = self.slot(bits)
        _, qp = self.grid(bits)
        self.step[slot] = max(2.0 * x.detach().abs().mean().item() / math.sqrt(qp), _EPS)
        self.initialized[slot] = True

    def step_size(self, bits: int) -> float:
        """The step size used at ``bits`` (same unit as the quantized tensor)."""
        return abs(float(self.step.detach()[self.slot(bits)]))
