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
10,882,688 for :data:`~benchmark.spaces.mbv3_arch.REFERENCE_ARCH` (convs, SE and classifier).

Layer names are stable across architectures: block ``b`` (0 = the expand-1 block, 1-9 =
stage slots, ``b = 1 + 3·stage + slot``) has ``blocks.b.pw_expand``, ``blocks.b.dw``,
``blocks.b.pw_project`` and, in stages 2-3, ``blocks.b.se.reduce`` / ``blocks.b.se.expand``.
Layers of blocks an architecture does not run are absent from its profile and policies.

Bit conventions (stated with every result through :meth:`SearchSpace.config`):

- the stem conv (``stem.conv``), the squeeze-excite convs (``blocks.b.se.reduce`` /
  ``blocks.b.se.expand``) and the classifier (``classifier``) are quantized layers fixed
  at ``fixed_bits`` (default 8): never searched, always costed at ``fixed_bits`` ×
  ``fixed_bits`` (see :meth:`MBV3CifarSpace.fixed_layer_names`). ``fixed_bits=32`` keeps
  all of them full precision, which restores the FP squeeze-excite of OQAT / QFA (SE then
  costs 32×32 BitOPs; stem conv and classifier are FP too);
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
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.policy import LayerBits, Policy, PolicyError
from benchmark.quant.base import QuantConfig
from benchmark.quant.modules import QConv2d, QLinear, apply_policy, quant_layers
from benchmark.spaces.base import SearchSpace, register_space
from benchmark.spaces.elastic import (
    DynamicBatchNorm2d,
    DynamicDWConv2d,
    DynamicQConv2d,
    DynamicSE,
    SqueezeExcite,
    front_slice,
)
from benchmark.spaces.mbv3_arch import (
    MAX_DEPTH,
    NUM_STAGES,
    REFERENCE_ARCH,
    MBV3Arch,
    as_arch,
    max_arch,
    min_arch,
    sample_arch,
)

STEM_CHANNELS = 16
FIRST_BLOCK_CHANNELS = 16
STAGE_WIDTHS: tuple[int, ...] = (24, 40, 80)
STAGE_STRIDES: tuple[int, ...] = (2, 2, 2)
STAGE_ACTS: tuple[str, ...] = ("relu", "h_swish", "h_swish")
STAGE_SE: tuple[bool, ...] = (False, True, True)
HEAD_CHANNELS = 320

_ACTS = {"relu": nn.ReLU, "h_swish": nn.Hardswish}


def block_index(slot: int) -> int:
    """Index in ``blocks`` of elastic slot ``slot`` (0-8); block 0 is the expand-1 block."""
    return 1 + slot


def _slot_layout(slot: int) -> tuple[int, int, int, str, bool]:
    """``(in_channels, out_channels, stride, activation, se)`` of elastic slot ``slot``."""
    stage, j = divmod(slot, MAX_DEPTH)
    prev = FIRST_BLOCK_CHANNELS if stage == 0 else STAGE_WIDTHS[stage - 1]
    in_ch = prev if j == 0 else STAGE_WIDTHS[stage]
    stride = STAGE_STRIDES[stage] if j == 0 else 1
    return in_ch, STAGE_WIDTHS[stage], stride, STAGE_ACTS[stage], STAGE_SE[stage]


