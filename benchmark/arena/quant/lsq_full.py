"""LSQ for a weight-sharing supernet's weights, QFA's way: the full weight is quantized, then
sliced (apple/ml-batchquant ``dynamic_q_op.py``: "we grab the active channels after
quantization").

The maths is LSQ's (:mod:`benchmark.arena.quant.lsq`, signed per-tensor, grad scale
``1/sqrt(numel·Qp)``, init ``2·mean|w|/sqrt(Qp)``) but ``numel`` and ``mean|w|`` are those of
the layer's *full* (largest) weight, whatever subnet runs: the config declares
``quantizes_full_weight``, and the elastic layers of a supernet read it to quantize the full
weight and slice the result (:mod:`benchmark.arena.spaces.mbv3.elastic`); :class:`LSQConfig`
keeps the other rule (the active slice quantized, OQAT's). Use it with
``QuantConfig(weight=LSQFullConfig(), per_bit_weight=True)`` for one step per (layer, bit)
over one shared FP weight (QFA). An extracted static subnet quantizes its sliced weight with
the same per-tensor step, which gives the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from benchmark.arena.quant.lsq import LSQConfig, LSQQuantizer
from benchmark.arena.quant.quantizer import register_quantizer


@dataclass(frozen=True)
class LSQFullConfig(LSQConfig):
    """Options of LSQ on the full supernet weight (dict form ``{"kind": "lsq-full",
    "grad_scale": true}``); the same options as :class:`LSQConfig`."""

    kind: ClassVar[str] = "lsq-full"
    quantizes_full_weight: ClassVar[bool] = True


@register_quantizer(LSQFullConfig)
class LSQFullQuantizer(LSQQuantizer):
    """:class:`LSQQuantizer` that elastic layers feed the full weight (then slice), as its
    config declares."""

    config: LSQFullConfig
