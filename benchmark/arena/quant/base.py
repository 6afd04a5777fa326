"""The quantizer interface, its registry and the config that chooses quantizers.

A quantizer is an ``nn.Module`` called as ``quantizer(x, bits)``; ``bits >= 32``
returns ``x`` unchanged (full precision). Its learnable state (step sizes, clip
values) is either shared by every bit-width or kept per bit-width, chosen by
``per_bit``. Later methods add their own kinds (BatchQuant, PACT, DoReFa,
KL-calibrated linear) with :func:`register_quantizer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.arena.policy import FP_BITS

DEFAULT_BIT_CHOICES: tuple[int, ...] = (2, 3, 4, 8)


class Quantizer(nn.Module, ABC):
    """Base class: fake-quantizes a tensor to ``bits`` bits (STE in the backward pass).

    Args:
        signed: ``True`` for a symmetric signed grid, ``False`` for an unsigned one,
            ``None`` to decide on the first quantized input (signed if it has negatives).
        bit_choices: bit-widths this quantizer may be asked for (bits).
        per_bit: keep separate learnable state per bit-width instead of sharing it.
    """

    def __init__(
        self,
        signed: bool | None = None,
        bit_choices: Sequence[int] = DEFAULT_BIT_CHOICES,
        per_bit: bool = False,
    ) -> None:
        super().__init__()
        self.bit_choices = tuple(sorted(set(int(b) for b in bit_choices if b < FP_BITS)))
        self.per_bit = per_bit
        # -1: undecided (auto), 0: unsigned, 1: signed. A buffer so it is saved and copied.
        self.register_buffer("_signed", torch.tensor(-1 if signed is None else int(signed)))

    @property
    def signed(self) -> bool | None:
        value = int(self._signed)
        return None if value < 0 else bool(value)

    def grid(self, bits: int) -> tuple[int, int]:
        """Integer range ``(Qn, Qp)`` of the grid at ``bits`` bits."""
        if self.signed:
            return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return 0, 2**bits - 1

    def slot(self, bits: int) -> int:
        """Index of the state used at ``bits``: 0 when shared, else the bit's position."""
        if bits not in self.bit_choices:
            raise ValueError(f"{bits}-bit is not among this quantizer's bits {self.bit_choices}")
        return self.bit_choices.index(bits) if self.per_bit else 0

    @property
    def num_slots(self) -> int:
        return len(self.bit_choices) if self.per_bit else 1

    def forward(self, x: Tensor, bits: int) -> Tensor:
        if bits >= FP_BITS:
            return x
        if self.signed is None:
            self._signed.fill_(int(bool((x.detach() < 0).any())))
        return self.quantize(x, int(bits))

    @abstractmethod
    def quantize(self, x: Tensor, bits: int) -> Tensor:
        """Fake-quantize ``x`` to ``bits`` bits (``bits < 32``)."""

    def extra_repr(self) -> str:
        return f"signed={self.signed}, bits={self.bit_choices}, per_bit={self.per_bit}"


QuantizerFactory = Callable[..., Quantizer]
_QUANTIZERS: dict[str, QuantizerFactory] = {}


def register_quantizer(name: str) -> Callable[[QuantizerFactory], QuantizerFactory]:
    """Class decorator: make a quantizer available by name in :class:`QuantConfig`."""

    def wrap(factory: QuantizerFactory) -> QuantizerFactory:
        _QUANTIZERS[name] = factory
        return factory

    return wrap


def list_quantizers() -> list[str]:
    return sorted(_QUANTIZERS)


def create_quantizer(name: str, **kwargs: Any) -> Quantizer:
    """Build a registered quantizer; unknown names raise ``ValueError`` listing valid ones."""
    if name not in _QUANTIZERS:
        raise ValueError(
            f"unknown quantizer {name!r}; choose one of {', '.join(list_quantizers())}"
        )
    return _QUANTIZERS[name](**kwargs)


@dataclass(frozen=True)
class QuantConfig:
    """Which quantizers a quantized layer uses, and how their state is shared.

    Attributes:
        weight: registered quantizer name for weights (signed grid).
        act: registered quantizer name for input activations.
        per_bit_weight: keep one weight step per bit-width (QFA) instead of one shared (OQAT).
        per_bit_act: the same for activations.
        bit_choices: bit-widths the layers may be set to (bits; 32 = FP is always allowed).
        weight_kwargs / act_kwargs: extra arguments for the quantizer constructors.
    """

    weight: str = "lsq"
    act: str = "lsq"
    per_bit_weight: bool = False
    per_bit_act: bool = False
    bit_choices: tuple[int, ...] = DEFAULT_BIT_CHOICES
    weight_kwargs: dict[str, Any] = field(default_factory=dict)
    act_kwargs: dict[str, Any] = field(default_factory=dict)

    def make_weight_quantizer(self) -> Quantizer:
        return create_quantizer(
            self.weight,
            signed=True,
            bit_choices=self.bit_choices,
            per_bit=self.per_bit_weight,
            **self.weight_kwargs,
        )

    def make_act_quantizer(self, signed: bool | None) -> Quantizer:
        return create_quantizer(
            self.act,
            signed=signed,
            bit_choices=self.bit_choices,
            per_bit=self.per_bit_act,
            **self.act_kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bit_choices"] = list(self.bit_choices)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        data = dict(data)
        if "bit_choices" in data:
            data["bit_choices"] = tuple(data["bit_choices"])
        return cls(**data)
