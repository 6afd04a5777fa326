"""Cost tables and the expected cost: the same numbers as the cost model, per layer and in
total, on both spaces; the expected cost exact on one-hot probabilities and differentiable."""

from __future__ import annotations

import dataclasses
import json
import pickle
import random

import numpy as np
import pytest
import torch

from benchmark.arena import CostTable, expected_cost
from benchmark.arena.cost import LayerProfile
from benchmark.arena.policy import FP_BITS, LayerBits, PolicyError, policy_to_dict
from benchmark.arena.spaces import get_space

SEEDS = range(5)


@pytest.fixture(scope="module")
def resnet20():
    return get_space("resnet20")


@pytest.fixture(scope="module")
def mbv3():
    return get_space("mbv3-cifar")


def tables(resnet20, mbv3) -> list[tuple[object, object]]:
    """(space, arch) pairs: resnet20, mbv3 on its reference and on three random archs."""
    archs = [mbv3.sample_arch(random.Random(seed)) for seed in (11, 12, 13)]
    return [(resnet20, None), (mbv3, None), *[(mbv3, arch) for arch in archs]]


def random_policy(space, arch, rng: random.Random) -> dict[str, LayerBits]:
    """Searchable layers at random allowed bits (8 and FP included), weights and acts apart."""
    bits = space.allowed_bits()
    return {n: LayerBits(rng.choice(bits), rng.choice(bits)) for n in space.searchable_layers(arch)}


def one_hot(index: int, size: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(index), size).double()


# --------------------------------------------------------------------------- the table
def test_resnet20_table_layers_fixed_and_bits(resnet20) -> None:
    table = resnet20.cost_table()
    assert table.names == tuple(resnet20.layer_names())
    assert table.searchable == tuple(resnet20.searchable_layers())
    assert dict(table.fixed) == {"conv1": LayerBits(8, 8), "fc": LayerBits(8, 8)}
    assert table.bit_choices == (2, 3, 4, 8, 32)
    assert len(table.pairs) == 25 and table.pairs[:6] == (
        (2, 2), (2, 3), (2, 4), (2, 8), (2, 32), (3, 2),
    )  # fmt: skip
    # layer2.0.conv1: 16×16 outputs × 32 channels × 16 inputs × 3×3, 32·16·9 weights
    macs, params = 16 * 16 * 32 * 16 * 9, 32 * 16 * 9
    assert (table.profile("layer2.0.conv1").macs, table.profile("layer2.0.conv1").params) == (
        macs,
        params,
    )
    assert table.bitops("layer2.0.conv1", 3, 8) == macs * 24
    assert table.size_bits("layer2.0.conv1", 4) == params * 4
    assert table.weight_bit_cost("layer2.0.conv1", "bitops", a_bits=8) == macs * 8
    assert table.weight_bit_cost("layer2.0.conv1", "size") == params
    fixed_macs = 32 * 32 * 16 * 3 * 9 + 64 * 10
    assert table.fixed_total("bitops") == fixed_macs * 64
    assert table.fixed_total("size") == (16 * 3 * 9 + 64 * 10) * 8


def test_table_is_cached_frozen_and_follows_fixed_bits(resnet20, mbv3) -> None:
    assert resnet20.cost_table() is resnet20.cost_table()
    arch = mbv3.sample_arch(random.Random(3))
    assert mbv3.cost_table(arch) is mbv3.cost_table(arch.to_dict())
    assert mbv3.cost_table() is mbv3.cost_table(mbv3.reference_arch)
    assert mbv3.cost_table(arch) != mbv3.cost_table()
    table = resnet20.cost_table()
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.bit_choices = (4,)  # type: ignore[misc]
    with pytest.raises(TypeError):
        table.fixed["conv1"] = LayerBits(4, 4)  # type: ignore[index]
    assert hash(table) == hash(resnet20.cost_table())
    assert pickle.loads(pickle.dumps(table)) == table  # checkpoints, Ray workers
    assert pickle.loads(pickle.dumps(resnet20)).cost_table() == table  # the cached space too
    fp = get_space("resnet20", fixed_bits=FP_BITS).cost_table()
    assert dict(fp.fixed) == {"conv1": LayerBits(32, 32), "fc": LayerBits(32, 32)}
    assert fp.fixed_total("bitops") == table.fixed_total("bitops") // 64 * 1024
    # mbv3: stem, every SE conv and the classifier are fixed
    fixed = mbv3.cost_table(arch).fixed
    assert list(fixed) == mbv3.fixed_layer_names(arch) and len(fixed) > 2
    assert all(".se." in n for n in list(fixed)[1:-1])


