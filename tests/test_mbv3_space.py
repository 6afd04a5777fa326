"""Tests of the ``mbv3-cifar`` space: arch encoding, elastic supernet, extraction, cost."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from benchmark.arena.cost import profile_layers
from benchmark.arena.data import LabeledTensorDataset
from benchmark.arena.policy import LayerBits, PolicyError
from benchmark.arena.protocol import Constraint
from benchmark.arena.quant import QuantConfig, quant_layers
from benchmark.arena.recipes.scoring import recalibrate
from benchmark.arena.spaces import SpaceError, get_space, list_spaces
from benchmark.arena.spaces.mbv3.arch import (
    DEPTH_CHOICES,
    EXPAND_CHOICES,
    KERNEL_CHOICES,
    REFERENCE_ARCH,
    MBV3Arch,
    crossover,
    max_arch,
    min_arch,
    mutate,
    sample_arch,
)
from benchmark.arena.spaces.mbv3.nets import MBV3Net, MBV3Supernet

PER_BIT = QuantConfig(per_bit_weight=True, per_bit_act=True)


@pytest.fixture(scope="module")
def space():
    return get_space("mbv3-cifar")


# --------------------------------------------------------------------------- hand-counted MACs


def hand_tally(kernel: int, expand: int, depth: int, num_classes: int = 10) -> dict:
    """MACs and weight params per 32×32 image of the uniform subnet (k, e, d), written out
    layer by layer and grouped as the convention treats them: ``{"searched" | "fixed" |
    "se": [macs, params]}`` (``fixed``: stem conv and classifier).

    conv MACs = C_in/groups · C_out · k² · H_out · W_out, params = C_in/groups · C_out · k²;
    linear = in · out; SE reduce / expand run on the pooled 1×1 map: C·r and r·C with
    r = SE width (biases are not counted).
    """
    # SE width r = C/4 rounded to a multiple of 8 (OFA make_divisible), by hand:
    se_width = {72: 24, 96: 24, 120: 32, 144: 40, 160: 40, 240: 64, 320: 80, 480: 120}
    tally = {"searched": [0, 0], "fixed": [0, 0], "se": [0, 0]}

    def add(group: str, params: int, pixels: int) -> None:
        tally[group][0] += params * pixels
        tally[group][1] += params

    add("fixed", 3 * 16 * 3 * 3, 32 * 32)  # stem 3×3 3→16, 32×32
    add("searched", 16 * 3 * 3, 32 * 32)  # block 0 depthwise 3×3 on 16 channels
    add("searched", 16 * 16, 32 * 32)  # block 0 project 1×1 16→16
    res = 32
    stages = ((16, 24, False), (24, 40, True), (40, 80, True))
    for c_prev, width, use_se in stages:
        for j in range(depth):
            c_in = c_prev if j == 0 else width
            mid = c_in * expand
            res_in = res
            res = res // 2 if j == 0 else res  # first block of a stage has stride 2
            add("searched", c_in * mid, res_in * res_in)  # 1×1 expand at the input resolution
            add("searched", mid * kernel * kernel, res * res)  # depthwise k×k (stride 2 if first)
            if use_se:
                add("se", mid * se_width[mid], 1)  # SE reduce
                add("se", se_width[mid] * mid, 1)  # SE expand
            add("searched", mid * width, res * res)  # 1×1 project
    add("searched", 80 * 320, 4 * 4)  # head 1×1 80→320 at 4×4
    add("fixed", 320 * num_classes, 1)  # classifier
    return tally


def hand_macs(kernel: int, expand: int, depth: int, num_classes: int = 10) -> int:
    return sum(macs for macs, _ in hand_tally(kernel, expand, depth, num_classes).values())


def hand_cost(tally: dict, w_bits: int, a_bits: int, fixed_bits: int) -> tuple[int, int]:
    """``(BitOPs, weight bits)``: searched layers at W/A; stem, SE, classifier at fixed."""
    (s_macs, s_params), fixed = tally["searched"], [tally["fixed"], tally["se"]]
    bitops = s_macs * w_bits * a_bits + sum(m for m, _ in fixed) * fixed_bits**2
    size = s_params * w_bits + sum(p for _, p in fixed) * fixed_bits
    return bitops, size


def test_registered(space) -> None:
    assert "mbv3-cifar" in list_spaces()
    assert space.searches == "arch+bits"
    assert space.bit_choices == (2, 3, 4)
    assert space.allowed_bits() == (2, 3, 4, 8, 32)


def test_max_min_reference_macs(space) -> None:
    largest = space.cost(space.uniform_policy(4, arch=max_arch()), max_arch())
    smallest = space.cost(space.uniform_policy(4, arch=min_arch()), min_arch())
    reference = space.cost(space.uniform_policy(4), None)
    assert largest.macs == hand_macs(5, 6, 3) == 18_326_656
    assert smallest.macs == hand_macs(3, 3, 2) == 6_035_584
    assert reference.macs == hand_macs(3, 4, 3) == 10_882_688


@pytest.mark.parametrize("fixed_bits", [8, 32])
@pytest.mark.parametrize(("name", "ked"), [("max", (5, 6, 3)), ("min", (3, 3, 2))])
def test_hand_counted_cost_puts_se_at_fixed_bits(name, ked, fixed_bits) -> None:
    space = get_space("mbv3-cifar", fixed_bits=fixed_bits)
    arch = max_arch() if name == "max" else min_arch()
    tally = hand_tally(*ked)
    for w_bits, a_bits in ((4, 4), (2, 3)):
        report = space.cost(space.uniform_policy(w_bits, a_bits, arch=arch), arch)
        assert (report.bitops, report.size_bits) == hand_cost(tally, w_bits, a_bits, fixed_bits)
        se = [c for c in report.layers if ".se." in c.name]
        assert len(se) == 4 * ked[2]  # 2 SE convs per block of stages 2 and 3
        assert all((c.w_bits, c.a_bits) == (fixed_bits, fixed_bits) for c in se)
        assert sum(c.macs for c in se) == tally["se"][0]
        assert sum(c.bitops for c in se) == tally["se"][0] * fixed_bits**2


def test_se_layers_are_fixed_quantized_layers(space) -> None:
    arch = max_arch()
    se = space.se_layer_names(arch)
    assert len(se) == 12  # 2 SE convs × 3 blocks × stages 2 and 3
    assert se[:2] == ["blocks.4.se.reduce", "blocks.4.se.expand"]
    names = space.layer_names(arch)
    assert names.index("blocks.4.dw") < names.index("blocks.4.se.reduce")
    assert names.index("blocks.4.se.expand") < names.index("blocks.4.pw_project")
    assert space.fixed_layer_names(arch) == ["stem.conv", *se, "classifier"]
    assert not set(se) & set(space.searchable_layers(arch))
    assert len(space.searchable_layers(arch)) == 2 + 27 + 1
    policy = space.uniform_policy(2, arch=arch)
    assert all(policy[n] == LayerBits(8, 8) for n in se)
    assert policy["blocks.5.dw"] == LayerBits(2, 2)
    assert all(space.sample_policy(arch, random.Random(0))[n] == LayerBits(8, 8) for n in se)
    # quantized modules with FP biases; reduce reads the pooled h_swish output (signed grid),
    # expand a ReLU output (unsigned grid)
    for model in (space.build(arch), space.build_supernet()):
        layers = quant_layers(model)
        for n in se:
            assert layers[n].bias is not None
            assert layers[n].weight_quantizer.signed is True
            assert layers[n].act_quantizer.signed is n.endswith(".reduce")
    # a policy may list SE convs only at fixed_bits
    with pytest.raises(PolicyError, match="'blocks.4.se.reduce' is fixed at W8A8"):
        space.full_policy({**policy, "blocks.4.se.reduce": LayerBits(4, 4)}, arch)
    with pytest.raises(PolicyError, match="fixed at W8A8"):
        space.full_policy({**policy, "blocks.9.se.expand": LayerBits(8, 4)}, arch)
    with pytest.raises(PolicyError, match="fixed at W8A8"):
        space.set_active(space.build_supernet(), arch, {**policy, se[-1]: LayerBits(32, 32)})
    fp_space = get_space("mbv3-cifar", fixed_bits=32)
    with pytest.raises(PolicyError, match="fixed at W32A32"):
        fp_space.full_policy({**policy, "blocks.4.se.reduce": LayerBits(8, 8)}, arch)
    assert space.full_policy(policy, arch) == policy  # listed at fixed_bits: accepted


def test_reference_arch_bitops_ratios(space) -> None:
    """Uniform W/A on the reference arch against ``space.reference()`` (its W8A8 cost)."""
    reference = space.reference()
    tally = hand_tally(3, 4, 3)
    assert reference.bitops_w8a8 == hand_macs(3, 4, 3) * 64
    ratios = {}
    for bits in (2, 3, 4):
        report = space.cost(space.uniform_policy(bits))
        assert report.bitops == hand_cost(tally, bits, bits, 8)[0]
        ratios[bits] = report.bitops / reference.bitops_w8a8
    print("reference arch, BitOPs / W8A8:", {f"W{b}A{b}": round(r, 4) for b, r in ratios.items()})
    assert ratios == pytest.approx({2: 0.1134, 3: 0.1873, 4: 0.2907}, abs=1e-4)
    limit = Constraint.parse("bitops<=0.2")
    feasible = {
        b: limit.satisfied(space.cost(space.uniform_policy(b)), reference) for b in (2, 3, 4)
    }
    # W4A4 cannot reach 0.2: its searched layers alone are at 16/64 = 0.25 of their W8A8
    assert feasible == {2: True, 3: True, 4: False}
    w4a4 = space.cost(space.uniform_policy(4))
    assert Constraint.parse("bitops<=0.3").satisfied(w4a4, reference)
    # fixed_bits=32 (FP stem, SE and classifier; the OQAT/QFA SE convention) costs SE 32×32
    fp_space = get_space("mbv3-cifar", fixed_bits=32)
    fp_report = fp_space.cost(fp_space.uniform_policy(4))
    assert fp_report.bitops == hand_cost(tally, 4, 4, 32)[0]
    se_bitops = sum(c.bitops for c in fp_report.layers if ".se." in c.name)
    assert se_bitops == tally["se"][0] * 32 * 32
    assert fp_space.reference() == reference  # the reference is W8A8 whatever fixed_bits


def test_layer_names_match_profiles(space) -> None:
    rng = random.Random(1)
    for arch in (max_arch(), min_arch(), sample_arch(rng), sample_arch(rng)):
        assert space.layer_names(arch) == list(space.profiles(arch))
        assert space.layer_names(arch) == list(quant_layers(space.build(arch)))
    assert len(space.searchable_layers(max_arch())) == 2 + 27 + 1
    assert len(space.searchable_layers(min_arch())) == 2 + 18 + 1
    # stable names: depth 2 in stage 1 drops block 3, keeps 4
    assert "blocks.3.dw" not in space.layer_names(min_arch())
    assert "blocks.4.pw_expand" in space.layer_names(min_arch())


def test_supernet_profile_counts_only_active_slices(space) -> None:
    supernet = space.build_supernet()
    rng = np.random.default_rng(3)
    for arch in (max_arch(), min_arch(), space.sample_arch(rng)):
        space.set_active(supernet, arch)
        assert profile_layers(supernet) == space.profiles(arch)
        assert supernet.active_layer_names() == space.layer_names(arch)


# --------------------------------------------------------------------------- arch encoding


def test_sampling_reaches_every_choice() -> None:
    rng = random.Random(0)
    seen_k, seen_e, seen_d = set(), set(), set()
    for _ in range(200):
        arch = sample_arch(rng)
        for slot in arch.active_slots():
            seen_k.add((slot, arch.kernels[slot]))
            seen_e.add((slot, arch.expands[slot]))
        seen_d.update(enumerate(arch.depths))
    assert seen_k == {(s, k) for s in range(9) for k in KERNEL_CHOICES}
    assert seen_e == {(s, e) for s in range(9) for e in EXPAND_CHOICES}
    assert seen_d == {(s, d) for s in range(3) for d in DEPTH_CHOICES}
    gen = np.random.default_rng(0)
    assert len({sample_arch(gen) for _ in range(50)}) > 40


def test_arch_round_trip_and_canonical(space) -> None:
    rng = random.Random(2)
    for _ in range(20):
        arch = sample_arch(rng)
        assert MBV3Arch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
        assert arch == arch.canonical()
        assert space.validate_arch(arch.to_dict()) == arch
        assert eval(repr(arch), {"MBV3Arch": MBV3Arch}) == arch
    assert space.validate_arch(None) == REFERENCE_ARCH == space.reference_arch
    noisy = MBV3Arch([5] * 9, [6] * 9, [2, 2, 2])
    assert space.validate_arch(noisy).kernels == (5, 5, 3) * 3
    a, b = max_arch(), min_arch()
    for _ in range(20):
        child = crossover(a, b, rng)
        assert child == child.canonical()
        mutant = mutate(child, rng, 0.3)
        assert mutant == mutant.canonical()
    assert mutate(a, rng, 0.0) == a


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kernels": [7] * 9, "expands": [3] * 9, "depths": [2] * 3}, r"kernels\[0\] = 7"),
        ({"kernels": [3] * 9, "expands": [5] * 9, "depths": [2] * 3}, r"expands\[0\] = 5"),
        ({"kernels": [3] * 9, "expands": [3] * 9, "depths": [2, 4, 2]}, r"depths\[1\] = 4"),
        ({"kernels": [3] * 8, "expands": [3] * 9, "depths": [2] * 3}, "9 entries, got 8"),
        ({"kernels": [3] * 9, "expands": [3] * 9, "depths": [2] * 4}, "3 entries, got 4"),
        ({"kernels": [3] * 9, "expands": [3] * 9}, "missing: .'depths'"),
        ({"kernels": [3.0] * 9, "expands": [3] * 9, "depths": [2] * 3}, "not one of"),
    ],
)
def test_invalid_arch(space, data, message) -> None:
    with pytest.raises(SpaceError, match=message):
        space.validate_arch(data)


def test_invalid_policy(space) -> None:
    arch = min_arch()
    policy = space.uniform_policy(4, arch=arch)
    searchable = {k: policy[k] for k in space.searchable_layers(arch)}
    with pytest.raises(PolicyError, match="unknown layer 'blocks.3.dw'"):
        space.full_policy({**searchable, "blocks.3.dw": LayerBits(4, 4)}, arch)
    with pytest.raises(PolicyError, match="w_bits=5"):
        space.full_policy({**searchable, "blocks.1.dw": LayerBits(5, 4)}, arch)
    missing = dict(searchable)
    del missing["head.conv"]
    with pytest.raises(PolicyError, match="missing 1 layer"):
        space.full_policy(missing, arch)
    with pytest.raises(PolicyError, match="fixed at W8A8"):
        space.full_policy({**searchable, "stem.conv": LayerBits(4, 4)}, arch)
    supernet = space.build_supernet()
    with pytest.raises(PolicyError):
        space.set_active(supernet, arch, {**searchable, "blocks.9.dw": LayerBits(4, 4)})
    with pytest.raises(PolicyError, match="not a quantized layer of the active subnet"):
        supernet.set_active(arch, {"blocks.9.dw": LayerBits(4, 4)})


# --------------------------------------------------------------------------- extraction


def _calibrate(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Initialise LSQ steps (train-mode forward), then BN stats that match the batch."""
    model.train()
    model(x)
    recalibrate(
        model,
        LabeledTensorDataset(x, torch.zeros(len(x), dtype=torch.long)),
        batches=1,
        batch_size=len(x),
    )
    model.eval()