class ConvBNAct(nn.Module):
    """``act(bn(conv(x)))`` (stem and head); names ``conv``, ``bn``."""

    def __init__(self, conv: QConv2d, act: str) -> None:
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(conv.out_channels)
        self.act = _ACTS[act]()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: [1×1 expand, BN, act] → dw, BN, act → [SE] → 1×1 project, BN (+x)."""

    def __init__(
        self,
        *,
        pw_expand: nn.Module | None,
        expand_bn: nn.Module | None,
        dw: nn.Module,
        dw_bn: nn.Module,
        se: nn.Module | None,
        pw_project: nn.Module,
        project_bn: nn.Module,
        act: str,
        residual: bool,
    ) -> None:
        super().__init__()
        self.pw_expand = pw_expand
        self.expand_bn = expand_bn
        self.dw = dw
        self.dw_bn = dw_bn
        self.se = se
        self.pw_project = pw_project
        self.project_bn = project_bn
        self.act = _ACTS[act]()
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.pw_expand is not None:
            h = self.act(self.expand_bn(self.pw_expand(h)))
        h = self.act(self.dw_bn(self.dw(h)))
        if self.se is not None:
            h = self.se(h)
        h = self.project_bn(self.pw_project(h))
        return h + x if self.residual else h


def _first_block(quant: QuantConfig) -> MBConv:
    c = FIRST_BLOCK_CHANNELS
    return MBConv(
        pw_expand=None,
        expand_bn=None,
        dw=QConv2d(c, c, 3, padding=1, groups=c, bias=False, quant=quant, act_signed=False),
        dw_bn=nn.BatchNorm2d(c),
        se=None,
        pw_project=QConv2d(c, c, 1, bias=False, quant=quant, act_signed=False),
        project_bn=nn.BatchNorm2d(c),
        act="relu",
        residual=STEM_CHANNELS == c,
    )


def _static_block(slot: int, kernel: int, expand: int, quant: QuantConfig) -> MBConv:
    in_ch, out_ch, stride, act, use_se = _slot_layout(slot)
    mid = in_ch * expand
    return MBConv(
        pw_expand=QConv2d(in_ch, mid, 1, bias=False, quant=quant, act_signed=True),
        expand_bn=nn.BatchNorm2d(mid),
        dw=QConv2d(
            mid,
            mid,
            kernel,
            stride=stride,
            padding=kernel // 2,
            groups=mid,
            bias=False,
            quant=quant,
            act_signed=False,
        ),
        dw_bn=nn.BatchNorm2d(mid),
        se=SqueezeExcite(mid, quant=quant) if use_se else None,
        pw_project=QConv2d(mid, out_ch, 1, bias=False, quant=quant, act_signed=False),
        project_bn=nn.BatchNorm2d(out_ch),
        act=act,
        residual=stride == 1 and in_ch == out_ch,
    )


def _elastic_block(slot: int, quant: QuantConfig) -> MBConv:
    in_ch, out_ch, stride, act, use_se = _slot_layout(slot)
    mid = in_ch * max_arch().expands[slot]
    return MBConv(
        pw_expand=DynamicQConv2d(in_ch, mid, quant=quant, act_signed=True),
        expand_bn=DynamicBatchNorm2d(mid),
        dw=DynamicDWConv2d(mid, stride, quant=quant, act_signed=False),
        dw_bn=DynamicBatchNorm2d(mid),
        se=DynamicSE(mid, quant=quant) if use_se else None,
        pw_project=DynamicQConv2d(mid, out_ch, quant=quant, act_signed=False),
        project_bn=nn.BatchNorm2d(out_ch),
        act=act,
        residual=stride == 1 and in_ch == out_ch,
    )


class _MBV3Base(nn.Module):
    """Stem, the blocks listed in ``_active`` (in order), head, pool, classifier."""

    def __init__(self, blocks: dict[str, MBConv], num_classes: int, quant: QuantConfig) -> None:
        super().__init__()
        self.quant = quant
        self.num_classes = num_classes
        self.stem = ConvBNAct(
            QConv2d(3, STEM_CHANNELS, 3, padding=1, bias=False, quant=quant, act_signed=True),
            "h_swish",
        )
        self.blocks = nn.ModuleDict(blocks)
        self.head = ConvBNAct(
            QConv2d(STAGE_WIDTHS[-1], HEAD_CHANNELS, 1, bias=False, quant=quant, act_signed=True),
            "h_swish",
        )
        self.classifier = QLinear(HEAD_CHANNELS, num_classes, quant=quant, act_signed=False)
        self._active: list[MBConv] = list(self.blocks.values())
        self._init_weights()

    def _init_weights(self) -> None:
        """OFA's ``he_fout``: conv N(0, 2/(k²·C_out)); BN 1/0; linear U(±1/√in), bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features**0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        # channels-last: 2-5× faster depthwise backward on CPU (oneDNN), same values
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        for block in self._active:
            x = block(x)
        x = F.adaptive_avg_pool2d(self.head(x), 1).flatten(1)
        return self.classifier(x)


class MBV3Net(_MBV3Base):
    """A static subnet: ordinary layers sized to ``arch`` (only its active blocks exist)."""

    def __init__(
        self, arch: MBV3Arch, num_classes: int = 10, quant: QuantConfig | None = None
    ) -> None:
        quant = quant or QuantConfig()
        blocks = {"0": _first_block(quant)}
        for slot in arch.active_slots():
            blocks[str(block_index(slot))] = _static_block(
                slot, arch.kernels[slot], arch.expands[slot], quant
            )
        super().__init__(blocks, num_classes, quant)
        self.arch = arch


