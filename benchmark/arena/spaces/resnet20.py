"""``resnet20``: CIFAR ResNet-20 (He et al. 2016) with option-A shortcuts, fixed architecture.

3 stages × 3 basic blocks, widths 16/32/64, 40,551,040 MACs per 32×32 image (convs and
classifier). Every conv and the classifier is a quantized layer; the first conv
(``conv1``, role ``"stem"``) and the classifier (``fc``, role ``"classifier"``) are fixed
by convention, at W8A8 by default (``fixed_bits``: an int for both, or per role / layer,
e.g. ``{"stem": 32}``); the 18 block convs are searched over W/A bits {2, 3, 4, 8}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.arena.policy import LayerBits
from benchmark.arena.quant.base import QuantConfig
from benchmark.arena.quant.modules import QConv2d, QLinear, apply_policy
from benchmark.arena.spaces.base import SearchSpace, register_space
from benchmark.arena.spaces.taps import basic_block_taps


class _ShortcutA(nn.Module):
    """Option-A shortcut: stride-2 subsampling and zero-padded channels (no parameters)."""

    def __init__(self, pad_channels: int) -> None:
        super().__init__()
        self.pad = pad_channels

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, quant: QuantConfig) -> None:
        super().__init__()
        self.conv1 = QConv2d(
            in_planes,
            planes,
            3,
            stride=stride,
            padding=1,
            bias=False,
            quant=quant,
            act_signed=False,
        )
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = QConv2d(
            planes, planes, 3, padding=1, bias=False, quant=quant, act_signed=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = _ShortcutA((planes - in_planes) // 2)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (option-A shortcuts); layers are quantized layers set by policy."""

    def __init__(self, num_classes: int = 10, quant: QuantConfig | None = None) -> None:
        super().__init__()
        quant = quant or QuantConfig()
        self.conv1 = QConv2d(3, 16, 3, padding=1, bias=False, quant=quant, act_signed=True)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(3):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, quant))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = QLinear(64, num_classes, quant=quant, act_signed=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


@register_space("resnet20")
class ResNet20Space(SearchSpace):
    """The classic bit-allocation track: fixed ResNet-20, per-layer W/A bits."""

    name = "resnet20"
    bit_choices = (2, 3, 4, 8)
    searches = "bits"
    default_fixed = {"stem": 8, "classifier": 8}
    tap_blocks = (basic_block_taps,)

    def build(
        self,
        arch: Any = None,
        policy: Mapping[str, LayerBits] | None = None,
        quant: QuantConfig | None = None,
    ) -> nn.Module:
        model = ResNet20(self.num_classes, self.layer_quant(quant))
        if policy is not None:
            apply_policy(model, self.full_policy(policy))
        return model

    def fixed_roles(self, arch: Any = None) -> dict[str, list[str]]:
        """``{"stem": ["conv1"], "classifier": ["fc"]}``."""
        return {"stem": ["conv1"], "classifier": ["fc"]}