@pytest.mark.parametrize("quant", [QuantConfig(), PER_BIT], ids=["shared", "per-bit"])
def test_extracted_equals_active_supernet(space, quant) -> None:
    torch.manual_seed(0)
    supernet = space.build_supernet(quant)
    x = torch.randn(16, 3, 32, 32)
    rng = random.Random(4)
    archs = [max_arch(), min_arch(), sample_arch(rng), sample_arch(rng)]
    for i, arch in enumerate(archs):
        policy = space.sample_policy(arch, rng) if i else None  # FP for the largest
        space.set_active(supernet, arch, policy or "w32a32")
        _calibrate(supernet, x)
        with torch.no_grad():
            expected = supernet(x)
            net = space.extract(supernet, arch)
            assert isinstance(net, MBV3Net) and not net.training
            got = net(x)
        assert expected.abs().max() > 0
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert sum(p.numel() for p in net.parameters()) < sum(
            p.numel() for p in supernet.parameters()
        )
        if policy is not None:
            assert {n: layer.bits for n, layer in quant_layers(net).items()} == policy
        # every quantizer's state (SE convs included) is the supernet's
        layers = quant_layers(supernet)
        for name, layer in quant_layers(net).items():
            for kind in ("weight_quantizer", "act_quantizer"):
                got_state = getattr(layer, kind).state_dict()
                want_state = getattr(layers[name], kind).state_dict()
                assert got_state.keys() == want_state.keys()
                assert all(torch.equal(got_state[k], want_state[k]) for k in got_state)
        se = quant_layers(net)[space.se_layer_names(arch)[0]]
        assert se.bits == LayerBits(8, 8)  # fixed, even under "w32a32"
        assert bool(se.act_quantizer.initialized.any())


