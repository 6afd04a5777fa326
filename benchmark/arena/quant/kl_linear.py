"""Linear quantization with a calibrated clip (HAQ's quantizer, Wang et al., CVPR 2019).

For a clip ``c`` (same unit as the tensor) and ``b`` bits:

- signed grid (weights, signed activations): ``s = c/(2^(b−1) − 1)``,
  ``x̂ = round(clip(x, −c, c)/s)·s``;
- unsigned grid (activations after ReLU): ``s = c/(2^b − 1)``, ``x̂ = round(clip(x, 0, c)/s)·s``.

Rounding is straight-through. ``c`` is calibrated on the first tensor quantized at a
bit-width (HAQ calibrates on one batch before its short finetune): below
``kl_below_bits`` bits (5 in HAQ) it is the clip minimising the KL divergence between the
histogram of ``|x|`` and its quantized version (:func:`kl_clip`), else ``max |x|``;
``clip_init`` caps it (HAQ's activations: 6.0). With ``learn_clip`` (activations) the clip
is then a parameter trained through the clipping, as PACT (``∂x̂/∂c = 1`` where ``x > c``),
and the tensor's gradient is passed inside the clip only; without it (weights) the clip
stays as calibrated, is recalibrated when the quantizer is asked for other bits, and the
gradient passes straight through, as in HAQ's code (mit-han-lab/haq,
``lib/utils/quantize_utils.py``).

The KL search follows the usual histogram calibration (the TensorRT INT8 method): the
histogram of ``|x|`` (``√n`` bins, 32 to 2048) is cut at each candidate clip, the cut-off
mass folded into the last kept bin (``P``), and compared with the cut histogram without
that mass merged into the grid's levels and spread back evenly over the non-empty bins
(``Q``). HAQ's code uses a variant
(a J-divergence on cumulative histograms); the criterion here is the KL the paper names.
"""

from __future__ import annotations

import math
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

_EPS = 1e-8  # smallest clip (same unit as x): an all-zero tensor still gets a valid step
MIN_BINS, MAX_BINS = 32, 2048


@dataclass(frozen=True)
class KLLinearConfig(QuantizerConfig):
    """Options of the calibrated linear quantizer (dict form ``{"kind": "kl_linear", ...}``).

    Attributes:
        kl_below_bits: below this many bits the clip is KL-calibrated, at or above it
            ``max |x|`` (HAQ: 5).
        learn_clip: train the clip after calibration (PACT-like; HAQ's activations).
        clip_init: upper cap of the calibrated clip, same unit as the tensor (HAQ's
            activations: 6.0); 0 means no cap (HAQ's weights).
    """

    kind: ClassVar[str] = "kl_linear"
    kl_below_bits: int = 5
    learn_clip: bool = False
    clip_init: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.kl_below_bits, int) or isinstance(self.kl_below_bits, bool):
            raise TypeError(f"kl_below_bits must be a whole number, got {self.kl_below_bits!r}")
        if not 1 <= self.kl_below_bits <= 32:
            raise ValueError(f"kl_below_bits must be from 1 to 32, got {self.kl_below_bits}")
        if not isinstance(self.learn_clip, bool):
            raise TypeError(f"learn_clip must be a bool, got {self.learn_clip!r}")
        clip = self.clip_init
        if isinstance(clip, bool) or not isinstance(clip, int | float) or not math.isfinite(clip):
            raise TypeError(f"clip_init must be a finite number, got {clip!r}")
        if clip < 0:
            raise ValueError(f"clip_init must be ≥ 0 (0: no cap), got {clip}")


def grid_levels(bits: int, signed: bool) -> int:
    """Positive grid steps at ``bits``: ``2^(b−1) − 1`` (signed) or ``2^b − 1`` (unsigned)."""
    return 2 ** (bits - 1) - 1 if signed else 2**bits - 1


