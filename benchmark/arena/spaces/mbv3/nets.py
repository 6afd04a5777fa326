"""The ``mbv3-cifar`` networks: a static subnet (:class:`MBV3Net`) and the weight-sharing
supernet (:class:`MBV3Supernet`) with its elastic blocks; the layout and conventions are
in :mod:`benchmark.arena.spaces.mbv3.space`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.arena.policy import LayerBits, PolicyError
from benchmark.arena.quant.base import QuantConfig
from benchmark.arena.quant.modules import QConv2d, QLinear, apply_policy, quant_layers
from benchmark.arena.spaces.mbv3.arch import (
    MAX_DEPTH,
    NUM_STAGES,
    MBV3Arch,
    as_arch,
    max_arch,
)
from benchmark.arena.spaces.mbv3.elastic import (
    DynamicBatchNorm2d,
    DynamicDWConv2d,
    DynamicQConv2d,
    DynamicSE,
    SqueezeExcite,
    front_slice,
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
        checked here: :meth:`MBV3CifarSpace.set_active` validates a full policy first.
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
