"""LSQ: learned step size quantization (Esser et al., 2020), as OQAT and QFA use it.

``x̂ = round(clamp(x/|s|, Qn, Qp))·|s|`` with a straight-through round; the
gradient through the clamp is zero outside ``[Qn, Qp]``; the step's gradient is
scaled by ``1/sqrt(numel·Qp)``; ``s`` starts at ``2·mean|x|/sqrt(Qp)`` on first use.
Its options are :class:`LSQConfig` (registered as kind ``"lsq"``).

Two implementations give the same numbers (forward and ``grad_x`` bit for bit; the step's
gradient up to the order of its float sum):

- ``fused``: a C++ CPU kernel (:mod:`benchmark.arena.quant.lsq_kernel`), one pass over memory
  forward and one backward; used for CPU float32 tensors. It is compiled on first use and
  cached in torch's extension directory.
- ``python``: :class:`_LSQFunction` in plain PyTorch; used for other devices and dtypes, when
  the kernel cannot be built (one warning is logged), or when the environment variable
  ``MPQBENCH_LSQ_KERNEL=python`` is set (read on every call; ``auto``, the default, picks the
  kernel where it applies).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from benchmark.arena.quant import lsq_kernel
from benchmark.arena.quant.quantizer import (
    DEFAULT_BIT_CHOICES,
    Quantizer,
    QuantizerConfig,
    register_quantizer,
)

_EPS = 1e-8  # added to |s| (same unit as x); the C++ kernel adds the same float32 constant
KERNEL_ENV = "MPQBENCH_LSQ_KERNEL"


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


class _LSQKernelFunction(torch.autograd.Function):
    """LSQ through the fused C++ CPU kernel; the same maths as :class:`_LSQFunction`.

    Saved for backward: one float32 code per element (``round(v) − v`` inside the range,
    ``∓inf`` below/above it), from which one pass gives ``grad_x`` and ``Σ grad·d``.
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, step: Tensor, qn: int, qp: int, grad_scale: float, lib: Any
    ) -> Tensor:
        out, code = lsq_kernel.forward(lib, x, step, qn, qp, save_code=True)
        ctx.save_for_backward(code, step)
        ctx.grid = (qn, qp)
        ctx.grad_scale = grad_scale
        ctx.lib = lib
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        code, step = ctx.saved_tensors
        need_x, need_step = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, total = lsq_kernel.backward(ctx.lib, grad, code, *ctx.grid, need_x, need_step)
        grad_step = None
        if need_step:
            grad_step = (ctx.grad_scale * torch.sign(step)) * total
        return grad_x, grad_step, None, None, None, None


def lsq_path(x: Tensor, step: Tensor) -> str:
    """Which implementation :func:`lsq_quantize` uses for these inputs: ``"fused"`` or
    ``"python"`` (builds the kernel on the first call that could use it)."""
    if os.environ.get(KERNEL_ENV, "auto").strip().lower() == "python":
        return "python"
    if not lsq_kernel.supports(x, step) or lsq_kernel.load() is None:
        return "python"
    return "fused"


def lsq_quantize(x: Tensor, step: Tensor, qn: int, qp: int, grad_scale: float) -> Tensor:
    """Fake-quantize ``x`` with step ``step`` (a 1-element tensor) on the grid ``[qn, qp]``.

    ``grad_scale`` (unitless) multiplies the step's gradient. See the module docstring for
    which implementation runs.
    """
    if lsq_path(x, step) == "python":
        return _LSQFunction.apply(x, step, qn, qp, grad_scale)
    lib = lsq_kernel.load()
    if torch.is_grad_enabled() and (x.requires_grad or step.requires_grad):
        return _LSQKernelFunction.apply(x, step, qn, qp, grad_scale, lib)
    out, _ = lsq_kernel.forward(lib, x, step, qn, qp, save_code=False)
    return out


@dataclass(frozen=True)
class LSQConfig(QuantizerConfig):
    """LSQ's options (dict form ``{"kind": "lsq", "grad_scale": true}``).

    Attributes:
        grad_scale: scale the step's gradient by ``1/sqrt(numel·Qp)`` as the LSQ paper
            (and OQAT / QFA) do; ``False`` leaves it unscaled (factor 1).
    """

    kind: ClassVar[str] = "lsq"
    grad_scale: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.grad_scale, bool):
            raise TypeError(f"LSQConfig.grad_scale must be a bool, got {self.grad_scale!r}")


@register_quantizer(LSQConfig)
class LSQQuantizer(Quantizer):
    """LSQ with one learnable step size, shared by all bit-widths or kept per bit-width."""

    config: LSQConfig

    def __init__(
        self,
        signed: bool | None = None,
        bit_choices: Sequence[int] = DEFAULT_BIT_CHOICES,
        per_bit: bool = False,
        config: LSQConfig | None = None,
    ) -> None:
        super().__init__(signed=signed, bit_choices=bit_choices, per_bit=per_bit, config=config)
        self.step = nn.Parameter(torch.ones(self.num_slots))
        self.register_buffer("initialized", torch.zeros(self.num_slots, dtype=torch.bool))

    def quantize(self, x: Tensor, bits: int) -> Tensor:
        slot = self.slot(bits)
        qn, qp = self.grid(bits)
        if not bool(self.initialized[slot]):
            self.init_step(x, bits)
        grad_scale = 1.0 / math.sqrt(x.numel() * qp) if self.config.grad_scale else 1.0
        return lsq_quantize(x, self.step[slot : slot + 1], qn, qp, grad_scale)

    @torch.no_grad()
    def init_step(self, x: Tensor, bits: int) -> None:
        """``s = 2·mean|x|/sqrt(Qp)`` for the slot used at ``bits``."""
        slot = self.slot(bits)
        _, qp = self.grid(bits)
        self.step[slot] = max(2.0 * x.detach().abs().mean().item() / math.sqrt(qp), _EPS)
        self.initialized[slot] = True

    @torch.no_grad()
    def scale_range(self, factor: float) -> None:
        """``s ← factor·s`` in every slot (an uninitialised slot still initialises on first
        use)."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"a step size scale must be a positive number, got {factor!r}")
        self.step.mul_(float(factor))

    @torch.no_grad()
    def reset_range(self) -> None:
        """Every slot initialises its step again on first use (``s = 2·mean|x|/sqrt(Qp)``)."""
        self.initialized.fill_(False)

    def step_size(self, bits: int) -> float:
        """The step size used at ``bits`` (same unit as the quantized tensor)."""
        return abs(float(self.step.detach()[self.slot(bits)]))