def test_totals_equal_the_cost_model_on_both_spaces(resnet20, mbv3) -> None:
    for space, arch in tables(resnet20, mbv3):
        table = space.cost_table(arch)
        for seed in SEEDS:
            policy = random_policy(space, arch, random.Random(seed))
            report = space.cost(policy, arch)
            full = space.full_policy(policy, arch)
            assert table.total(policy, "bitops") == report.bitops
            assert table.total(policy, "size") == report.size_bits
            assert table.total(full, "bitops") == report.bitops  # full policies too
            assert table.total(policy_to_dict(full), "size") == report.size_bits  # JSON form
            # per layer: the table's entries are the report's layers
            for layer in report.layers:
                bits = full[layer.name]
                assert table.bitops(layer.name, bits.w_bits, bits.a_bits) == layer.bitops
                assert table.size_bits(layer.name, bits.w_bits) == layer.size_bits


def test_coefficients_pick_out_a_policy(resnet20, mbv3) -> None:
    for space, arch in tables(resnet20, mbv3)[:3]:
        table = space.cost_table(arch)
        index = {b: i for i, b in enumerate(table.bit_choices)}
        bitops, size = table.coefficients("bitops"), table.coefficients("size")
        pairs_bitops, pairs_size = (
            table.pair_coefficients("bitops"),
            table.pair_coefficients("size"),
        )
        n, k = len(table.searchable), len(table.bit_choices)
        assert bitops.shape == (n, k, k) and size.shape == (n, k)
        assert pairs_bitops.shape == pairs_size.shape == (n, k * k)
        assert bitops.dtype == np.int64
        np.testing.assert_array_equal(pairs_bitops, bitops.reshape(n, k * k))  # w outer
        policy = random_policy(space, arch, random.Random(7))
        rows = range(n)
        w = [index[policy[name].w_bits] for name in table.searchable]
        a = [index[policy[name].a_bits] for name in table.searchable]
        fixed_b, fixed_s = table.fixed_total("bitops"), table.fixed_total("size")
        assert bitops[rows, w, a].sum() + fixed_b == space.cost(policy, arch).bitops
        assert size[rows, w].sum() + fixed_s == space.cost(policy, arch).size_bits
    # a subset of the bits: HAWQ-V3's {4, 8}, and explicit pairs
    table = resnet20.cost_table()
    sub = table.coefficients("bitops", bits=(4, 8))
    assert sub.shape == (18, 2, 2)
    assert sub[0, 1, 1] == table.bitops(table.searchable[0], 8, 8)
    assert sub[5, 0, 1] == table.bitops(table.searchable[5], 4, 8)
    explicit = table.pair_coefficients("size", pairs=[(4, 4), (8, 2)])
    assert explicit[3].tolist() == [table.size_bits(table.searchable[3], b) for b in (4, 8)]


def test_table_errors_are_clear(resnet20) -> None:
    table = resnet20.cost_table()
    policy = random_policy(resnet20, None, random.Random(0))
    with pytest.raises(PolicyError, match="fixed at W8A8"):
        table.total({**policy, "conv1": LayerBits(4, 4)}, "bitops")
    with pytest.raises(PolicyError, match="not in the allowed set"):
        table.total({**policy, "layer1.0.conv1": LayerBits(5, 4)}, "bitops")
    policy.pop("layer3.2.conv2")
    with pytest.raises(PolicyError, match="missing"):
        table.total(policy, "size")
    with pytest.raises(PolicyError, match="unknown layer 'ghost'"):
        table.bitops("ghost", 4, 4)
    with pytest.raises(PolicyError, match="allowed set"):
        table.size_bits("fc", 6)
    with pytest.raises(ValueError, match="unknown cost metric"):
        table.fixed_total("latency")
    with pytest.raises(ValueError, match="needs a_bits"):
        table.weight_bit_cost("fc", "bitops")
    with pytest.raises(ValueError, match="not a layer"):
        CostTable(table.layers[:2], {"fc": LayerBits(8, 8)}, (4, 8))


def test_to_dict_is_json_ready(resnet20) -> None:
    table = resnet20.cost_table()
    data = json.loads(json.dumps(table.to_dict()))
    assert data["bit_choices"] == [2, 3, 4, 8, 32] and len(data["layers"]) == 20
    first = data["layers"][0]
    assert first["name"] == "conv1" and first["fixed"] == {"w_bits": 8, "a_bits": 8}
    assert first["bitops"]["w4a8"] == table.bitops("conv1", 4, 8)
    assert data["layers"][1]["fixed"] is None
    assert data["layers"][1]["size_bits"]["w32"] == table.size_bits("layer1.0.conv1", 32)


