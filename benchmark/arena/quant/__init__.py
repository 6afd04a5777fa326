"""Quantizers and quantized modules shared by every method.

Importing this package registers the built-in quantizers (``lsq``).
"""

from benchmark.arena.quant.base import (
    DEFAULT_BIT_CHOICES,
    QuantConfig,
    Quantizer,
    create_quantizer,
    list_quantizers,
    register_quantizer,
)
from benchmark.arena.quant.lsq import LSQQuantizer, lsq_quantize
from benchmark.arena.quant.modules import (
    QConv2d,
    QLinear,
    QuantLayer,
    apply_policy,
    copy_quant_state,
    current_policy,
    quant_layers,
    quantize_model,
)

__all__ = [
    "DEFAULT_BIT_CHOICES",
    "LSQQuantizer",
    "QConv2d",
    "QLinear",
    "QuantConfig",
    "QuantLayer",
    "Quantizer",
    "apply_policy",
    "copy_quant_state",
    "create_quantizer",
    "current_policy",
    "list_quantizers",
    "lsq_quantize",
    "quant_layers",
    "quantize_model",
    "register_quantizer",
]
