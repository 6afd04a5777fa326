"""Symmetric min/max quantization: HAWQ-V3's weight quantizer, as a plain function.

The scale of a slice is its largest magnitude over ``2^(b−1) − 1`` (per output channel for
weights, as HAWQ-V3's ``symmetric_linear_quantization_params(per_channel=True)``); values
are rounded to the nearest multiple of the scale and clamped to the signed ``b``-bit range
``[−2^(b−1), 2^(b−1) − 1]``. No state, no gradient: a measurement of what quantization does
to a tensor (HAWQ-V3's ``‖Q(W) − W‖²``), not a training quantizer.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCALE_FLOOR = 1e-8
"""A slice whose largest magnitude is below this keeps this scale (HAWQ-V3's clamp)."""


@torch.no_grad()
def symmetric_minmax(x: Tensor, bits: int, *, channel_dim: int | None = 0) -> Tensor:
    """``x`` quantized to ``bits`` and back (same units as ``x``): one scale per slice along
    ``channel_dim`` (the output channels of a conv or linear weight), or one for the whole
    tensor when ``channel_dim`` is None."""
    if bits < 2:
        raise ValueError(f"symmetric min/max quantization needs at least 2 bits, got {bits}")
    levels = 2 ** (bits - 1) - 1
    if channel_dim is None:
        peak = x.abs().amax()
    else:
        dims = [d for d in range(x.dim()) if d != channel_dim % x.dim()]
        peak = x.abs().amax(dim=dims, keepdim=True) if dims else x.abs()
    scale = peak.clamp(min=SCALE_FLOOR) / levels
    return torch.clamp(torch.round(x / scale), -levels - 1, levels) * scale