@torch.no_grad()
def kl_clip(magnitudes: Tensor, bits: int, signed: bool) -> float:
    """The clip (same unit as the tensor) minimising KL(P ‖ Q) for ``bits`` bits.

    ``magnitudes`` are ``|x|`` (signed grid) or ``max(x, 0)`` (unsigned). ``P`` is their
    histogram cut at the candidate clip, the mass beyond folded into the last kept bin;
    ``Q`` is the cut histogram (without that mass) merged into the grid's ``2^(b−1)``
    (signed) or ``2^b`` (unsigned) levels, each level's mass spread evenly over its bins
    where ``P`` is not empty; both are normalised. Every bin edge from the
    number of levels up to ``max`` is a candidate; returns ``max`` when there are too few
    bins to cut.
    """
    values = magnitudes.detach().flatten().float()
    top = float(values.max()) if values.numel() else 0.0
    if top <= 0.0:
        return 0.0
    groups = 2 ** (bits - 1) if signed else 2**bits
    n_bins = min(max(int(math.sqrt(values.numel())), MIN_BINS), MAX_BINS)
    if n_bins <= groups:
        return top
    hist = torch.histc(values, bins=n_bins, min=0.0, max=top).double().cpu()
    total = hist.sum()
    zero = torch.zeros(1, dtype=hist.dtype)
    mass = torch.cat([zero, hist.cumsum(0)])  # mass[j]: bins < j
    filled = torch.cat([zero, (hist > 0).double().cumsum(0)])
    ent = torch.cat([zero, torch.where(hist > 0, hist * hist.clamp_min(1e-300).log(), 0).cumsum(0)])

    kept = torch.arange(groups, n_bins + 1, dtype=torch.long)  # bins kept by each candidate
    tail = total - mass[kept]
    last = hist[kept - 1] + tail  # P's last bin: the cut-off mass folded in (> 0: holds max)
    p_log_p = ent[kept - 1] + last * last.log()  # Σ P log P
    k = torch.arange(groups + 1, dtype=torch.long)
    edges = (k[None, :] * kept[:, None]) // groups  # level boundaries, (candidates, groups+1)
    lo, hi = edges[:, :-1], edges[:, 1:]
    q_mass = mass[hi] - mass[lo]  # Q: each level's mass of the histogram as cut (no tail)...
    nonempty = filled[hi] - filled[lo]  # ...spread over the level's bins where P > 0
    nonempty[:, -1] = filled[kept - 1] - filled[lo[:, -1]] + 1  # P's last bin is never empty
    p_mass = q_mass.clone()
    p_mass[:, -1] += tail
    log_q = (q_mass / nonempty.clamp_min(1)).clamp_min(1e-300).log()
    cross = torch.where(p_mass > 0, p_mass * log_q, 0).sum(1)  # Σ P log Q
    # KL(P/ΣP ‖ Q/ΣQ) with ΣP = total and ΣQ = mass[kept]
    divergence = (p_log_p - cross) / total + (mass[kept] / total).log()
    divergence[q_mass[:, -1] <= 0] = math.inf  # P has mass where Q has none
    best = int(torch.argmin(divergence))
    return float(kept[best]) * top / n_bins


@register_quantizer(KLLinearConfig)
class KLLinearQuantizer(Quantizer):
    """Linear quantizer with a calibrated (and optionally learned) clip per state slot."""

    config: KLLinearConfig

    def __init__(
        self,
        signed: bool | None = None,
        bit_choices: Sequence[int] = DEFAULT_BIT_CHOICES,
        per_bit: bool = False,
        config: KLLinearConfig | None = None,
    ) -> None:
        super().__init__(signed=signed, bit_choices=bit_choices, per_bit=per_bit, config=config)
        start = self.config.clip_init or 1.0
        self.clip = nn.Parameter(
            torch.full((self.num_slots,), float(start)), requires_grad=self.config.learn_clip
        )
        # the bits each slot was calibrated at (0: not yet)
        self.register_buffer("calibrated_bits", torch.zeros(self.num_slots, dtype=torch.long))

    def quantize(self, x: Tensor, bits: int) -> Tensor:
        slot = self.slot(bits)
        done = int(self.calibrated_bits[slot])
        if done == 0 or (done != bits and not self.config.learn_clip):
            self.calibrate(x, bits)
        signed = bool(self.signed)
        clip = self.clip[slot : slot + 1]
        step = clip.detach().abs().clamp_min(_EPS) / grid_levels(bits, signed)
        if self.config.learn_clip:
            upper = clip.abs()
            clipped = torch.minimum(x, upper)
            clipped = torch.maximum(clipped, -upper) if signed else clipped.clamp_min(0.0)
            quantized = torch.round(clipped / step) * step
            return clipped + (quantized - clipped).detach()
        bound = float(step * grid_levels(bits, signed))
        clipped = x.clamp(-bound if signed else 0.0, bound)
        quantized = torch.round(clipped / step) * step
        return x + (quantized - x).detach()

    @torch.no_grad()
    def calibrate(self, x: Tensor, bits: int) -> float:
        """Set the clip of the slot used at ``bits`` from ``x``; returns it (unit of ``x``)."""
        slot = self.slot(bits)
        signed = bool(self.signed)
        magnitudes = x.detach().abs() if signed else x.detach().clamp_min(0.0)
        if bits < self.config.kl_below_bits:
            clip = kl_clip(magnitudes, bits, signed)
        else:
            clip = float(magnitudes.max()) if magnitudes.numel() else 0.0
        if self.config.clip_init > 0:
            clip = min(clip, self.config.clip_init)
        clip = max(clip, _EPS)
        self.clip[slot] = clip
        self.calibrated_bits[slot] = bits
        return clip

    def clip_value(self, bits: int) -> float:
        """The clip used at ``bits`` (same unit as the quantized tensor)."""
        return abs(float(self.clip.detach()[self.slot(bits)]))
