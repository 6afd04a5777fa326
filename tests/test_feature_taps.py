"""Feature taps: where each space says its layers' features are (OMPQ hooks them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.arena import SearchSpace, get_space
from benchmark.arena.spaces.taps import FeatureTap, basic_block_taps, find_taps
from methods.ompq import feature_gram, tap_grams


def test_resnet20_taps_map_block_convs() -> None:
    space = get_space("resnet20")
    model = space.build()
    taps, mode = space.feature_taps(model)
    assert mode == "blocks" and len(taps) == 18
    assert [n for t in taps for n in t.layers] == space.searchable_layers()
    first, out = taps[0], taps[1]
    assert (first.name, first.module, first.post, first.layers) == (
        "layer1.0/conv1",
        "layer1.0.bn1",
        "relu",
        ("layer1.0.conv1",),
    )
    assert (out.name, out.module, out.post, out.layers) == (
        "layer1.0/out",
        "layer1.0",
        "identity",
        ("layer1.0.conv2",),
    )
    assert not {"conv1", "fc"} & {n for t in taps for n in t.layers}
    # the hooked features are relu(bn1(conv1 x)) and the block output
    model.eval()
    x = torch.randn(6, 3, 32, 32)
    grams = tap_grams(model, taps[:2], x)
    with torch.no_grad():
        stem = F.relu(model.bn1(model.conv1(x)))
        block = model.layer1[0]
        expected = [F.relu(block.bn1(block.conv1(stem))), block(stem)]
    for got, feats in zip(grams, expected, strict=True):
        np.testing.assert_allclose(got, feature_gram(feats), atol=1e-6)


def test_mbv3_taps_follow_the_inverted_residual_layout() -> None:
    space = get_space("mbv3-cifar")
    arch = space.reference_arch
    taps, mode = space.feature_taps(space.build(arch), arch)
    assert mode == "blocks"
    assert [n for t in taps for n in t.layers] == space.searchable_layers(arch)
    by_name = {t.name: t for t in taps}
    assert by_name["blocks.0/dw"].layers == ("blocks.0.dw",)
    assert by_name["blocks.3/expand"].post == "act:blocks.3.act"
    assert by_name["blocks.3/dw"].module == "blocks.3.dw_bn"
    assert by_name["blocks.3/out"].layers == ("blocks.3.pw_project",)
    assert by_name["head/out"].layers == ("head.conv",)


class _ConvShortcutBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.shortcut = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


def test_shortcut_conv_shares_the_block_output_tap_and_fallback() -> None:
    model = nn.Sequential(_ConvShortcutBlock(), nn.Conv2d(4, 2, 1))
    names = ["0.conv1", "0.conv2", "0.shortcut.0", "1"]
    taps, mode = find_taps(model, names, (basic_block_taps,))
    assert mode == "mixed"
    assert [t.layers for t in taps] == [("0.conv1",), ("0.conv2", "0.shortcut.0"), ("1",)]
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    taps, mode = find_taps(plain, ["0", "2"], (basic_block_taps,))
    assert mode == "fallback" and [(t.module, t.layers) for t in taps] == [
        ("0", ("0",)),
        ("2", ("2",)),
    ]
    assert len(tap_grams(plain, taps, torch.randn(4, 3, 8, 8))) == 2


def test_a_space_without_declared_blocks_falls_back_to_one_tap_per_layer() -> None:
    space = get_space("resnet20")

    class Undeclared(type(space)):
        tap_blocks = ()

    plain = Undeclared()
    taps, mode = plain.feature_taps(plain.build())
    assert mode == "fallback" and [t.layers for t in taps] == [
        (n,) for n in plain.searchable_layers()
    ]
    assert all(t.post == "identity" and t.module == t.layers[0] for t in taps)
    assert SearchSpace.tap_blocks == ()


def test_an_inplace_activation_never_overwrites_the_models_tensor() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True))
    tap = FeatureTap("0/out", "0", "act:1", ("0",))
    x = -torch.ones(1, 4, 2, 2)
    assert tap.post_fn(model)(x).sum() == 0 and (x == -1).all()
    with pytest.raises(ValueError, match="sigmoid"):
        FeatureTap("0/out", "0", "sigmoid", ("0",)).post_fn(model)


def test_batch_statistics_pass_leaves_the_running_statistics_alone() -> None:
    """OMPQ's default feature pass normalises with the batch's statistics (train mode, as
    the original); the model's running statistics and mode are what they were."""
    space = get_space("resnet20")
    model = space.build().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(0.5)
    taps, _ = space.feature_taps(model)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = tap_grams(model, taps[:1], x, batch_stats=True)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        model.train()
        stem = F.relu(model.bn1(model.conv1(x)))
        block = model.layer1[0]
        expected = F.relu(block.bn1(block.conv1(stem)))
        model.eval()
    np.testing.assert_allclose(batch[0], feature_gram(expected), atol=1e-6)
    running = tap_grams(model, taps[:1], x)  # eval mode: another Gram
    assert not np.allclose(running[0], batch[0], atol=1e-3)