def test_kernel_transform_is_materialised(space) -> None:
    supernet = space.build_supernet()
    with torch.no_grad():
        for block in supernet.blocks.values():
            if hasattr(block.dw, "transform_5to3"):
                block.dw.transform_5to3.add_(0.1 * torch.randn(9, 9))
    arch = MBV3Arch([3] * 9, [4] * 9, [3] * 3)
    space.set_active(supernet, arch)
    net = space.extract(supernet, arch)
    w5 = supernet.blocks["2"].dw.weight[:96, :, 1:4, 1:4].reshape(96, 9)
    expected = (w5 @ supernet.blocks["2"].dw.transform_5to3.T).view(96, 1, 3, 3)
    torch.testing.assert_close(net.blocks["2"].dw.weight, expected)
    assert net.blocks["2"].dw.kernel_size == (3, 3)


def test_build_from_fp_extracts(space) -> None:
    supernet = space.build_supernet()
    state = {k: v for k, v in supernet.state_dict().items() if "_quantizer." not in k}
    arch = min_arch()
    net = space.build_from_fp(state, arch, policy=space.uniform_policy(3, arch=arch))
    assert torch.equal(net.blocks["1"].pw_expand.weight, supernet.blocks["1"].pw_expand.weight[:48])
    assert quant_layers(net)["blocks.1.dw"].bits == LayerBits(3, 3)
    # SE weights and biases keep their FP-checkpoint names and are extracted (C 72, r 24)
    assert {k for k in state if k.startswith("blocks.4.se.")} == {
        f"blocks.4.se.{conv}.{p}" for conv in ("reduce", "expand") for p in ("weight", "bias")
    }
    se, big = net.blocks["4"].se, supernet.blocks["4"].se
    assert torch.equal(se.reduce.weight, big.reduce.weight[:24, :72])
    assert torch.equal(se.reduce.bias, big.reduce.bias[:24])
    assert torch.equal(se.expand.weight, big.expand.weight[:72, :24])
    assert torch.equal(se.expand.bias, big.expand.bias[:72])
    assert quant_layers(net)["blocks.4.se.reduce"].bits == LayerBits(8, 8)
    with pytest.raises(ValueError, match="not an mbv3-cifar supernet"):
        space.build_supernet(fp_state={"nope": torch.zeros(1)})


