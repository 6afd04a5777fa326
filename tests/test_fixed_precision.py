"""Per-layer fixed precision: each space states its convention per role / layer, can be
built with another one, a candidate can bring its own (``with_fixed``), and per-bit
quantizer state has a slot for the fixed layers' bits."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from benchmark.arena import LayerBits, QuantConfig, SearchSpace, SpaceError, get_space
from benchmark.arena.policy import PolicyError
from benchmark.arena.quant import QConv2d, QLinear, apply_policy, current_policy, quant_layers
from benchmark.arena.spaces.mbv3.arch import max_arch, min_arch

FP = LayerBits(32, 32)
W8 = LayerBits(8, 8)
PER_BIT = QuantConfig(per_bit_weight=True, per_bit_act=True)


@pytest.fixture(scope="module")
def resnet():
    return get_space("resnet20")


@pytest.fixture(scope="module")
def mbv3():
    return get_space("mbv3-cifar")


# --------------------------------------------------------------------------- conventions


def test_default_conventions_are_stated_per_role(resnet, mbv3) -> None:
    assert resnet.fixed_roles() == {"stem": ["conv1"], "classifier": ["fc"]}
    assert resnet.fixed_policy() == {"conv1": W8, "fc": W8}
    assert resnet.fixed.to_dict() == {"stem": 8, "classifier": 8}
    assert resnet.config() == {"name": "resnet20", "fixed_bits": 8, "num_classes": 10}
    roles = mbv3.fixed_roles(max_arch())
    assert list(roles) == ["stem", "se", "classifier"]
    assert roles["stem"] == ["stem.conv"] and roles["classifier"] == ["classifier"]
    assert len(roles["se"]) == 12 and all(".se." in n for n in roles["se"])
    assert set(mbv3.fixed_policy(max_arch()).values()) == {W8}
    assert mbv3.fixed.to_dict() == {"stem": 8, "se": 8, "classifier": 8}
    assert mbv3.config()["fixed_bits"] == 8


def test_int_fixed_bits_keeps_meaning_every_fixed_layer(resnet) -> None:
    for bits in (4, 32):
        space = get_space("resnet20", fixed_bits=bits)
        assert space.fixed_policy() == {"conv1": LayerBits(bits, bits), "fc": LayerBits(bits, bits)}
        assert space.config()["fixed_bits"] == bits
    assert get_space("mbv3-cifar", fixed_bits=32).fixed_policy(min_arch()) == {
        n: FP for n in get_space("mbv3-cifar").fixed_layer_names(min_arch())
    }
    assert get_space("resnet20", fixed_bits=8).fixed == resnet.fixed


def test_per_role_conventions_qfa_and_oqat(mbv3) -> None:
    arch = max_arch()
    se = mbv3.se_layer_names(arch)
    qfa = get_space("mbv3-cifar", fixed_bits={"stem": 32, "se": 32})
    assert qfa.fixed_policy(arch) == {"stem.conv": FP, **{n: FP for n in se}, "classifier": W8}
    assert qfa.config()["fixed_bits"] == {"stem": 32, "se": 32, "classifier": 8}
    oqat = get_space("mbv3-cifar", fixed_bits={"stem": 32, "se": 32, "classifier": 32})
    assert oqat.fixed_policy(arch) == get_space("mbv3-cifar", fixed_bits=32).fixed_policy(arch)
    assert oqat.config()["fixed_bits"] == 32  # uniform: stated as one number
    # the cost follows: QFA's FP stem and SE against the default's 8 bits
    policy = mbv3.uniform_policy(4, arch=arch)
    searched = {k: v for k, v in policy.items() if k in mbv3.searchable_layers(arch)}
    profiles = mbv3.profiles(arch)
    extra = sum(profiles[n].macs for n in ["stem.conv", *se]) * (32 * 32 - 8 * 8)
    assert qfa.cost(searched, arch).bitops == mbv3.cost(searched, arch).bitops + extra
    assert qfa.reference() == mbv3.reference()  # ratios stay against one W8A8 number


def test_per_layer_conventions_and_w_differs_from_a(resnet, mbv3) -> None:
    space = get_space("resnet20", fixed_bits={"fc": {"w_bits": 8, "a_bits": 32}})
    assert space.fixed_policy() == {"conv1": W8, "fc": LayerBits(8, 32)}
    assert space.config()["fixed_bits"] == {
        "stem": 8,
        "classifier": 8,
        "fc": {"w_bits": 8, "a_bits": 32},
    }
    # LayerBits values and one SE conv set apart; a layer wins over its role in one mapping
    one = get_space("mbv3-cifar", fixed_bits={"se": 32, "blocks.4.se.reduce": LayerBits(4, 4)})
    fixed = one.fixed_policy(max_arch())
    assert fixed["blocks.4.se.reduce"] == LayerBits(4, 4)
    assert fixed["blocks.4.se.expand"] == FP and fixed["stem.conv"] == W8
    # naming the role again later resets the layers set apart in it
    reset = one.with_fixed({"se": 8})
    assert set(reset.fixed_policy(max_arch()).values()) == {W8}
    assert reset.config()["fixed_bits"] == 8
    # an int resets everything
    assert set(one.with_fixed(32).fixed_policy(max_arch()).values()) == {FP}
    # a layer set apart that an architecture does not run is simply absent
    assert "blocks.6.se.reduce" not in one.with_fixed({"blocks.6.se.reduce": 4}).fixed_policy(
        min_arch()
    )


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (5, ["fixed_bits must be one of", "5"]),
        ({"stem": 5}, ["'stem'", "W5A5"]),
        ({"head": 32}, ["'head'", "stem", "classifier", "conv1"]),
        ({"layer1.0.conv1": 8}, ["layer1.0.conv1"]),  # searchable, not a fixed layer
        ({"fc": "w8a8"}, ["'fc'"]),
        (True, ["fixed_bits"]),
        ([8], ["fixed_bits"]),
    ],
)
def test_bad_conventions_are_one_line_space_errors(resnet, spec, words) -> None:
    for make in (lambda: get_space("resnet20", fixed_bits=spec), lambda: resnet.with_fixed(spec)):
        with pytest.raises(SpaceError) as info:
            make()
        message = str(info.value)
        assert "\n" not in message and "resnet20" in message
        for word in words:
            assert word in message, (word, message)


def test_config_states_the_convention_and_rebuilds_it(mbv3) -> None:
    for spec in (
        None,
        32,
        {"stem": 32},
        {"se": 32, "blocks.5.se.expand": {"w_bits": 4, "a_bits": 8}},
    ):
        space = mbv3.with_fixed(spec)
        text = json.dumps(space.config())
        again = get_space("mbv3-cifar", fixed_bits=json.loads(text)["fixed_bits"])
        assert again.fixed == space.fixed
        assert again.fixed_policy(max_arch()) == space.fixed_policy(max_arch())
        assert mbv3.with_fixed(32).with_fixed(space.fixed).fixed == space.fixed


def test_with_fixed_is_a_copy_sharing_profiles(resnet) -> None:
    profiles = resnet.profiles()
    fp_stem = resnet.with_fixed({"stem": 32})
    assert resnet.with_fixed(None) is resnet
    assert resnet.fixed_policy()["conv1"] == W8  # the original is unchanged
    assert fp_stem.fixed_policy()["conv1"] == FP
    assert fp_stem.profiles() is profiles
    assert type(fp_stem) is type(resnet) and fp_stem.num_classes == resnet.num_classes


def test_policies_builds_and_costs_use_the_convention(resnet) -> None:
    fp_stem = resnet.with_fixed({"stem": 32})
    full = fp_stem.uniform_policy(4)
    assert full["conv1"] == FP and full["fc"] == W8 and full["layer1.0.conv1"] == LayerBits(4, 4)
    assert fp_stem.full_policy(full) == full  # listed at the convention's bits: accepted
    with pytest.raises(PolicyError, match="'conv1' is fixed at W32A32"):
        fp_stem.full_policy({**full, "conv1": W8})
    with pytest.raises(PolicyError, match="'conv1' is fixed at W8A8"):
        resnet.full_policy(full)
    model = fp_stem.build(policy=full)
    assert current_policy(model) == full
    model = fp_stem.build_from_fp(resnet.build().state_dict(), policy=full)
    assert current_policy(model)["conv1"] == FP
    macs = resnet.profiles()["conv1"].macs
    assert fp_stem.cost(full).bitops == resnet.cost(resnet.uniform_policy(4)).bitops + macs * (
        32 * 32 - 64
    )
    assert fp_stem.cheapest_cost().bitops > resnet.cheapest_cost().bitops


# --------------------------------------------------------------------------- per-bit slots


def test_layer_quant_covers_every_bit_a_layer_can_take(resnet, mbv3) -> None:
    assert resnet.layer_quant() == QuantConfig()  # the default is unchanged
    assert mbv3.layer_quant() == QuantConfig()
    narrow = QuantConfig(per_bit_weight=True, per_bit_act=True, bit_choices=(2, 3, 4))
    assert mbv3.layer_quant(narrow).bit_choices == (2, 3, 4, 8)
    assert mbv3.layer_quant(narrow).per_bit_weight


@pytest.mark.parametrize("name", ["resnet20", "mbv3-cifar"])
@pytest.mark.parametrize(
    "quant",
    [PER_BIT, QuantConfig(per_bit_weight=True, per_bit_act=True, bit_choices=(2, 3, 4))],
    ids=["per-bit", "per-bit-searchable-only"],
)
def test_per_bit_state_with_8_bit_fixed_layers(name: str, quant: QuantConfig) -> None:
    """QFA's per-bit state with the fixed layers at 8 bits builds, runs and trains."""
    space = get_space(name)
    arch = space.smallest_arch
    policy = space.uniform_policy(2, arch=arch)
    torch.manual_seed(0)
    model = space.build(arch, policy=policy, quant=quant)
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    layers = quant_layers(model)
    for layer_name in space.fixed_layer_names(arch):
        layer = layers[layer_name]
        assert layer.bits == W8
        for q in (layer.weight_quantizer, layer.act_quantizer):
            assert q.per_bit and 8 in q.bit_choices
            assert bool(q.initialized[q.slot(8)]) and q.initialized.sum() == 1
    searched = layers[space.searchable_layers(arch)[0]].weight_quantizer
    assert bool(searched.initialized[searched.slot(2)]) and searched.step.grad is not None


