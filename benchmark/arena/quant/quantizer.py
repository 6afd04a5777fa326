"""The quantizer interface: :class:`Quantizer`, its typed config and the registry.

A quantizer is an ``nn.Module`` called as ``quantizer(x, bits)``; ``bits >= 32``
returns ``x`` unchanged (full precision). Its learnable state (step sizes, clip
values) is either shared by every bit-width or kept per bit-width, chosen by
``per_bit``.

Each kind of quantizer has one frozen dataclass for its own options, a subclass of
:class:`QuantizerConfig` naming the kind (``kind = "lsq"``), and the registry maps that
config type to the quantizer class. Adding a kind (BatchQuant, PACT, DoReFa,
KL-calibrated linear) is a config dataclass, a :class:`Quantizer` subclass and one
``@register_quantizer(TheConfig)`` on the class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from benchmark.arena.policy import FP_BITS

DEFAULT_BIT_CHOICES: tuple[int, ...] = (2, 3, 4, 8)


@dataclass(frozen=True)
class QuantizerConfig:
    """Base of the per-kind quantizer configs (frozen dataclasses of plain values).

    Subclasses set ``kind`` (the registered name, also the ``"kind"`` key of the dict
    form) and declare their options as fields with defaults. Field values must be
    ``bool``, ``int``, ``float``, ``str`` or tuples of them, so that
    ``from_dict(to_dict())`` (also through JSON) gives an equal config.
    """

    kind: ClassVar[str] = ""
    quantizes_full_weight: ClassVar[bool] = False
    """The rule of a weight quantizer in an elastic (weight-sharing) layer that runs a slice
    of its weight: ``False`` quantizes the active slice (its ``numel`` and statistics are the
    slice's: OQAT's shared step); ``True`` quantizes the layer's full weight and then slices
    the result (BatchQuant's rule, :class:`~benchmark.arena.quant.lsq_full.LSQFullConfig`).
    Fixed layers have nothing to slice and ignore it."""

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., <option>: <value>, ...}`` (tuples as lists, JSON-ready)."""
        data: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantizerConfig:
        """The config ``data`` describes; on the base class the ``"kind"`` key picks the
        registered type. Unknown kinds or options raise ``ValueError`` (one line)."""
        data = dict(data)
        kind = data.pop("kind", cls.kind or None)
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"a quantizer config needs a 'kind' key, got {sorted(data)}")
        config_type = config_type_of(kind)
        if cls is not QuantizerConfig and config_type is not cls:
            raise ValueError(f"{kind!r} is not a {cls.kind!r} quantizer config")
        names = {f.name for f in fields(config_type)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for quantizer {kind!r}; "
                f"its options are {', '.join(sorted(names)) or 'none'}"
            )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return config_type(**values)


class Quantizer(nn.Module, ABC):
    """Base class: fake-quantizes a tensor to ``bits`` bits (STE in the backward pass).

    Args:
        signed: ``True`` for a symmetric signed grid, ``False`` for an unsigned one,
            ``None`` to decide on the first quantized input (signed if it has negatives).
        bit_choices: bit-widths this quantizer may be asked for (bits; 32 = FP is always
            accepted and needs no slot).
        per_bit: keep separate learnable state per bit-width instead of sharing it.
        config: this kind's options (default: the registered config type's defaults).
    """

    config_type: ClassVar[type[QuantizerConfig]] = QuantizerConfig

    def __init__(
        self,
        signed: bool | None = None,
        bit_choices: Sequence[int] = DEFAULT_BIT_CHOICES,
        per_bit: bool = False,
        config: QuantizerConfig | None = None,
    ) -> None:
        super().__init__()
        config = self.config_type() if config is None else config
        if not isinstance(config, self.config_type):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_type.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
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

    def scale_range(self, factor: float) -> None:
        """Multiply the learned range state (step sizes, clip values) by ``factor``
        (unitless), every slot; OQAT's bit inheritance doubles LSQ's steps when a supernet
        drops one bit. A kind without such state raises ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} has no range state to scale")

    def reset_range(self) -> None:
        """Forget the learned range state of every slot, so that each initialises again on
        its next use (from the data, as at the start); OQAT's ``inherit_steps="reinit"``.
        A kind without such state raises ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} has no range state to reset")

    def extra_repr(self) -> str:
        return f"signed={self.signed}, bits={self.bit_choices}, per_bit={self.per_bit}"


Q = TypeVar("Q", bound=type[Quantizer])
_QUANTIZERS: dict[type[QuantizerConfig], type[Quantizer]] = {}


def register_quantizer(config_type: type[QuantizerConfig]) -> Callable[[Q], Q]:
    """Class decorator: ``config_type`` (a :class:`QuantizerConfig` subclass with a unique
    ``kind``) builds the decorated :class:`Quantizer` class."""
    if not (isinstance(config_type, type) and issubclass(config_type, QuantizerConfig)):
        raise TypeError(
            "register_quantizer takes the quantizer's config dataclass, e.g. "
            f"@register_quantizer(LSQConfig), got {config_type!r}"
        )
    if not config_type.kind:
        raise ValueError(f"{config_type.__name__} must set a non-empty `kind`")

    def wrap(cls: Q) -> Q:
        for other in _QUANTIZERS:
            if other.kind == config_type.kind and other is not config_type:
                raise ValueError(f"quantizer kind {config_type.kind!r} is already registered")
        cls.config_type = config_type
        _QUANTIZERS[config_type] = cls
        return cls

    return wrap


def list_quantizers() -> list[str]:
    """The registered quantizer kinds (``"lsq"``, ...)."""
    return sorted(c.kind for c in _QUANTIZERS)


def config_type_of(kind: str) -> type[QuantizerConfig]:
    """The config type registered for ``kind``; unknown kinds raise ``ValueError``."""
    for config_type in _QUANTIZERS:
        if config_type.kind == kind:
            return config_type
    raise ValueError(f"unknown quantizer {kind!r}; choose one of {', '.join(list_quantizers())}")


def as_quantizer_config(spec: QuantizerConfig | str | Mapping[str, Any]) -> QuantizerConfig:
    """A config from a config, a kind name (its defaults: ``"lsq"`` → ``LSQConfig()``) or
    the dict form (``{"kind": "lsq", ...}``)."""
    if isinstance(spec, QuantizerConfig):
        return spec
    if isinstance(spec, str):
        return config_type_of(spec)()
    if isinstance(spec, Mapping):
        return QuantizerConfig.from_dict(spec)
    raise TypeError(f"expected a QuantizerConfig, a kind name or a dict, got {spec!r}")


def create_quantizer(
    config: QuantizerConfig | str | Mapping[str, Any],
    *,
    signed: bool | None = None,
    bit_choices: Sequence[int] = DEFAULT_BIT_CHOICES,
    per_bit: bool = False,
) -> Quantizer:
    """Build the quantizer registered for ``config`` (see :func:`as_quantizer_config`).

    Unknown kinds or unregistered config types raise ``ValueError`` listing valid kinds.
    """
    config = as_quantizer_config(config)
    cls = _QUANTIZERS.get(type(config))
    if cls is None:
        raise ValueError(
            f"quantizer config {type(config).__name__} is not registered; "
            f"registered kinds: {', '.join(list_quantizers())}"
        )
    return cls(signed=signed, bit_choices=bit_choices, per_bit=per_bit, config=config)
