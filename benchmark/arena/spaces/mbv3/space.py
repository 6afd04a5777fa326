"""``mbv3-cifar``: an OFA-style elastic MobileNetV3 for 32×32 images, searched jointly over
architecture and per-layer W/A bits.

Layout (channels, stride, activation, squeeze-excite):

- stem: 3×3 conv 3→16, stride 1, BN, h_swish;
- block 0: MBConv with expand 1 (3×3 depthwise 16, ReLU, 1×1 project 16→16, residual);
- three elastic stages of 2-3 blocks, widths 24 / 40 / 80, first block stride 2,
  activations ReLU / h_swish / h_swish, squeeze-excite no / yes / yes. Each block:
  1×1 expand (``in·e`` channels, e ∈ {3, 4, 6}), depthwise k×k (k ∈ {3, 5}), SE, 1×1
  project, residual when stride 1 and widths match;
- head: 1×1 conv 80→320, BN, h_swish, global average pool, linear 320→classes.

MACs per 32×32 image: 18,326,656 for the largest subnet, 6,035,584 for the smallest,
10,882,688 for :data:`~benchmark.arena.spaces.mbv3.arch.REFERENCE_ARCH` (convs, SE and classifier).

Layer names are stable across architectures: block ``b`` (0 = the expand-1 block, 1-9 =
stage slots, ``b = 1 + 3·stage + slot``) has ``blocks.b.pw_expand``, ``blocks.b.dw``,
``blocks.b.pw_project`` and, in stages 2-3, ``blocks.b.se.reduce`` / ``blocks.b.se.expand``.
Layers of blocks an architecture does not run are absent from its profile and policies.

Bit conventions (stated with every result through :meth:`SearchSpace.config`):

- the stem conv (``stem.conv``, role ``"stem"``), the squeeze-excite convs
  (``blocks.b.se.reduce`` / ``blocks.b.se.expand``, role ``"se"``) and the classifier
  (``classifier``, role ``"classifier"``) are quantized layers fixed by convention, at
  W8A8 by default: never searched, always costed at their fixed bits (see
  :meth:`MBV3CifarSpace.fixed_roles`). ``fixed_bits=32`` keeps all of them full
  precision; per role, ``{"stem": 32, "se": 32, "classifier": 32}`` is OQAT's convention
  and ``{"stem": 32, "se": 32}`` QFA's (FP stem and SE, 8-bit classifier); FP layers
  cost 32×32 BitOPs;
- every other conv (block 0, expand / depthwise / project of each block, head conv) is
  searched over W/A bits {2, 3, 4} (8 and 32 accepted).

Activation quantizers: inputs taken from the residual stream (expand convs, head conv, the
stem's image) use a signed grid; inputs taken after ReLU / h_swish (depthwise, project,
classifier) an unsigned one (h_swish's negative lobe, ≥ -0.375, is clipped to 0). SE
``reduce`` reads the spatial mean of the block's h_swish output (slightly negative for a
channel that sits mostly in the negative lobe) on a signed grid, so that mean is not
clipped; SE ``expand`` reads a ReLU output, unsigned.
Biases (SE convs, classifier) stay full precision.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

from benchmark.arena.cost import LayerProfile, profile_layers
from benchmark.arena.policy import LayerBits, Policy
from benchmark.arena.quant.base import QuantConfig
from benchmark.arena.quant.modules import apply_policy
from benchmark.arena.spaces.base import ElasticSearchSpace, register_space
from benchmark.arena.spaces.mbv3.arch import (
    DEPTH_CHOICES,
    EXPAND_CHOICES,
    KERNEL_CHOICES,
    MAX_DEPTH,
    NUM_SLOTS,
    NUM_STAGES,
    REFERENCE_ARCH,
    MBV3Arch,
    as_arch,
    crossover,
    max_arch,
    min_arch,
    mutate,
    sample_arch,
    uniform_arch,
)
from benchmark.arena.spaces.mbv3.nets import STAGE_SE, MBV3Net, MBV3Supernet, block_index
from benchmark.arena.spaces.taps import conv_bn_act_taps, inverted_residual_taps

_LUT_KEY = "slot-profiles"
"""Key of the per-(kernel, expand) layer profiles in the space's profile cache."""


