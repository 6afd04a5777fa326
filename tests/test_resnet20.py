"""The ``resnet20`` space: the registry, the architecture and quantized builds."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.arena.policy import LayerBits, PolicyError
from benchmark.arena.quant import QConv2d, QLinear, current_policy, quant_layers
from benchmark.arena.spaces import SearchSpace, SpaceError, get_space, list_spaces


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return get_space("resnet20")


# --------------------------------------------------------------------------- a plain reference


class RefBlock(nn.Module):
    """He et al. 2016 CIFAR basic block, option A: subsample and zero-pad the channels."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pad = (c_out - c_in) // 2 if (stride != 1 or c_in != c_out) else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        short = x
        if self.pad is not None:
            short = x[:, :, ::2, ::2]
            zeros = short.new_zeros(short.shape[0], self.pad, *short.shape[2:])
            short = torch.cat([zeros, short, zeros], dim=1)
        return F.relu(out + short)


class RefResNet20(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        c_in = 16
        for i, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = [
                RefBlock(c_in if b == 0 else planes, planes, stride if b == 0 else 1)
                for b in range(3)
            ]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            c_in = planes
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(out.mean((2, 3)))


def randomise_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics so that eval-mode outputs depend on them."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


# --------------------------------------------------------------------------- tests


def test_registry() -> None:
    assert "resnet20" in list_spaces()
    with pytest.raises(SpaceError) as err:
        get_space("resnet56")
    assert "resnet56" in str(err.value) and "resnet20" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_space_facts(space: SearchSpace) -> None:
    assert space.name == "resnet20" and space.searches == "bits"
    assert space.bit_choices == (2, 3, 4, 8)
    assert space.reference_arch is None and space.validate_arch(None) is None
    assert space.config() == {"name": "resnet20", "fixed_bits": 8, "num_classes": 10}
    assert len(space.layer_names()) == 20 and len(space.searchable_layers()) == 18


def test_build_structure(space: SearchSpace) -> None:
    model = space.build()
    layers = quant_layers(model)
    assert list(layers) == space.layer_names()
    assert all(isinstance(layers[n], QConv2d) for n in list(layers)[:-1])
    assert isinstance(layers["fc"], QLinear)
    weights = sum(p.numel() for n, p in model.named_parameters() if "_quantizer." not in n)
    assert weights == 269_722  # the published ResNet-20 parameter count
    assert all(b == LayerBits(32, 32) for b in current_policy(model).values())
    # first conv sees normalised images (signed); every other layer sees ReLU outputs
    assert layers["conv1"].act_quantizer.signed is True
    assert all(layers[n].act_quantizer.signed is False for n in list(layers)[1:])
    assert all(layer.weight_quantizer.signed is True for layer in layers.values())
    x = torch.randn(3, 3, 32, 32)
    assert model(x).shape == (3, 10)
    assert get_space("resnet20", num_classes=100).build()(x).shape == (3, 100)


def test_full_precision_build_equals_plain_resnet20(space: SearchSpace) -> None:
    """At 32 bits our model is exactly the textbook network (option-A shortcuts)."""
    ours = space.build().eval()
    randomise_bn(ours)
    ref = RefResNet20().eval()
    state = {k: v for k, v in ours.state_dict().items() if "_quantizer." not in k}
    ref.load_state_dict(state)  # strict: same parameter names and shapes
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_build_with_policy(space: SearchSpace) -> None:
    policy = {n: LayerBits(2, 4) for n in space.searchable_layers()}
    model = space.build(policy=policy)
    assert current_policy(model) == space.full_policy(policy)
    assert model.conv1.bits == model.fc.bits == LayerBits(8, 8)
    with pytest.raises(PolicyError):
        space.build(policy={**policy, "layer1.0.conv1": LayerBits(5, 4)})
    with pytest.raises(PolicyError):
        space.build(policy={"layer1.0.conv1": LayerBits(4, 4)})


def test_quantized_forward_backward(space: SearchSpace) -> None:
    torch.manual_seed(0)
    model = space.build()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    model.eval()
    fp_out = model(x)
    model.train()
    for name, layer in quant_layers(model).items():
        if name not in ("conv1", "fc"):
            layer.set_bits(LayerBits(2, 2))
        else:
            layer.set_bits(LayerBits(8, 8))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    for name, layer in quant_layers(model).items():
        assert layer.weight_quantizer.step.grad is not None, name
        assert layer.act_quantizer.step.grad is not None, name
        assert bool(layer.weight_quantizer.initialized.all()), name
        assert float(layer.weight.grad.abs().sum()) > 0, name
    model.eval()
    assert not torch.allclose(model(x), fp_out, atol=1e-3)


def test_profiles_cached_and_independent_of_policy(space: SearchSpace) -> None:
    assert space.profiles() is space.profiles()
    cheap = space.cost(space.uniform_policy(2))
    rich = space.cost(space.uniform_policy(8))
    assert cheap.macs == rich.macs and cheap.bitops < rich.bitops
