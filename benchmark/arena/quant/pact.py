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

A mixture of bit-widths (DNAS's super-net, :func:`benchmark.arena.quant.mixture.mix`) has
two implementations, which give the same forward values and ``grad_x`` bit for bit (``α``'s
and the probabilities' gradients up to the order of their float sums):

- ``fused``: :meth:`PACTQuantizer.fused_mix` runs ``Σ_j p_j·Q_j(x)`` through a C++ CPU
  kernel (:mod:`benchmark.arena.quant.pact_mixture_kernel`), one pass over memory forward
  and one backward, for CPU float32 tensors. It is compiled on first use and cached in
  torch's extension directory.
- ``python``: one :class:`_PACTFunction` per bit-width, multiplied and summed by ``mix``;
  used for other devices and dtypes, when the kernel cannot be built (one warning is
  logged), or when the environment variable ``MPQBENCH_PACT_KERNEL=python`` is set (read on
  every call; ``auto``, the default, picks the kernel where it applies).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from benchmark.arena.policy import FP_BITS
from benchmark.arena.quant import pact_mixture_kernel
from benchmark.arena.quant.quantizer import (
    DEFAULT_BIT_CHOICES,
    Quantizer,
    QuantizerConfig,
    register_quantizer,
)

_EPS = 1e-8  # added to |α| (same unit as x)
_INIT_SAMPLE = 65536  # at most this many elements of the first batch set α
KERNEL_ENV = "MPQBENCH_PACT_KERNEL"


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


class _PACTMixtureFunction(torch.autograd.Function):
    """``Σ_j p_j·Q_j(x)`` through the fused C++ CPU kernel; the same maths and float32 bits
    as the PyTorch path (one :class:`_PACTFunction` per term, multiplied and summed).

    Inputs: ``x``, the k float32 probabilities, the whole clip parameter ``α`` (term j uses
    ``α[slots[j]]``; ``None`` for an FP term). Saves only ``x`` (which its producer usually
    keeps anyway) and ``α``: the backward pass recomputes the clip masks from ``x``.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        probs: Tensor,
        alpha: Tensor,
        terms: pact_mixture_kernel.Terms,
        slots: tuple[int | None, ...],
        grids: tuple[tuple[int, int] | None, ...],
        lib: Any,
    ) -> Tensor:
        out, used = pact_mixture_kernel.forward(lib, x, terms)
        ctx.save_for_backward(used, alpha)
        ctx.terms, ctx.slots, ctx.grids, ctx.lib = terms, slots, grids, lib
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, alpha = ctx.saved_tensors
        need_x, need_p, need_alpha = ctx.needs_input_grad[:3]
        grad_x, sums = pact_mixture_kernel.backward(
            ctx.lib, grad, x, ctx.terms, need_x, need_alpha, need_p
        )
        grad_p = None
        if need_p:
            grad_p = torch.tensor([s[2] for s in sums], dtype=torch.float32)
        grad_alpha = None
        if need_alpha:
            # per term: p_j·(Σ_above grad·qp + Σ_below grad·qn)/levels (PACT's ∂x̂/∂α), × sign(α)
            signs = torch.sign(alpha.detach()).tolist()
            totals = [0.0] * alpha.numel()
            for j, (slot, grid) in enumerate(zip(ctx.slots, ctx.grids, strict=True)):
                if slot is None or grid is None:
                    continue
                qn, qp = grid
                levels = max(-qn, qp)
                above, below, _ = sums[j]
                total = above * (qp / levels)
                if qn < 0:
                    total += below * (qn / levels)
                totals[slot] += ctx.terms.probs[j] * total * signs[slot]
            grad_alpha = torch.tensor(totals, dtype=alpha.dtype).reshape(alpha.shape)
        return grad_x, grad_p, grad_alpha, None, None, None, None


def pact_mixture_path(x: Tensor, alpha: Tensor) -> str:
    """Which implementation a mixture of bit-widths uses for these inputs: ``"fused"`` or
    ``"python"`` (builds the kernel on the first call that could use it)."""
    if os.environ.get(KERNEL_ENV, "auto").strip().lower() == "python":
        return "python"
    if not pact_mixture_kernel.supports(x, alpha) or pact_mixture_kernel.load() is None:
        return "python"
    return "fused"


def pact_mixture(
    x: Tensor,
    probs: Tensor,
    alpha: Tensor,
    slots: Sequence[int | None],
    grids: Sequence[tuple[int, int] | None],
) -> Tensor:
    """``Σ_j probs[j]·Q_j(x)`` through the fused kernel (call only where
    :func:`pact_mixture_path` says ``"fused"``): term j is PACT with clip ``alpha[slots[j]]``
    on the grid ``grids[j]``, or the identity (FP) where both are ``None``. ``probs``: k
    weights (any float dtype; used as ``x``'s dtype, as :func:`~.mixture.mix` does)."""
    lib = pact_mixture_kernel.load()
    p = probs.to(device=x.device, dtype=x.dtype)
    slots, grids = tuple(slots), tuple(grids)
    steps = [0.0] * len(grids)
    quantized = [j for j, g in enumerate(grids) if g is not None]
    if quantized:  # _step's float32 operations, (|α| + 1e-8)/levels, for all terms at once
        clips = alpha.detach()[[slots[j] for j in quantized]]
        levels = torch.tensor([max(-grids[j][0], grids[j][1]) for j in quantized])
        values = (clips.abs() + _EPS) / levels.to(clips.dtype)
        for j, value in zip(quantized, values.tolist(), strict=True):
            steps[j] = value
    terms = pact_mixture_kernel.Terms.create(steps, p.detach().tolist(), grids)
    if torch.is_grad_enabled() and (x.requires_grad or p.requires_grad or alpha.requires_grad):
        return _PACTMixtureFunction.apply(x, p, alpha, terms, slots, grids, lib)
    out, _ = pact_mixture_kernel.forward(lib, x, terms)
    return out


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

    def fused_mix(self, x: Tensor, bits: Sequence[int], probs: Tensor) -> Tensor | None:
        """``Σ_i probs[i]·self(x, bits[i])`` through the fused CPU kernel (bits; 32 = FP),
        or ``None`` where :func:`pact_mixture_path` says ``"python"`` (or no bit-width is
        below 32, or ``probs`` is not one weight per bit-width): then
        :func:`~benchmark.arena.quant.mixture.mix` sums the terms itself. The same values
        and state updates as that sum: the signedness decided from ``x`` and each slot's
        ``α`` initialised on first use, in list order, before the kernel runs."""
        bits = [int(b) for b in bits]
        if all(b >= FP_BITS for b in bits) or probs.dim() != 1 or probs.numel() != len(bits):
            return None
        if pact_mixture_path(x, self.alpha) == "python":
            return None
        if self.signed is None:  # what Quantizer.forward does before the first quantization
            self._signed.fill_(int(bool((x.detach() < 0).any())))
        slots: list[int | None] = []
        grids: list[tuple[int, int] | None] = []
        for b in bits:
            if b >= FP_BITS:
                slots.append(None)
                grids.append(None)
                continue
            slot = self.slot(b)
            if not bool(self.initialized[slot]):
                self.init_alpha(x, b)
            slots.append(slot)
            grids.append(self.grid(b))
        return pact_mixture(x, probs, self.alpha, slots, grids)

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