@register_space("mbv3-cifar")
class MBV3CifarSpace(ElasticSearchSpace):
    """Elastic MobileNetV3 for 32×32 input: kernel, expand, depth and per-layer W/A bits.

    ``build(arch)`` gives a static subnet (random init); :meth:`build_supernet` the
    weight-sharing supernet; :meth:`set_active` and :meth:`extract` move between them.
    Architectures are :class:`MBV3Arch` or their dict form; ``None`` means
    :data:`REFERENCE_ARCH` (full depth, kernel 3, expand 4: what bits-only methods use).
    """

    name = "mbv3-cifar"
    bit_choices = (2, 3, 4)
    searches = "arch+bits"
    default_fixed = {"stem": 8, "se": 8, "classifier": 8}
    tap_blocks = (inverted_residual_taps, conv_bn_act_taps)

    # --- architecture ---------------------------------------------------------------
    @property
    def reference_arch(self) -> MBV3Arch:
        return REFERENCE_ARCH

    @property
    def smallest_arch(self) -> MBV3Arch:
        """Kernel 3, expand 3, depth 2 everywhere (:func:`.arch.min_arch`)."""
        return min_arch()

    def validate_arch(self, arch: Any) -> MBV3Arch:
        """The canonical :class:`MBV3Arch` of ``arch`` (an arch, its dict, or None)."""
        return as_arch(arch)

    def sample_arch(self, rng: random.Random | np.random.Generator) -> MBV3Arch:
        """A uniformly random architecture (see :func:`.arch.sample_arch`)."""
        return sample_arch(rng)

    def arch_choices(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Kernel and expand choices per block slot (9), depth choices per stage (3)."""
        return {
            "kernels": (KERNEL_CHOICES,) * NUM_SLOTS,
            "expands": (EXPAND_CHOICES,) * NUM_SLOTS,
            "depths": (DEPTH_CHOICES,) * NUM_STAGES,
        }

    def max_arch(self) -> MBV3Arch:
        """Kernel 5, expand 6, depth 3 everywhere."""
        return max_arch()

    def min_arch(self) -> MBV3Arch:
        """Kernel 3, expand 3, depth 2 everywhere."""
        return min_arch()

    def mutate(
        self, arch: Any, rng: random.Random | np.random.Generator, prob: float = 0.1
    ) -> MBV3Arch:
        """Each gene of ``arch`` resampled with probability ``prob`` (:func:`.arch.mutate`)."""
        return mutate(self.validate_arch(arch), rng, prob)

    def crossover(self, a: Any, b: Any, rng: random.Random | np.random.Generator) -> MBV3Arch:
        """Uniform crossover of two architectures (:func:`.arch.crossover`)."""
        return crossover(self.validate_arch(a), self.validate_arch(b), rng)

    # --- models -------------------------------------------------------------------------
    def build(
        self,
        arch: Any = None,
        policy: Mapping[str, LayerBits] | None = None,
        quant: QuantConfig | None = None,
    ) -> MBV3Net:
        """A static subnet for ``arch`` (random init), its layers set to ``policy``."""
        arch = self.validate_arch(arch)
        model = MBV3Net(arch, self.num_classes, self.layer_quant(quant))
        if policy is not None:
            apply_policy(model, self.full_policy(policy, arch))
        return model

    def build_supernet(
        self,
        quant: QuantConfig | None = None,
        fp_state: Mapping[str, Tensor] | None = None,
    ) -> MBV3Supernet:
        """The weight-sharing supernet, largest subnet active, all layers FP.

        ``quant`` decides quantizer sharing: the default shares one state per physical
        layer by every subnet and bit-width (OQAT); ``QuantConfig(per_bit_weight=True,
        per_bit_act=True)`` keeps one per bit-width (QFA; :meth:`layer_quant` gives every
        bit-width a layer can be set to a slot, 8 included). ``fp_state`` (the FP supernet
        checkpoint of :func:`~benchmark.arena.recipes.pretrain.pretrain_supernet`) replaces
        the random init; quantizer entries in it are ignored (quantizer state initialises
        on first use).
        """
        supernet = MBV3Supernet(self.num_classes, self.layer_quant(quant))
        if fp_state is not None:
            weights = {k: v for k, v in fp_state.items() if "_quantizer." not in k}
            missing, unexpected = supernet.load_state_dict(weights, strict=False)
            bad = [k for k in (*missing, *unexpected) if "_quantizer." not in k]
            if bad:
                raise ValueError(
                    f"checkpoint is not an {self.name} supernet state: first mismatch {bad[0]!r}"
                )
        return supernet

    def build_from_fp(
        self,
        fp_state: Mapping[str, Any],
        arch: Any = None,
        policy: Mapping[str, LayerBits] | None = None,
        quant: QuantConfig | None = None,
    ) -> MBV3Net:
        """The static subnet ``arch`` extracted from the FP supernet checkpoint ``fp_state``,
        its layers set to ``policy`` (FP if None); quantizers initialise on first use."""
        supernet = self.build_supernet(quant, fp_state)
        return self.extract(supernet, arch, policy)

    def set_active(
        self,
        supernet: MBV3Supernet,
        arch: Any,
        policy: str | Mapping[str, LayerBits] | None = None,
    ) -> MBV3Arch:
        """Validate ``arch`` and ``policy`` (``"w4a4"`` or a mapping over the arch's
        searchable layers) and make the supernet run them; returns the canonical arch.

        With ``policy=None`` the layers keep their current bits.
        """
        arch = self.validate_arch(arch)
        full = None if policy is None else self.parse_policy(policy, arch)
        supernet.set_active(arch, full)
        return arch

    def extract(
        self,
        supernet: MBV3Supernet,
        arch: Any = None,
        policy: str | Mapping[str, LayerBits] | None = None,
    ) -> MBV3Net:
        """A static copy of ``arch`` (default: the supernet's active arch) with inherited
        weights, BN statistics and quantizer state; bits from ``policy`` if given, else the
        supernet's current bits. The supernet's own active arch is not changed.
        """
        arch = supernet.arch if arch is None else self.validate_arch(arch)
        net = supernet.extract(arch)
        if policy is not None:
            apply_policy(net, self.parse_policy(policy, arch))
        return net

    # --- layers ---------------------------------------------------------------------------
    def fixed_roles(self, arch: Any = None) -> dict[str, list[str]]:
        """Fixed layers by role, in network order: stem conv, SE convs, classifier."""
        return {
            "stem": ["stem.conv"],
            "se": self.se_layer_names(arch),
            "classifier": ["classifier"],
        }

    def profiles(self, arch: Any = None) -> dict[str, LayerProfile]:
        """MACs and params per quantizable layer for one 32×32 image, in network order.

        Composed, not profiled per architecture: a block slot's layers depend only on that
        slot's (kernel, expand) (its channels, stride and input size are fixed), so the six
        uniform full-depth architectures, each profiled once by the shared cost model
        (:func:`~benchmark.arena.cost.profile_layers`), give every layer of every
        architecture exactly (``tests/test_qfa.py`` checks it against direct profiling).
        Cached per architecture; the cache is shared with :meth:`with_fixed` copies.
        """
        arch = self.validate_arch(arch)
        cache = self.__dict__.setdefault("_profile_cache", {})
        key = repr(arch)
        if key not in cache:
            table = cache.get(_LUT_KEY)
            if table is None:
                table = cache[_LUT_KEY] = self._slot_profiles()
            out = {}
            for name in self.layer_names(arch):
                block = name.split(".")[1] if name.startswith("blocks.") else "0"
                slot = int(block) - 1
                choice = (3, 3) if slot < 0 else (arch.kernels[slot], arch.expands[slot])
                out[name] = table[choice][name]
            cache[key] = out
        return cache[key]

    def _slot_profiles(self) -> dict[tuple[int, int], dict[str, LayerProfile]]:
        """(kernel, expand) → the layer profiles of the uniform full-depth architecture."""
        depth = max(DEPTH_CHOICES)
        return {
            (k, e): profile_layers(self.build(uniform_arch(depth, k, e)), self.input_shape)
            for k in KERNEL_CHOICES
            for e in EXPAND_CHOICES
        }

    def se_layer_names(self, arch: Any = None) -> list[str]:
        """The squeeze-excite convs of ``arch`` in network order (fixed, role ``"se"``)."""
        return [n for n in self.layer_names(arch) if ".se." in n]

    def layer_names(self, arch: Any = None) -> list[str]:
        """Quantizable layers of ``arch`` in network order (SE convs included; no profiling)."""
        arch = self.validate_arch(arch)
        names = ["stem.conv", "blocks.0.dw", "blocks.0.pw_project"]
        for slot in arch.active_slots():
            b = block_index(slot)
            names += [f"blocks.{b}.pw_expand", f"blocks.{b}.dw"]
            if STAGE_SE[slot // MAX_DEPTH]:
                names += [f"blocks.{b}.se.reduce", f"blocks.{b}.se.expand"]
            names.append(f"blocks.{b}.pw_project")
        return [*names, "head.conv", "classifier"]

    def sample_policy(
        self,
        arch: Any,
        rng: random.Random | np.random.Generator,
        bits: tuple[int, ...] | None = None,
    ) -> Policy:
        """A full policy with every searchable layer's W and A bits drawn independently
        and uniformly from ``bits`` (default :attr:`bit_choices`)."""
        bits = tuple(bits or self.bit_choices)

        def draw() -> int:
            if isinstance(rng, np.random.Generator):
                return int(bits[int(rng.integers(len(bits)))])
            return int(rng.choice(bits))

        names = self.searchable_layers(arch)
        return self.full_policy({n: LayerBits(draw(), draw()) for n in names}, arch)
