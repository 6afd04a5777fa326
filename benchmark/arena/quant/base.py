""":class:`QuantConfig`: which quantizers a quantized layer uses and how their state is shared.

The quantizer interface itself (:class:`Quantizer`, :class:`QuantizerConfig`, the registry)
is in :mod:`benchmark.arena.quant.quantizer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from benchmark.arena.policy import FP_BITS
from benchmark.arena.quant.lsq import LSQConfig
from benchmark.arena.quant.quantizer import (
    DEFAULT_BIT_CHOICES,
    Quantizer,
    QuantizerConfig,
    as_quantizer_config,
    create_quantizer,
)

__all__ = ["ACT_GRIDS", "QuantConfig"]

_KEYS = ("weight", "act", "per_bit_weight", "per_bit_act", "bit_choices", "act_grid")

ACT_GRIDS = ("layer", "unsigned")
"""Activation grids a :class:`QuantConfig` can ask for: ``"layer"`` (each layer's own grid,
as the space states it: signed for inputs that can be negative) and ``"unsigned"`` (every
quantized input on ``[0, 2^b - 1]``, ``Qn = 0``; negative inputs are clipped to 0)."""


@dataclass(frozen=True)
class QuantConfig:
    """Which quantizers a quantized layer uses, and how their state is shared.

    Attributes:
        weight: the weight quantizer's config (signed grid), e.g. ``LSQConfig()``; a kind
            name (``"lsq"``) or the dict form is accepted and stored as the config.
        act: the same for input activations.
        per_bit_weight: keep one weight state per bit-width (QFA) instead of one shared (OQAT).
        per_bit_act: the same for activations.
        bit_choices: bit-widths the layers may be set to (bits, sorted, below 32; 32 = FP is
            always allowed). A search space adds every bit-width its layers can be set to
            (:meth:`with_bits`), so per-bit state has a slot for each.
        act_grid: ``"layer"`` (default): each layer's activation grid as the space builds it
            (signed where its input can be negative); ``"unsigned"``: every quantized input
            on the unsigned grid ``Qn = 0, Qp = 2^b - 1`` whatever the layer, as OQAT's code
            quantizes every conv input (``elastic_nn/modules/lsq_conv.py``), so negative
            inputs (e.g. mbv3's expand convs reading the residual stream) are clipped to 0.
    """

    weight: QuantizerConfig = field(default_factory=LSQConfig)
    act: QuantizerConfig = field(default_factory=LSQConfig)
    per_bit_weight: bool = False
    per_bit_act: bool = False
    bit_choices: tuple[int, ...] = DEFAULT_BIT_CHOICES
    act_grid: str = "layer"

    def __post_init__(self) -> None:
        if self.act_grid not in ACT_GRIDS:
            raise ValueError(
                f"act_grid must be one of {', '.join(ACT_GRIDS)}, got {self.act_grid!r}"
            )
        object.__setattr__(self, "weight", as_quantizer_config(self.weight))
        object.__setattr__(self, "act", as_quantizer_config(self.act))
        bits = sorted({int(b) for b in self.bit_choices if int(b) < FP_BITS})
        if not bits or bits[0] < 1:
            raise ValueError(f"bit_choices must be bit-widths from 1 to 31, got {self.bit_choices}")
        object.__setattr__(self, "bit_choices", tuple(bits))

    def with_bits(self, bits: Iterable[int]) -> QuantConfig:
        """This config with ``bits`` (bits; 32 ignored) added to :attr:`bit_choices`."""
        return replace(self, bit_choices=(*self.bit_choices, *bits))

    def make_weight_quantizer(self) -> Quantizer:
        return create_quantizer(
            self.weight, signed=True, bit_choices=self.bit_choices, per_bit=self.per_bit_weight
        )

    def make_act_quantizer(self, signed: bool | None) -> Quantizer:
        """The input quantizer of a layer whose own grid is ``signed`` (``None``: decided on
        the first input); :attr:`act_grid` ``"unsigned"`` overrides it."""
        if self.act_grid == "unsigned":
            signed = False
        return create_quantizer(
            self.act, signed=signed, bit_choices=self.bit_choices, per_bit=self.per_bit_act
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready form: quantizer configs as ``{"kind": ..., ...}`` dicts."""
        return {
            "weight": self.weight.to_dict(),
            "act": self.act.to_dict(),
            "per_bit_weight": self.per_bit_weight,
            "per_bit_act": self.per_bit_act,
            "bit_choices": list(self.bit_choices),
            "act_grid": self.act_grid,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantConfig:
        """The config :meth:`to_dict` wrote (missing keys take their defaults)."""
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ValueError(
                f"unknown QuantConfig key(s) {', '.join(unknown)}; use {', '.join(_KEYS)}"
            )
        data = dict(data)
        if "bit_choices" in data:
            data["bit_choices"] = tuple(data["bit_choices"])
        return cls(**data)
