"""The cost model: MACs / BitOPs / MFLOPs/64 / size, checked against hand counts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.arena.cost import cost_from_profiles, model_cost, profile_layers
from benchmark.arena.policy import LayerBits, PolicyError
from benchmark.arena.quant import apply_policy, quant_layers, quantize_model
from benchmark.arena.spaces import get_space

RESNET20_MACS = 40_551_040


def resnet20_table() -> dict[str, tuple[int, int]]:
    """(MACs, weight params) per layer of CIFAR ResNet-20 at 32×32, from the architecture.

    conv: MACs = H_out·W_out·C_out·C_in·k·k, params = C_out·C_in·k·k; linear: in·out.
    """
    table: dict[str, tuple[int, int]] = {}

    def conv(name: str, h_out: int, c_in: int, c_out: int, k: int = 3) -> None:
        table[name] = (h_out * h_out * c_out * c_in * k * k, c_out * c_in * k * k)

    conv("conv1", 32, 3, 16)
    c_in, h = 16, 32
    for stage, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        for block in range(3):
            s = stride if block == 0 else 1
            h //= s
            conv(f"layer{stage}.{block}.conv1", h, c_in, planes)
            conv(f"layer{stage}.{block}.conv2", h, planes, planes)
            c_in = planes
    table["fc"] = (64 * 10, 64 * 10)
    return table


@pytest.fixture(scope="module")
def space():
    return get_space("resnet20")


def uneven_policy(space) -> dict[str, LayerBits]:
    """Searchable layers cycle through the bit choices (weights forwards, activations back)."""
    names = space.searchable_layers()
    choices = (2, 3, 4, 8)
    return {n: LayerBits(choices[i % 4], choices[(3 - i) % 4]) for i, n in enumerate(names)}


# --------------------------------------------------------------------------- resnet20


def test_resnet20_layer_macs_and_params_match_architecture(space) -> None:
    table = resnet20_table()
    assert sum(m for m, _ in table.values()) == RESNET20_MACS  # the formula itself
    profiles = space.profiles()
    assert list(profiles) == list(table)  # network order
    for name, (macs, params) in table.items():
        assert (profiles[name].macs, profiles[name].params) == (macs, params), name
    assert profiles["fc"].kind == "linear" and profiles["conv1"].kind == "conv"
    assert (profiles["layer2.0.conv1"].in_channels, profiles["layer2.0.conv1"].out_channels) == (
        16,
        32,
    )


def test_resnet20_w8a8(space) -> None:
    report = space.cost(space.uniform_policy(8))
    assert report.macs == RESNET20_MACS
    assert report.bitops == 64 * RESNET20_MACS == report.bitops_w8a8
    assert report.mflops64 == pytest.approx(RESNET20_MACS / 1e6)
    params = sum(p for _, p in resnet20_table().values())
    assert report.params == params
    assert report.size_bits == 8 * params == report.size_bits_w8a8
    assert report.bitops_ratio_w8a8 == 1.0 and report.size_ratio_w8a8 == 1.0
    assert report.avg_w_bits == 8.0 and report.avg_a_bits == 8.0
    assert report.gbitops == pytest.approx(64 * RESNET20_MACS / 1e9)


def test_resnet20_uneven_policy_by_hand(space) -> None:
    table = resnet20_table()
    policy = uneven_policy(space)
    bits = {"conv1": (8, 8), "fc": (8, 8), **{n: (b.w_bits, b.a_bits) for n, b in policy.items()}}
    bitops = sum(table[n][0] * w * a for n, (w, a) in bits.items())
    size_bits = sum(table[n][1] * w for n, (w, _) in bits.items())
    params = sum(p for _, p in table.values())

    report = space.cost(policy)
    assert report.bitops == bitops
    assert report.mflops64 == pytest.approx(bitops / 64 / 1e6)
    assert report.size_bits == size_bits
    assert report.bitops_ratio_w8a8 == pytest.approx(bitops / (64 * RESNET20_MACS))
    assert report.size_ratio_w8a8 == pytest.approx(size_bits / (8 * params))
    assert 0 < report.bitops_ratio_w8a8 < 1
    assert report.avg_w_bits == pytest.approx(
        sum(table[n][0] * w for n, (w, _) in bits.items()) / RESNET20_MACS
    )
    assert report.avg_a_bits == pytest.approx(
        sum(table[n][0] * a for n, (_, a) in bits.items()) / RESNET20_MACS
    )

    # the per-layer list: every layer once, in network order, with its own numbers
    assert [c.name for c in report.layers] == list(table)
    for c in report.layers:
        assert (c.w_bits, c.a_bits) == bits[c.name]
        assert c.macs == table[c.name][0] and c.params == table[c.name][1]
        assert c.bitops == c.macs * c.w_bits * c.a_bits
        assert c.size_bits == c.params * c.w_bits
    data = json.loads(json.dumps(report.to_dict()))
    assert data["bitops"] == bitops and data["size_bytes"] == size_bits / 8
    assert len(data["layers"]) == 20 and data["layers"][0]["name"] == "conv1"
    assert sum(layer["bitops"] for layer in data["layers"]) == bitops


def test_resnet20_half_budget_example(space) -> None:
    """W4A8 everywhere searchable: BitOPs ratio is exactly computable from the table."""
    table = resnet20_table()
    fixed = table["conv1"][0] + table["fc"][0]
    report = space.cost(space.uniform_policy(4, 8))
    expected = (fixed * 64 + (RESNET20_MACS - fixed) * 32) / (64 * RESNET20_MACS)
    assert report.bitops_ratio_w8a8 == pytest.approx(expected)


def test_resnet20_fixed_layers_full_precision(space) -> None:
    fp_space = get_space("resnet20", fixed_bits=32)
    table = resnet20_table()
    fixed_macs = table["conv1"][0] + table["fc"][0]
    report = fp_space.cost(fp_space.uniform_policy(2))
    assert report.bitops == fixed_macs * 32 * 32 + (RESNET20_MACS - fixed_macs) * 2 * 2
    assert {c.name: (c.w_bits, c.a_bits) for c in report.layers}["fc"] == (32, 32)
    # W8A8 reference stays "every counted layer at W8A8" whatever the convention
    assert report.bitops_w8a8 == 64 * RESNET20_MACS


def test_space_cost_validates_the_policy(space) -> None:
    policy = uneven_policy(space)
    with pytest.raises(PolicyError):
        space.cost({**policy, "layer1.0.conv1": LayerBits(5, 4)})
    policy.pop("layer3.2.conv2")
    with pytest.raises(PolicyError, match="missing"):
        space.cost(policy)


def test_cost_scales_with_input_size(space) -> None:
    model = space.build()
    report = model_cost(model, {}, input_shape=(3, 64, 64))
    table = resnet20_table()
    fc = table["fc"][0]
    assert report.macs == 4 * (RESNET20_MACS - fc) + fc
    assert report.params == sum(p for _, p in table.values())


# --------------------------------------------------------------------------- other models


class TinyCNN(nn.Module):
    """A model that is not ours: nested names, a depthwise conv, a conv used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU())
        self.block = nn.ModuleDict(
            {
                "dw": nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False),
                "pw": nn.Conv2d(8, 24, 1),
                "grouped": nn.Conv2d(24, 12, 3, padding=1, groups=2),
            }
        )
        self.shared = nn.Conv2d(12, 12, 1, bias=False)  # applied twice
        self.head = nn.Linear(12, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = F.relu(self.block["dw"](x))
        x = F.relu(self.block["pw"](x))
        x = F.relu(self.block["grouped"](x))
        x = self.shared(self.shared(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


# input 1×28×28 → stem 14×14
TINY_TABLE = {
    # name: (kind, MACs, params)
    "stem.0": ("conv", 14 * 14 * 8 * 1 * 9, 8 * 1 * 9),
    "block.dw": ("dwconv", 14 * 14 * 8 * 1 * 25, 8 * 25),
    "block.pw": ("conv", 14 * 14 * 24 * 8, 24 * 8),
    "block.grouped": ("conv", 14 * 14 * 12 * 12 * 9, 12 * 12 * 9),
    "shared": ("conv", 2 * 14 * 14 * 12 * 12, 12 * 12),
    "head": ("linear", 12 * 5, 12 * 5),
}


def test_tiny_cnn_profiles() -> None:
    model = TinyCNN()
    profiles = profile_layers(model, (1, 28, 28))
    assert list(profiles) == list(TINY_TABLE)
    for name, (kind, macs, params) in TINY_TABLE.items():
        p = profiles[name]
        assert (p.kind, p.macs, p.params) == (kind, macs, params), name


def test_tiny_cnn_missing_layers_count_as_fp() -> None:
    model = TinyCNN()
    policy = {"block.dw": LayerBits(4, 8), "block.pw": LayerBits(2, 3)}
    report = model_cost(model, policy, input_shape=(1, 28, 28))
    expected = 0
    for name, (_, macs, _) in TINY_TABLE.items():
        w, a = (policy[name].w_bits, policy[name].a_bits) if name in policy else (32, 32)
        expected += macs * w * a
    assert report.bitops == expected
    fp = {c.name for c in report.layers if (c.w_bits, c.a_bits) == (32, 32)}
    assert fp == set(TINY_TABLE) - set(policy)
    total_macs = sum(m for _, m, _ in TINY_TABLE.values())
    assert report.macs == total_macs and report.bitops_w8a8 == 64 * total_macs
    assert report.bitops_ratio_w8a8 == pytest.approx(expected / (64 * total_macs))
    assert report.size_bits == sum(
        p * (policy[n].w_bits if n in policy else 32) for n, (_, _, p) in TINY_TABLE.items()
    )
    # names the model does not have are ignored by the generic cost (the space validates)
    assert model_cost(model, {**policy, "ghost": LayerBits(2, 2)}, (1, 28, 28)) == report


def hook_count(model: nn.Module, shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """Independent MAC count from module attributes and output shapes: (MACs, params)."""
    counts: dict[str, tuple[int, int]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):

            def conv_hook(m: nn.Conv2d, inp, out, name: str = name) -> None:
                per_out = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
                counts[name] = (out[0].numel() * per_out, m.weight.numel())

            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):

            def linear_hook(m: nn.Linear, inp, out, name: str = name) -> None:
                counts[name] = (m.in_features * m.out_features, m.weight.numel())

            handles.append(module.register_forward_hook(linear_hook))
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return counts


def test_torchvision_resnet18_against_hook_count() -> None:
    model = torchvision.models.resnet18(num_classes=10)  # random init, no download
    expected = hook_count(model, (3, 32, 32))
    profiles = profile_layers(model, (3, 32, 32))
    assert len(profiles) == len(expected) == 21
    assert {n: (p.macs, p.params) for n, p in profiles.items()} == expected
    # a known anchor: the 7×7/2 stem on 32×32 gives 16×16×64 outputs of 3·49 MACs each
    assert profiles["conv1"].macs == 16 * 16 * 64 * 3 * 49
    total = sum(m for m, _ in expected.values())
    report = model_cost(model, {"fc": LayerBits(8, 8), "conv1": LayerBits(4, 4)})
    fc, stem = expected["fc"][0], expected["conv1"][0]
    assert report.macs == total
    assert report.bitops == fc * 64 + stem * 16 + (total - fc - stem) * 1024
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert report.params == sum(m.weight.numel() for m in layers) == 11_172_032


def test_quantized_model_uses_current_bits_and_is_left_untouched() -> None:
    """model_cost on a quantized model reads its bits and changes no state (no LSQ init)."""
    model = quantize_model(TinyCNN())
    apply_policy(model, {"block.pw": LayerBits(4, 2), "head": LayerBits(8, 8)})
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = model_cost(model, input_shape=(1, 28, 28))
    bits = {c.name: (c.w_bits, c.a_bits) for c in report.layers}
    assert bits["block.pw"] == (4, 2) and bits["head"] == (8, 8) and bits["stem.0"] == (32, 32)
    assert [c.name for c in report.layers] == list(TINY_TABLE)
    assert [c.macs for c in report.layers] == [m for _, m, _ in TINY_TABLE.values()]
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), f"profiling changed {key}"
    layers = quant_layers(model)
    assert not bool(layers["block.pw"].weight_quantizer.initialized.any())
    assert layers["block.pw"].act_quantizer.signed is None
    assert layers["block.pw"].bits == LayerBits(4, 2)
    assert model.training


def test_cost_from_profiles_default_bits() -> None:
    profiles = profile_layers(TinyCNN(), (1, 28, 28))
    report = cost_from_profiles(profiles, {}, default_bits=LayerBits(8, 8))
    assert report.bitops == report.bitops_w8a8
    assert cost_from_profiles(list(profiles.values()), {}) == cost_from_profiles(profiles, {})


def test_model_cost_accepts_the_json_policy_format() -> None:
    """The README's policy format, plain dicts (e.g. from JSON), costs like LayerBits."""
    model = TinyCNN()
    policy = {"block.dw": LayerBits(4, 8), "block.pw": LayerBits(2, 3), "head": LayerBits(8, 8)}
    expected = model_cost(model, policy, (1, 28, 28))
    as_json = json.loads(json.dumps({n: b.to_dict() for n, b in policy.items()}))
    assert model_cost(model, as_json, (1, 28, 28)) == expected
    mixed = {**as_json, "head": LayerBits(8, 8)}
    assert model_cost(model, mixed, (1, 28, 28)) == expected
    pairs = {n: [b.w_bits, b.a_bits] for n, b in policy.items()}  # the list form policies allow
    assert model_cost(model, pairs, (1, 28, 28)) == expected
    assert {c.name: (c.w_bits, c.a_bits) for c in expected.layers}["block.pw"] == (2, 3)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"block.pw": {"w_bits": 4}}, "layer 'block.pw' has no a_bits"),
        ({"block.pw": {"w_bits": "4", "a_bits": 4}}, "must be integers"),
        ({"block.pw": 4}, r"must be \{\"w_bits\": B, \"a_bits\": B\}, got 4"),
        (["block.pw"], "a policy must be a JSON object"),
    ],
)
def test_model_cost_bad_policy_entry_is_a_policy_error(policy: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        model_cost(TinyCNN(), policy, (1, 28, 28))  # type: ignore[arg-type]


def test_profiles_carry_each_layers_geometry_as_it_ran() -> None:
    """Stride, kernel side and input pixels per layer; a dynamic conv's active kernel."""
    from benchmark.arena.spaces import get_space

    space = get_space("mbv3-cifar")
    arch = space.sample_arch(np.random.default_rng(1))
    profiles = space.profiles(arch)
    for slot, kernel in enumerate(arch.kernels):
        dw = profiles.get(f"blocks.{slot + 1}.dw")
        if dw is not None:
            assert dw.kind == "dwconv" and dw.kernel == kernel
    assert profiles["stem.conv"].in_pixels == 32 * 32 and profiles["stem.conv"].kernel == 3
    assert (profiles["classifier"].stride, profiles["classifier"].in_pixels) == (0, 1)
    supernet = space.build_supernet()
    space.set_active(supernet, arch)
    assert profile_layers(supernet) == profiles  # composed profiles = the dynamic net's