# --------------------------------------------------------------------------- quantizer sharing


def _step(supernet: MBV3Supernet, name: str, kind: str):
    layer = quant_layers(supernet)[name]
    return getattr(layer, f"{kind}_quantizer").step


def test_shared_step_size_across_bits_and_archs(space) -> None:
    supernet = space.build_supernet(QuantConfig())
    x = torch.randn(4, 3, 32, 32)
    name = "blocks.2.pw_expand"
    space.set_active(supernet, max_arch(), "w4a4")
    supernet.train()
    supernet(x)
    step = _step(supernet, name, "weight")
    value = step.detach().clone()
    assert step.numel() == 1
    space.set_active(supernet, MBV3Arch([3] * 9, [3] * 9, [3] * 3), "w2a2")
    supernet(x)
    assert _step(supernet, name, "weight") is step
    assert torch.equal(step.detach(), value)  # one step per physical conv, never re-initialised
    net = space.extract(supernet)
    assert torch.equal(quant_layers(net)[name].weight_quantizer.step, value)


def test_per_bit_step_sizes(space) -> None:
    supernet = space.build_supernet(PER_BIT)
    x = torch.randn(4, 3, 32, 32)
    name = "blocks.2.dw"
    supernet.train()
    space.set_active(supernet, max_arch(), "w4a4")
    supernet(x)
    step = _step(supernet, name, "weight")
    quantizer = quant_layers(supernet)[name].weight_quantizer
    assert step.numel() == len(quantizer.bit_choices)
    slot4, slot2 = quantizer.slot(4), quantizer.slot(2)
    assert slot4 != slot2
    assert bool(quantizer.initialized[slot4]) and not bool(quantizer.initialized[slot2])
    value4 = step[slot4].item()
    space.set_active(supernet, max_arch(), "w2a2")
    supernet(x)
    assert bool(quantizer.initialized[slot2])
    assert step[slot4].item() == value4
    assert step[slot2].item() != value4
    act = quant_layers(supernet)[name].act_quantizer
    assert act.step.numel() == len(act.bit_choices) and bool(act.initialized[act.slot(2)])
