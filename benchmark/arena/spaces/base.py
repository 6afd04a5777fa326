"""The search-space interface and its registry.

A space builds models, names its quantizable layers, states its bit conventions
(which layers are fixed at which bits: :mod:`benchmark.arena.spaces.fixed`) and checks
policies. Fixed-architecture spaces (``resnet20``) ignore ``arch``; elastic spaces
(``mbv3-cifar``) take one.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from torch import nn

from benchmark.arena.cost import (
    CostReport,
    LayerProfile,
    Reference,
    profile_layers,
)
from benchmark.arena.cost_table import CostTable
from benchmark.arena.policy import (
    FP_BITS,
    LayerBits,
    Policy,
    PolicyError,
    parse_uniform,
    uniform_policy,
)
from benchmark.arena.quant.base import QuantConfig
from benchmark.arena.spaces.fixed import FixedConvention, FixedSpec
from benchmark.arena.spaces.taps import BlockLayout, FeatureTap, TapMode, find_taps


class SpaceError(ValueError):
    """An unknown space or an invalid architecture for it."""


class SearchSpace(ABC):
    """A shared search space. Subclasses set ``name``, ``bit_choices``, ``searches`` and
    ``default_fixed``, and implement :meth:`fixed_roles` (or, with the one role
    ``"fixed"`` at 8 bits, only :meth:`fixed_layer_names`).

    Args:
        fixed_bits: the convention for the layers that are never searched
            (:data:`~benchmark.arena.spaces.fixed.FixedSpec`): ``None`` keeps the space's
            ``default_fixed``; an int puts every fixed layer at that W = A bits (32 = full
            precision); a mapping from role (``"stem"``, ``"classifier"``, ...) or fixed
            layer name to bits changes only those. Stated by :meth:`config` (in every
            result's metadata); a candidate may bring its own (:meth:`with_fixed`).
    """

    name: ClassVar[str]
    bit_choices: ClassVar[tuple[int, ...]]
    searches: ClassVar[str]  # "bits" or "arch+bits"
    input_shape: ClassVar[tuple[int, int, int]] = (3, 32, 32)
    # role → bits (W = A), roles in network order
    default_fixed: ClassVar[Mapping[str, int]] = {"fixed": 8}
    # the block layouts the space's nets are made of (:meth:`feature_taps`)
    tap_blocks: ClassVar[tuple[BlockLayout, ...]] = ()

    def __init__(self, fixed_bits: FixedSpec | None = None, num_classes: int = 10) -> None:
        self.num_classes = num_classes
        self.fixed: FixedConvention = self._convention(
            FixedConvention.of(self.default_fixed), fixed_bits
        )

    # --- architecture ---------------------------------------------------------------
    @property
    def reference_arch(self) -> Any:
        """The architecture bits-only methods work on (``None`` for fixed spaces)."""
        return None

    @property
    def smallest_arch(self) -> Any:
        """The architecture with the fewest MACs and parameters (``None`` for fixed spaces)."""
        return self.reference_arch

    def validate_arch(self, arch: Any) -> Any:
        """Return ``arch`` normalised for this space, or raise :class:`SpaceError`."""
        return None

    @abstractmethod
    def build(
        self,
        arch: Any = None,
        policy: Mapping[str, LayerBits] | None = None,
        quant: QuantConfig | None = None,
    ) -> nn.Module:
        """A fresh model (random init) with quantized layers set to ``policy`` (FP if None)."""

    def build_from_fp(
        self,
        fp_state: Mapping[str, Any],
        arch: Any = None,
        policy: Mapping[str, LayerBits] | None = None,
        quant: QuantConfig | None = None,
    ) -> nn.Module:
        """A standalone model of ``arch`` carrying the FP checkpoint's weights.

        Quantizer state is not taken from an FP checkpoint (its entries, whatever
        quantizer wrote them, are ignored); it initialises on first use. Elastic spaces
        override this to extract the subnet from the FP supernet.
        """
        model = self.build(arch, policy=policy, quant=quant)
        weights = {k: v for k, v in fp_state.items() if "_quantizer." not in k}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        bad = [k for k in (*missing, *unexpected) if "_quantizer." not in k]
        if bad:
            raise ValueError(f"FP checkpoint does not fit {self.name}: first mismatch {bad[0]!r}")
        return model

    # --- the fixed-precision convention ---------------------------------------------
    def fixed_roles(self, arch: Any = None) -> dict[str, list[str]]:
        """The layers the convention fixes, by role (the keys of ``default_fixed``, in that
        order), each role's layers in network order.

        The default puts :meth:`fixed_layer_names` in the one role ``"fixed"``, for a space
        that implements only that method.
        """
        if type(self).fixed_layer_names is SearchSpace.fixed_layer_names:
            raise NotImplementedError(f"{type(self).__name__} must implement fixed_roles")
        return {"fixed": self.fixed_layer_names(arch)}

    def fixed_layer_names(self, arch: Any = None) -> list[str]:
        """Layers whose bits the convention fixes (never searched), role by role."""
        return [name for names in self.fixed_roles(arch).values() for name in names]

    def fixed_policy(self, arch: Any = None) -> Policy:
        """Bits of every fixed layer of ``arch`` under this space's convention."""
        return self.fixed.resolve(self.fixed_roles(arch))

    @property
    def fixed_bits(self) -> int | dict[str, Any]:
        """The convention as :meth:`config` states it: ``b`` when every fixed layer is at
        W = A = ``b`` bits, else :meth:`FixedConvention.to_dict` (role / layer → bits)."""
        uniform = self.fixed.uniform_bits
        return self.fixed.to_dict() if uniform is None else uniform

    def with_fixed(self, fixed: FixedSpec | None) -> SearchSpace:
        """This space with another convention for its fixed layers (``fixed`` changes this
        one, see :data:`~benchmark.arena.spaces.fixed.FixedSpec`; ``None``: this space).

        The copy shares everything else (layer profiles included); cost, feasibility,
        ``build`` and both evaluation tracks of a candidate use the convention of the space
        they are called on. Raises :class:`SpaceError` for an unknown role or layer, or
        bits outside :meth:`allowed_bits`.
        """
        if fixed is None:
            return self
        self.__dict__.setdefault("_profile_cache", {})  # shared with the copy
        other = copy.copy(self)
        other.fixed = self._convention(self.fixed, fixed)
        other.__dict__["_cost_table_cache"] = {}  # its own: the fixed layers' bits differ
        return other

    def _convention(self, base: FixedConvention, spec: FixedSpec | None) -> FixedConvention:
        if spec is None:
            return base
        role_layers = self.fixed_roles(self.reference_arch)  # every name a spec may use
        try:
            return base.apply(spec, role_layers, self.allowed_bits())
        except ValueError as err:
            raise SpaceError(f"{self.name}: {err}") from None

    def layer_quant(self, quant: QuantConfig | None = None) -> QuantConfig:
        """The quantizer config this space builds its layers with: ``quant`` (default
        ``QuantConfig()``) with :meth:`allowed_bits` added to its ``bit_choices``, so that
        per-bit quantizer state has a slot for every bit-width a layer can be set to (the
        fixed layers' 8 bits included)."""
        return (quant or QuantConfig()).with_bits(self.allowed_bits())

    def config(self) -> dict[str, Any]:
        """What defines this space instance (stored with every result); ``fixed_bits``
        states the convention (:attr:`fixed_bits`)."""
        return {"name": self.name, "fixed_bits": self.fixed_bits, "num_classes": self.num_classes}

    # --- layers and policies -----------------------------------------------------
    def profiles(self, arch: Any = None) -> dict[str, LayerProfile]:
        """MACs and params per quantizable layer for one 32×32 image, in network order."""
        arch = self.validate_arch(arch)
        key = None if arch is None else repr(arch)
        cache = self.__dict__.setdefault("_profile_cache", {})
        if key not in cache:
            cache[key] = profile_layers(self.build(arch), self.input_shape)
        return cache[key]

    def cost_table(self, arch: Any = None) -> CostTable:
        """Per-layer costs of ``arch`` (MACs per 32×32 image, params, BitOPs and weight
        bits at every allowed bit pair, the fixed layers at this convention's bits): the
        one object that costs and checks a policy of ``arch`` (:meth:`cost`,
        :meth:`full_policy`). Cached per arch, per convention."""
        arch = self.validate_arch(arch)
        key = None if arch is None else repr(arch)
        cache = self.__dict__.setdefault("_cost_table_cache", {})
        if key not in cache:
            profiles = self.profiles(arch)
            fixed = {n: b for n, b in self.fixed_policy(arch).items() if n in profiles}
            cache[key] = CostTable(tuple(profiles.values()), fixed, self.allowed_bits())
        return cache[key]

    def tied_layers(self, arch: Any = None) -> list[tuple[str, ...]]:
        """Groups of searchable layers that an integer pipeline runs at one bit-width: a
        shortcut (downsample) conv and the main-path conv reading the same input, as
        HAWQ-V3's ILP ties them. Each group has two or more layers; groups are disjoint.

        None here, nor in ``resnet20`` (option-A shortcuts have no conv) or ``mbv3-cifar``
        (identity shortcuts); a space with shortcut convs overrides this. Policies do not
        enforce ties: a method that wants them (``hawq``) reads them.
        """
        return []

    def feature_taps(self, model: nn.Module, arch: Any = None) -> tuple[list[FeatureTap], TapMode]:
        """Where ``model`` (a build of ``arch``) exposes the features that set each
        searchable layer's bits, one tap per group of layers, in network order, and how
        they were found (:func:`~benchmark.arena.spaces.taps.find_taps`): from the blocks
        the space declares in ``tap_blocks``, else one tap per layer at its raw output.
        """
        return find_taps(model, self.searchable_layers(arch), self.tap_blocks)

    def layer_names(self, arch: Any = None) -> list[str]:
        return list(self.profiles(arch))

    def searchable_layers(self, arch: Any = None) -> list[str]:
        fixed = set(self.fixed_layer_names(arch))
        return [n for n in self.layer_names(arch) if n not in fixed]

    def allowed_bits(self) -> tuple[int, ...]:
        return tuple(sorted({*self.bit_choices, 8, FP_BITS}))

    def full_policy(self, policy: Mapping[str, LayerBits], arch: Any = None) -> Policy:
        """Validate a policy over the searchable layers and add the fixed layers' bits
        (:meth:`CostTable.full_policy` of ``arch``'s table).

        Fixed layers may be listed only at the bits this space's convention gives them
        (:meth:`fixed_policy`; another convention: :meth:`with_fixed`). Raises
        :class:`PolicyError`.
        """
        return self.cost_table(arch).full_policy(policy)

    def uniform_policy(self, w_bits: int, a_bits: int | None = None, arch: Any = None) -> Policy:
        """Every searchable layer at ``w_bits``/``a_bits``, fixed layers per the convention."""
        a_bits = w_bits if a_bits is None else a_bits
        return self.full_policy(uniform_policy(self.searchable_layers(arch), w_bits, a_bits), arch)

    def parse_policy(self, spec: str | Mapping[str, LayerBits], arch: Any = None) -> Policy:
        """``"w4a4"`` or a policy mapping → full policy."""
        if isinstance(spec, str):
            bits = parse_uniform(spec)
            if bits is None:
                raise PolicyError(f"cannot read policy {spec!r}: use e.g. w4a4 or a JSON file")
            return self.uniform_policy(bits.w_bits, bits.a_bits, arch)
        return self.full_policy(spec, arch)

    def reference(self) -> Reference:
        """W8A8 cost of the reference architecture (every counted layer at 8 bits).

        Relative constraints (``bitops<=0.5``) and the ``*_ratio_w8a8`` columns refer to it,
        so on a joint space all architectures are measured against one number.
        """
        return self.cost_table(self.reference_arch).w8a8()

    def cheapest_cost(self) -> CostReport:
        """Cost of the cheapest candidate: :attr:`smallest_arch` with every searchable layer
        at the lowest bit choice (fixed layers per the convention). No constraint tighter
        than this (in BitOPs or size) can be met on this space."""
        arch = self.smallest_arch
        low = min(self.bit_choices)
        return self.cost(self.uniform_policy(low, low, arch), arch)

    def cost(self, policy: Mapping[str, LayerBits], arch: Any = None) -> CostReport:
        """Cost of a (full or searchable-only) policy on this space, for one 32×32 image:
        ``cost_table(arch).report(policy)``."""
        return self.cost_table(arch).report(policy)


class ElasticSearchSpace(SearchSpace):
    """A joint space of architectures and bits served by one weight-sharing supernet.

    What every joint space offers, so that methods never probe with ``getattr``:
    architectures (sample, largest, smallest, mutate, crossover), the supernet (build it,
    make it run one subnet with a policy, extract a static copy of a subnet). Its FP
    starting point is an FP supernet, not one FP model. ``rng`` is a ``random.Random``
    or a ``numpy.random.Generator``.
    """

    @abstractmethod
    def sample_arch(self, rng: Any) -> Any:
        """A uniformly random architecture of this space."""

    @abstractmethod
    def max_arch(self) -> Any:
        """The largest architecture (the supernet's teacher in the sandwich rule)."""

    @abstractmethod
    def min_arch(self) -> Any:
        """The smallest architecture."""

    @abstractmethod
    def mutate(self, arch: Any, rng: Any, prob: float = 0.1) -> Any:
        """``arch`` with each gene resampled with probability ``prob``."""

    @abstractmethod
    def crossover(self, a: Any, b: Any, rng: Any) -> Any:
        """A child of ``a`` and ``b``, each gene from either parent."""

    def arch_choices(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """The architecture's genes: field of ``arch.to_dict()`` → the choices of each of
        its entries, in order (what encoders and genetic searches enumerate;
        ``validate_arch`` of such a dict gives the architecture back)."""
        raise NotImplementedError(f"{type(self).__name__} does not list its architecture genes")

    @abstractmethod
    def build_supernet(
        self, quant: QuantConfig | None = None, fp_state: Mapping[str, Any] | None = None
    ) -> nn.Module:
        """The weight-sharing supernet (random init, or ``fp_state``'s weights)."""

    @abstractmethod
    def set_active(
        self, supernet: nn.Module, arch: Any, policy: str | Mapping[str, LayerBits] | None = None
    ) -> Any:
        """Make ``supernet`` run ``arch`` with ``policy`` (``None``: keep the layers' bits);
        validates both and returns the canonical architecture."""

    @abstractmethod
    def extract(
        self,
        supernet: nn.Module,
        arch: Any = None,
        policy: str | Mapping[str, LayerBits] | None = None,
    ) -> nn.Module:
        """A static copy of subnet ``arch`` with the weights it inherits from ``supernet``."""


SpaceFactory = Callable[..., SearchSpace]
_SPACES: dict[str, SpaceFactory] = {}


def register_space(name: str) -> Callable[[SpaceFactory], SpaceFactory]:
    """Class decorator that makes a space available by name."""

    def wrap(factory: SpaceFactory) -> SpaceFactory:
        _SPACES[name] = factory
        return factory

    return wrap


def list_spaces() -> list[str]:
    return sorted(_SPACES)


def get_space(name: str, **kwargs: Any) -> SearchSpace:
    """Build a registered space; unknown names raise :class:`SpaceError` listing valid ones."""
    if name not in _SPACES:
        raise SpaceError(f"unknown space {name!r}; choose one of {', '.join(list_spaces())}")
    return _SPACES[name](**kwargs)