class MBV3Supernet(_MBV3Base):
    """The weight-sharing supernet: one set of weights for every :class:`MBV3Arch`.

    :meth:`set_active` chooses the subnet that ``forward`` runs (initially the largest).
    """

    def __init__(self, num_classes: int = 10, quant: QuantConfig | None = None) -> None:
        quant = quant or QuantConfig()
        blocks = {"0": _first_block(quant)}
        for slot in range(NUM_STAGES * MAX_DEPTH):
            blocks[str(block_index(slot))] = _elastic_block(slot, quant)
        super().__init__(blocks, num_classes, quant)
        self.arch = max_arch()
        self.set_active(self.arch)

    def set_active(
        self, arch: MBV3Arch | Mapping[str, Any], policy: Mapping[str, LayerBits] | None = None
    ) -> None:
        """Run ``arch`` from now on; set the bits of its layers from ``policy`` if given.

        ``policy`` may name only layers of the active blocks (others raise
        :class:`PolicyError`); layers it omits keep their bits. No space conventions are
        checked here: :meth:`MBV3CifarSpace.activate` validates a full policy first.
        """
        arch = as_arch(arch)
        for slot in range(NUM_STAGES * MAX_DEPTH):
            block = self.blocks[str(block_index(slot))]
            block.pw_expand.active_out = block.pw_expand.in_channels * arch.expands[slot]
            block.dw.active_kernel = arch.kernels[slot]
        self._active = [self.blocks["0"]]
        self._active += [self.blocks[str(block_index(s))] for s in arch.active_slots()]
        self.arch = arch
        if policy is not None:
            active = set(self.active_layer_names())
            outside = [name for name in policy if name not in active]
            if outside:
                raise PolicyError(
                    f"layer {outside[0]!r} is not a quantized layer of the active subnet"
                )
            apply_policy(self, policy)

    def active_layer_names(self) -> list[str]:
        """Quantized layers the active subnet runs, in network order."""
        prefixes = ["stem."] + [f"blocks.{k}." for k, b in self.blocks.items() if b in self._active]
        prefixes.append("head.")
        names = list(quant_layers(self))
        return [n for n in names if n == "classifier" or n.startswith(tuple(prefixes))]

    @torch.no_grad()
    def extract(self, arch: MBV3Arch | Mapping[str, Any] | None = None) -> MBV3Net:
        """A standalone :class:`MBV3Net` for ``arch`` (default: the active one).

        Weights, BN statistics and affine parameters, quantizer state and each layer's
        current bits are copied; 3×3 kernels are materialised through the kernel
        transform. In eval mode its outputs equal this supernet's with ``arch`` active.
        """
        arch = self.arch if arch is None else as_arch(arch)
        device = next(self.parameters()).device
        net = MBV3Net(arch, self.num_classes, self.quant).to(device)
        source = self.state_dict()
        state: dict[str, Tensor] = {}
        for key, target in net.state_dict().items():
            if key.endswith(".dw.weight") and key != "blocks.0.dw.weight":
                block = self.blocks[key.split(".")[1]]
                slot = int(key.split(".")[1]) - 1
                state[key] = block.dw.active_weight(target.shape[0], arch.kernels[slot])
            else:
                state[key] = front_slice(source[key], *target.shape)
        net.load_state_dict(state)
        layers = quant_layers(self)
        for name, layer in quant_layers(net).items():
            layer.set_bits(layers[name].bits)
        return net.train(self.training)


@register_space("mbv3-cifar")
class MBV3CifarSpace(SearchSpace):
    """Elastic MobileNetV3 for 32×32 input: kernel, expand, depth and per-layer W/A bits.

    ``build(arch)`` gives a static subnet (random init); :meth:`build_supernet` the
    weight-sharing supernet; :meth:`activate` and :meth:`extract` move between them.
    Architectures are :class:`MBV3Arch` or their dict form; ``None`` means
    :data:`REFERENCE_ARCH` (full depth, kernel 3, expand 4: what bits-only methods use).
    """

    name = "mbv3-cifar"
    bit_choices = (2, 3, 4)
    searches = "arch+bits"

    # --- architecture ---------------------------------------------------------------
    @property
    def reference_arch(self) -> MBV3Arch:
        return REFERENCE_ARCH

    @property
    def smallest_arch(self) -> MBV3Arch:
        """Kernel 3, expand 3, depth 2 everywhere (:func:`~.mbv3_arch.min_arch`)."""
        return min_arch()

    def validate_arch(self, arch: Any) -> MBV3Arch:
        """The canonical :class:`MBV3Arch` of ``arch`` (an arch, its dict, or None)."""
        return as_arch(arch)

    def sample_arch(self, rng: random.Random | np.random.Generator) -> MBV3Arch:
        """A uniformly random architecture (see :func:`~.mbv3_arch.sample_arch`)."""
        return sample_arch(rng)

    # --- models -------------------------------------------------------------------------
    def build(
        self,
        arch: Any = None,
        policy: Mapping[str, LayerBits] | None = None,
        quant: QuantConfig | None = None,
    ) -> MBV3Net:
        """A static subnet for ``arch`` (random init), its layers set to ``policy``."""
        arch = self.validate_arch(arch)
        model = MBV3Net(arch, self.num_classes, quant)
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
        per_bit_act=True)`` keeps one per bit-width (QFA). ``fp_state`` (the FP supernet
        checkpoint of :meth:`pretrain`) replaces the random init; quantizer entries in it
        are ignored (quantizer state initialises on first use).
        """
        supernet = MBV3Supernet(self.num_classes, quant)
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

    def pretrain(self, splits: Any, preset: Any, **kwargs: Any) -> tuple[dict, dict]:
        """The cached FP supernet (:func:`benchmark.supernet.pretrain_supernet`)."""
        from benchmark.supernet import pretrain_supernet  # supernet imports train: import late

        return pretrain_supernet(self, splits, preset, **kwargs)

    def activate(
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
    def fixed_layer_names(self, arch: Any = None) -> list[str]:
        """Layers fixed at ``fixed_bits``, in network order: stem conv, SE convs, classifier."""
        return ["stem.conv", *self.se_layer_names(arch), "classifier"]

    def se_layer_names(self, arch: Any = None) -> list[str]:
        """The squeeze-excite convs of ``arch`` in network order (fixed at ``fixed_bits``)."""
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