# --------------------------------------------------------------------------- expected cost
def test_expected_cost_on_one_hot_equals_the_cost_model(resnet20, mbv3) -> None:
    for space, arch in tables(resnet20, mbv3):
        table = space.cost_table(arch)
        k, index = len(table.bit_choices), {b: i for i, b in enumerate(table.bit_choices)}
        pair_index = {p: i for i, p in enumerate(table.pairs)}
        for seed in SEEDS:
            policy = random_policy(space, arch, random.Random(seed))
            report = space.cost(policy, arch)
            w = {n: one_hot(index[b.w_bits], k) for n, b in policy.items()}
            a = {n: one_hot(index[b.a_bits], k) for n, b in policy.items()}
            joint = {n: one_hot(pair_index[(b.w_bits, b.a_bits)], k * k) for n, b in policy.items()}
            for metric, value in (("bitops", report.bitops), ("size", report.size_bits)):
                expected = torch.tensor(float(value), dtype=torch.float64)
                got = expected_cost(table, w, a, metric)
                assert got.dtype == torch.float64 and got.ndim == 0
                assert torch.allclose(got, expected, rtol=1e-12, atol=0)
                pairs = expected_cost(table, metric=metric, pair_probs=joint)
                assert torch.allclose(pairs, expected, rtol=1e-12, atol=0)
            assert torch.allclose(
                expected_cost(table, w, None, "size"),
                torch.tensor(float(report.size_bits)).double(),
            )


def _two_layer_table() -> CostTable:
    def layer(name: str, macs: int, params: int) -> LayerProfile:
        return LayerProfile(name, "conv", macs, params, 1, 1)

    layers = (layer("a", 100, 10), layer("b", 50, 5), layer("head", 20, 2))
    return CostTable(layers, {"head": LayerBits(8, 8)}, (2, 4, 8))


def test_expected_cost_by_hand() -> None:
    table = _two_layer_table()
    assert table.searchable == ("a", "b") and table.bit_choices == (2, 4, 8)
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    w = {"a": t(0.5, 0.5, 0.0), "b": t(0.0, 1.0, 0.0)}  # E[b_w]: a 3, b 4
    a = {"a": t(0.0, 0.0, 1.0), "b": t(0.25, 0.75, 0.0)}  # E[b_a]: a 8, b 3.5
    # 100·3·8 + 50·4·3.5 + head 20·8·8 = 2400 + 700 + 1280
    assert expected_cost(table, w, a).item() == pytest.approx(4380.0, abs=1e-9)
    # 10·3 + 5·4 + head 2·8
    assert expected_cost(table, w, a, "size").item() == pytest.approx(66.0, abs=1e-9)
    # joint over (w, a) pairs, (2,2) (2,4) (2,8) (4,2) ... (8,8): a at W2A8 / W4A4 half
    # each, b at W8A2: 100·(0.5·16 + 0.5·16) + 50·16 + 1280 = 1600 + 800 + 1280
    pair = {"a": t(0, 0, 0.5, 0, 0.5, 0, 0, 0, 0), "b": t(0, 0, 0, 0, 0, 0, 1, 0, 0)}
    assert expected_cost(table, pair_probs=pair).item() == pytest.approx(3680.0, abs=1e-9)
    # size: 10·(0.5·2 + 0.5·4) + 5·8 + 16
    assert expected_cost(table, metric="size", pair_probs=pair).item() == pytest.approx(86.0)
    # the factorised form is the joint one with outer-product probabilities
    outer = {n: torch.outer(w[n], a[n]).flatten() for n in w}
    assert expected_cost(table, pair_probs=outer).item() == pytest.approx(4380.0)
    # probabilities over a subset of the bits, and over explicit pairs
    sub = {"a": t(1.0, 0.0), "b": t(0.0, 1.0)}  # bits (4, 8): a 4, b 8
    assert expected_cost(table, sub, sub, bits=(4, 8)).item() == pytest.approx(
        100 * 16 + 50 * 64 + 1280
    )
    pairs = [(2, 8), (8, 2)]
    pp = {"a": t(1.0, 0.0), "b": t(0.5, 0.5)}
    assert expected_cost(table, pair_probs=pp, pairs=pairs).item() == pytest.approx(
        100 * 16 + 50 * 16 + 1280
    )


