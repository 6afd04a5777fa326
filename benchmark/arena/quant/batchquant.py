"""BatchQuant: the activation quantizer of QFA (Bai et al., NeurIPS 2021, arXiv 2105.08952).

Kept as ``docs/methods/qfa.md`` states it and apple/ml-batchquant
(``utils/quantize_utils.py``, ``utils/observer.py``) implements it:

- range from the *detached* input: for ``x`` of shape N×C×H×W, ``m = mean_c min_{n,h,w}
  x[:, c]`` and ``M = mean_c max_{n,h,w} x[:, c]`` (2-D input: per feature over the batch),
  then ``m ← min(m, 0)``, ``M ← max(M, 0)``;
- ``s_B = max((M − m)/(qmax − qmin), eps)``, ``z_B = clip(qmin − round(m/s_B), qmin, qmax)``;
- learnable per slot: ``α = softplus(θ; beta=ln 2)`` with ``θ = 0`` (α starts at exactly 1)
  and an offset ``β = 0``;
- ``q = round_ste(clamp(x·α/s_B + z_B + β, qmin, qmax))``, ``x̂ = (q − z_B − β)·s_B/α``.

In training mode (and while recalibrating) the current batch's ``m, M`` are used: no EMA.
In eval mode the running ``m, M`` of the slot are used; they are set only by recalibration
(:func:`benchmark.arena.recipes.scoring.recalibrate` calls :meth:`start_calibration` /
:meth:`end_calibration`): the plain average of the batch values seen meanwhile. A slot never
recalibrated falls back to the batch range in eval mode (the original would divide by its
zero-initialised running range).

With ``per_bit=True`` (QFA) every bit-width has its own ``θ``, ``β`` and running range; the
unit of ``m``, ``M``, ``s_B`` is the activation's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.arena.quant import batchquant_kernel
from benchmark.arena.quant.lsq import KERNEL_ENV
from benchmark.arena.quant.quantizer import (
    DEFAULT_BIT_CHOICES,
    Quantizer,
    QuantizerConfig,
    register_quantizer,
)

SOFTPLUS_BETA = math.log(2.0)
"""``softplus(0; beta=ln 2) = 1``: the learned scale α starts at 1."""


@dataclass(frozen=True)
class BatchQuantConfig(QuantizerConfig):
    """BatchQuant's options (dict form ``{"kind": "batchquant", "eps": 1e-8}``).

    Attributes:
        eps: lower bound of the batch step ``s_B`` (unit of the activation).
    """

    kind: ClassVar[str] = "batchquant"
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if isinstance(self.eps, bool) or not isinstance(self.eps, int | float) or self.eps <= 0:
            raise ValueError(f"BatchQuantConfig.eps must be a positive number, got {self.eps!r}")


def batch_range(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(m, M)`` of a detached batch: per-channel min / max over every other dim, averaged
    over channels (dim 1), then clipped to include 0 (0-dim tensors). A contiguous CPU
    float32 batch of ≥ 3 dims, contiguous or channels-last, reads its memory once through
    the fused kernel (the same values: a min or a max is exact in any order)."""
    x = x.detach()
    if x.dim() < 2:
        raise ValueError(f"BatchQuant needs a batch of at least 2 dims (N×C...), got {x.dim()}")
    fused = x.dim() >= 3 and batchquant_path(x) == "fused"
    if fused and x.is_contiguous():
        low, high = batchquant_kernel.plane_ranges(batchquant_kernel.load(), x)
    elif fused and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        low, high = batchquant_kernel.channel_ranges_last(batchquant_kernel.load(), x)
    else:
        inner = tuple(range(2, x.dim()))  # the contiguous dims first, then the batch
        low = (x.amin(dim=inner) if inner else x).amin(dim=0)  # min, a faster reduction on CPU
        high = (x.amax(dim=inner) if inner else x).amax(dim=0)
    return low.mean().clamp(max=0.0), high.mean().clamp(min=0.0)


def batch_qparams(
    low: Tensor, high: Tensor, qmin: int, qmax: int, eps: float
) -> tuple[Tensor, Tensor]:
    """Step ``s_B`` and zero point ``z_B`` (an integer-valued float) of the range."""
    scale = ((high - low) / (qmax - qmin)).clamp(min=eps)
    zero = (qmin - torch.round(low / scale)).clamp(qmin, qmax)
    return scale, zero


