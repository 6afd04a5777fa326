"""Quantizers and quantized modules shared by every method.

Importing this package registers the built-in quantizers (``lsq``: :class:`LSQConfig`;
``kl_linear``: :class:`KLLinearConfig`, HAQ's calibrated linear quantizer; ``dorefa``:
:class:`DoReFaConfig`, DNAS's weights; ``pact``: :class:`PACTConfig`, DNAS's activations;
``lsq-full``: :class:`LSQFullConfig`, LSQ on a supernet's full weight, then sliced;
``batchquant``: :class:`BatchQuantConfig`, QFA's activation quantizer).
"""

from benchmark.arena.quant.base import ACT_GRIDS, QuantConfig
from benchmark.arena.quant.batchquant import BatchQuantConfig, BatchQuantQuantizer
from benchmark.arena.quant.dorefa import DoReFaConfig, DoReFaQuantizer
from benchmark.arena.quant.kl_linear import KLLinearConfig, KLLinearQuantizer, kl_clip
from benchmark.arena.quant.lsq import LSQConfig, LSQQuantizer, lsq_quantize
from benchmark.arena.quant.lsq_full import LSQFullConfig, LSQFullQuantizer
from benchmark.arena.quant.mixture import BitMixture, BranchMixture
from benchmark.arena.quant.modules import (
    QConv2d,
    QLinear,
    QuantLayer,
    apply_policy,
    copy_quant_state,
    current_policy,
    quant_layers,
    quantize_model,
    reset_quant_ranges,
    scale_quant_ranges,
)
from benchmark.arena.quant.pact import PACTConfig, PACTQuantizer, pact_quantize
from benchmark.arena.quant.quantizer import (
    DEFAULT_BIT_CHOICES,
    Quantizer,
    QuantizerConfig,
    as_quantizer_config,
    create_quantizer,
    list_quantizers,
    register_quantizer,
)

__all__ = [
    "ACT_GRIDS",
    "DEFAULT_BIT_CHOICES",
    "BatchQuantConfig",
    "BatchQuantQuantizer",
    "BitMixture",
    "BranchMixture",
    "DoReFaConfig",
    "DoReFaQuantizer",
    "KLLinearConfig",
    "KLLinearQuantizer",
    "LSQConfig",
    "LSQFullConfig",
    "LSQFullQuantizer",
    "LSQQuantizer",
    "PACTConfig",
    "PACTQuantizer",
    "QConv2d",
    "QLinear",
    "QuantConfig",
    "QuantLayer",
    "Quantizer",
    "QuantizerConfig",
    "apply_policy",
    "as_quantizer_config",
    "copy_quant_state",
    "create_quantizer",
    "current_policy",
    "kl_clip",
    "list_quantizers",
    "lsq_quantize",
    "pact_quantize",
    "quant_layers",
    "quantize_model",
    "register_quantizer",
    "reset_quant_ranges",
    "scale_quant_ranges",
]