def test_expected_cost_gradients_flow_through_softmax(resnet20, mbv3) -> None:
    for space, arch in ((resnet20, None), (mbv3, mbv3.sample_arch(random.Random(5)))):
        table = space.cost_table(arch)
        k = len(table.bit_choices)
        gen = torch.Generator().manual_seed(0)
        logits = {
            n: torch.randn(2, k, generator=gen, dtype=torch.float64, requires_grad=True)
            for n in table.searchable
        }
        w = {n: torch.softmax(v[0], 0) for n, v in logits.items()}
        a = {n: torch.softmax(v[1], 0) for n, v in logits.items()}
        scale = table.fixed_total("bitops")
        (expected_cost(table, w, a) / scale).backward()
        bits = torch.tensor(table.bit_choices, dtype=torch.float64)
        for name, v in logits.items():
            assert v.grad is not None and torch.isfinite(v.grad).all(), name
            assert (v.grad != 0).all(), name
            # d/dθ_i of MACs·E[b_w]·E[b_a] through a softmax: MACs·E[b_a]·p_i·(b_i − E[b_w])
            macs = table.profile(name).macs
            e_w, e_a = w[name] @ bits, a[name] @ bits
            analytic = macs * e_a * w[name] * (bits - e_w) / scale
            assert torch.allclose(v.grad[0], analytic.detach(), rtol=1e-9), name
        joint_logits = {
            n: torch.randn(k * k, generator=gen, requires_grad=True) for n in table.searchable
        }
        probs = {n: torch.softmax(v, 0) for n, v in joint_logits.items()}
        expected_cost(table, metric="size", pair_probs=probs).backward()
        grads = torch.stack([v.grad for v in joint_logits.values()])
        assert torch.isfinite(grads).all() and (grads != 0).all()


def test_expected_cost_rejects_bad_input() -> None:
    table = _two_layer_table()
    p = torch.tensor([1.0, 0.0, 0.0])
    with pytest.raises(PolicyError, match="no probabilities for layer 'b'"):
        expected_cost(table, {"a": p}, {"a": p, "b": p})
    with pytest.raises(PolicyError, match="'head' is not a searchable layer"):
        expected_cost(table, {"a": p, "b": p, "head": p}, {"a": p, "b": p})
    with pytest.raises(ValueError, match="1-D tensor of 3"):
        expected_cost(table, {"a": p, "b": p[:2]}, {"a": p, "b": p})
    with pytest.raises(ValueError, match="1-D tensor of 9"):
        expected_cost(table, pair_probs={"a": p, "b": p})
    with pytest.raises(ValueError, match="needs a_probs"):
        expected_cost(table, {"a": p, "b": p})
    with pytest.raises(ValueError, match="either"):
        expected_cost(table, {"a": p, "b": p}, pair_probs={"a": p, "b": p})
    with pytest.raises(PolicyError, match="allowed set"):
        expected_cost(table, {"a": p, "b": p}, {"a": p, "b": p}, bits=(2, 3, 4))


def test_each_fixed_convention_has_its_own_table() -> None:
    """A ``with_fixed`` copy made after the task space's table was built costs its fixed
    layers at its own bits, and a role-by-role convention gives real bits per layer."""
    space = get_space("resnet20")
    base = space.cost_table()  # built first: the copy must not reuse it
    fp_stem = space.with_fixed({"stem": 32})
    table = fp_stem.cost_table()
    assert base.fixed["conv1"] == LayerBits(8, 8)
    assert table.fixed == {"conv1": LayerBits(32, 32), "fc": LayerBits(8, 8)}
    policy = fp_stem.uniform_policy(4, 4)
    assert table.total(policy, "bitops") == fp_stem.cost(policy).bitops
    assert table.fixed_total("bitops") == sum(
        c.bitops for c in fp_stem.cost(policy).layers if c.name in ("conv1", "fc")
    )
    assert space.cost_table() is base


def test_a_space_costs_a_candidate_through_its_table() -> None:
    space = get_space("mbv3-cifar")
    arch = space.sample_arch(np.random.default_rng(4))
    policy = space.uniform_policy(3, 3, arch)
    table = space.cost_table(arch)
    assert space.cost(policy, arch) == table.report(policy)
    assert space.full_policy(policy, arch) == table.full_policy(policy)
    assert list(table.full_policy(policy)) == space.layer_names(arch)
    assert space.reference() == space.cost_table(space.reference_arch).w8a8()
    with pytest.raises(PolicyError, match="'stem.conv' is fixed at W8A8"):
        table.report({**policy, "stem.conv": LayerBits(4, 4)})