class _BatchQuantFunction(torch.autograd.Function):
    """``x̂ = (round(clamp(x·α/s + z + β)) − z − β)·s/α`` with a straight-through round.

    Gradients (``s``, ``z`` are constants from the detached input):
    ``∂x̂/∂x = 1`` inside the clamp range, else 0; ``∂x̂/∂β = −s/α`` outside, else 0;
    ``∂x̂/∂α = (inside·x − x̂)/α``.

    Written for few fresh allocations (on CPU a new activation-sized tensor, not the
    arithmetic, dominates the cost): the forward pass allocates the pre-clamp codes, the
    clamped codes (which become ``x̂`` in place) and the bool mask, and reuses the pre-clamp
    buffer for ``d = inside·x − x̂``; the backward pass reduces ``Σ grad·d`` (α) without a
    temporary and allocates one tensor: the gradient outside the range (summed for β), then
    turned into ``grad_x = grad − outside part`` in place. The values are the plain formula's
    (``grad_x`` bit for bit; the sums up to their float order).
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, alpha: Tensor, beta: Tensor, scale: Tensor, zero: Tensor, qmin, qmax
    ) -> Tensor:
        shift = zero + beta
        u = x * (alpha / scale)
        u.add_(shift)
        clamped = u.clamp(qmin, qmax)
        inside = torch.eq(u, clamped)
        out = clamped.round_().sub_(shift).mul_(scale / alpha)
        d_alpha = None
        if ctx.needs_input_grad[1]:  # d = inside·x − x̂, in u's memory
            d_alpha = torch.where(inside, x, x.new_zeros(()), out=u).sub_(out)
        del u
        ctx.save_for_backward(d_alpha, inside, alpha, scale)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        d_alpha, inside, alpha, scale = ctx.saved_tensors
        grad_x = grad_alpha = grad_beta = None
        if ctx.needs_input_grad[1]:
            total = torch.dot(grad.reshape(-1), d_alpha.reshape(-1))
            grad_alpha = (total / alpha).reshape(alpha.shape)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[2]:
            part = torch.where(inside, grad.new_zeros(()), grad)  # grad outside the range
            if ctx.needs_input_grad[2]:
                grad_beta = (-(scale / alpha) * part.sum()).reshape(alpha.shape)
            if ctx.needs_input_grad[0]:  # grad − outside part: grad inside, exactly 0 outside
                grad_x = torch.sub(grad, part, out=part)
        return grad_x, grad_alpha, grad_beta, None, None, None, None


class _BatchQuantKernelFunction(torch.autograd.Function):
    """BatchQuant through the fused C++ CPU kernel (:mod:`.batchquant_kernel`); the same
    maths and float32 forward bits as :class:`_BatchQuantFunction`. Saves only ``x`` (which
    its producer usually keeps anyway) and the three scalars: the backward pass recomputes
    the codes, so the forward pass writes one activation-sized tensor, not three."""

    @staticmethod
    def forward(
        ctx, x: Tensor, alpha: Tensor, beta: Tensor, scale: Tensor, zero: Tensor, qmin, qmax, lib
    ) -> Tensor:
        scalars = _scalars(alpha, beta, scale, zero)
        out, used = batchquant_kernel.forward(lib, x, *scalars, qmin, qmax)
        if any(ctx.needs_input_grad[:3]):
            ctx.save_for_backward(used, alpha, scale)
        ctx.scalars, ctx.grid, ctx.lib = scalars, (qmin, qmax), lib
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, alpha, scale = ctx.saved_tensors
        need_x, need_alpha, need_beta = ctx.needs_input_grad[:3]
        grad_x, total, outside = batchquant_kernel.backward(
            ctx.lib, grad, x, *ctx.scalars, *ctx.grid, need_x, need_alpha
        )
        grad_alpha = (total / alpha).reshape(alpha.shape) if need_alpha else None
        grad_beta = (-(scale / alpha) * outside).reshape(alpha.shape) if need_beta else None
        return grad_x, grad_alpha, grad_beta, None, None, None, None, None


def _scalars(alpha: Tensor, beta: Tensor, scale: Tensor, zero: Tensor) -> tuple[float, ...]:
    """``α/s``, ``z + β`` and ``s/α`` as the PyTorch path computes them (float32 tensors)."""
    with torch.no_grad():
        a = (alpha / scale).reshape(())
        shift = (zero + beta).reshape(())
        r = (scale / alpha).reshape(())
    return float(a), float(shift), float(r)


def batchquant_path(x: Tensor, *scalars: Tensor) -> str:
    """``"fused"`` (the C++ CPU kernel) or ``"python"`` for these inputs; the LSQ kernel's
    switch ``MPQBENCH_LSQ_KERNEL=python`` also turns this one off."""
    if os.environ.get(KERNEL_ENV, "auto").strip().lower() == "python":
        return "python"
    if not batchquant_kernel.supports(x, *scalars) or batchquant_kernel.load() is None:
        return "python"
    return "fused"


def batchquant(
    x: Tensor, alpha: Tensor, beta: Tensor, scale: Tensor, zero: Tensor, qmin: int, qmax: int
) -> Tensor:
    """Fake-quantize ``x`` with learned ``α``, ``β`` (1-element tensors) on the grid set by
    the step ``scale`` and zero point ``zero`` (0-dim tensors) in ``[qmin, qmax]``: the fused
    CPU kernel for CPU float32, else plain PyTorch (the same values)."""
    if batchquant_path(x, alpha, beta, scale, zero) == "fused":
        lib = batchquant_kernel.load()
        return _BatchQuantKernelFunction.apply(x, alpha, beta, scale, zero, qmin, qmax, lib)
    return _BatchQuantFunction.apply(x, alpha, beta, scale, zero, qmin, qmax)


@register_quantizer(BatchQuantConfig)
class BatchQuantQuantizer(Quantizer):
    """BatchQuant with learnable α (softplus of ``theta``) and β, shared or per bit-width.

    Buffers: ``running_min`` / ``running_max`` (per slot, set by recalibration),
    ``calibrated`` (per slot).
    """

    config: BatchQuantConfig

    def __init__(
        self,
        signed: bool | None = None,
        bit_choices: Sequence[int] = DEFAULT_BIT_CHOICES,
        per_bit: bool = False,
        config: BatchQuantConfig | None = None,
    ) -> None:
        super().__init__(signed=signed, bit_choices=bit_choices, per_bit=per_bit, config=config)
        self.theta = nn.Parameter(torch.zeros(self.num_slots))
        self.offset = nn.Parameter(torch.zeros(self.num_slots))
        self.register_buffer("running_min", torch.zeros(self.num_slots))
        self.register_buffer("running_max", torch.zeros(self.num_slots))
        self.register_buffer("calibrated", torch.zeros(self.num_slots, dtype=torch.bool))
        self._calibrating: dict[int, list[float]] | None = None

    def alpha(self, bits: int) -> Tensor:
        """The learned scale α of the slot used at ``bits`` (1-element tensor, unitless)."""
        slot = self.slot(bits)
        return F.softplus(self.theta[slot : slot + 1], beta=SOFTPLUS_BETA)

    def quantize(self, x: Tensor, bits: int) -> Tensor:
        slot = self.slot(bits)
        qmin, qmax = self.grid(bits)
        low, high = self.range(x, slot)
        scale, zero = batch_qparams(low, high, qmin, qmax, self.config.eps)
        alpha = self.alpha(bits)
        return batchquant(x, alpha, self.offset[slot : slot + 1], scale, zero, qmin, qmax)

    def range(self, x: Tensor, slot: int) -> tuple[Tensor, Tensor]:
        """``(m, M)`` used now: the batch's in training / calibration, else the running one."""
        if self.training or self._calibrating is not None or not bool(self.calibrated[slot]):
            low, high = batch_range(x)
            if self._calibrating is not None:
                sums = self._calibrating.setdefault(slot, [0.0, 0.0, 0])
                sums[0] += float(low)
                sums[1] += float(high)
                sums[2] += 1
            return low, high
        return self.running_min[slot], self.running_max[slot]

    def start_calibration(self) -> None:
        """Start collecting batch ranges (called by recalibration, model in train mode)."""
        self._calibrating = {}

    @torch.no_grad()
    def end_calibration(self) -> None:
        """Running range of every slot used meanwhile = plain mean of its batch ranges."""
        sums, self._calibrating = self._calibrating or {}, None
        for slot, (low, high, count) in sums.items():
            self.running_min[slot] = low / count
            self.running_max[slot] = high / count
            self.calibrated[slot] = True