def test_per_bit_supernet_to_inherit_track_round_trip(mbv3) -> None:
    """A per-bit supernet's extracted subnet loads into the model the inherit track builds."""
    quant = QuantConfig(per_bit_weight=True, per_bit_act=True, bit_choices=(2, 3, 4))
    arch = min_arch()
    policy = mbv3.uniform_policy(3, arch=arch)
    torch.manual_seed(0)
    supernet = mbv3.build_supernet(quant)
    mbv3.set_active(supernet, arch, policy)
    supernet(torch.randn(2, 3, 32, 32))
    subnet = mbv3.extract(supernet, arch).eval()
    rebuilt = mbv3.build(arch, policy=policy, quant=quant).eval()
    rebuilt.load_state_dict(subnet.state_dict())  # same slots, same shapes
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt(x), subnet(x))
    # the QFA convention on the same supernet: FP stem and SE, 8-bit classifier
    qfa = mbv3.with_fixed({"stem": 32, "se": 32})
    qfa.set_active(supernet, arch, qfa.uniform_policy(3, arch=arch))
    assert quant_layers(supernet)["stem.conv"].bits == FP
    assert bool(torch.isfinite(supernet(x)).all())


# --------------------------------------------------------------------------- other spaces


class _OldStyleSpace(SearchSpace):
    """A space written before roles: it names its fixed layers only."""

    name = "old-style-test"
    bit_choices = (2, 4)
    searches = "bits"

    def build(self, arch=None, policy=None, quant=None) -> nn.Module:
        quant = self.layer_quant(quant)
        model = nn.Sequential(
            QConv2d(3, 4, 3, stride=4, padding=1, quant=quant, act_signed=True),
            nn.Flatten(),
            QLinear(4 * 8 * 8, self.num_classes, quant=quant, act_signed=False),
        )
        if policy is not None:
            apply_policy(model, self.full_policy(policy))
        return model

    def fixed_layer_names(self, arch=None) -> list[str]:
        return ["0"]


def test_a_space_naming_only_its_fixed_layers_has_one_role() -> None:
    space = _OldStyleSpace()
    assert space.fixed_roles() == {"fixed": ["0"]}
    assert space.fixed_policy() == {"0": W8}
    assert space.uniform_policy(2) == {"0": W8, "2": LayerBits(2, 2)}
    assert _OldStyleSpace(fixed_bits=32).fixed_policy() == {"0": FP}
    assert space.with_fixed({"fixed": 4}).fixed_policy() == {"0": LayerBits(4, 4)}
    assert space.with_fixed({"0": 32}).config()["fixed_bits"] == {"fixed": 8, "0": 32}

    class NoFixedLayers(_OldStyleSpace):
        fixed_layer_names = SearchSpace.fixed_layer_names

    with pytest.raises(NotImplementedError, match="NoFixedLayers must implement fixed_roles"):
        NoFixedLayers().fixed_layer_names()  # neither method: a clear error, no recursion
