"""QFA / BatchQuant: the quantizers, the sampler's stage rules, the encoding, the search."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.arena import (
    BatchQuantConfig,
    LayerBits,
    LSQConfig,
    LSQFullConfig,
    QuantConfig,
    create_quantizer,
    get_space,
    quant_layers,
    recalibrate,
)
from benchmark.arena.cost import profile_layers
from benchmark.arena.protocol import Constraint
from benchmark.arena.quant.batchquant import batch_qparams, batch_range
from benchmark.arena.spaces.mbv3.elastic import DynamicDWConv2d, DynamicQConv2d, front_slice
from methods import get_method
from methods.qfa import QFA, STAGE_BITS, QFAConfig
from methods.qfa.encoding import Encoding
from methods.qfa.nsga import initial_population, pareto_seeds, search_front
from methods.qfa.sampler import QFASampler, stage0_override


def bq(signed: bool = False, per_bit: bool = True):
    return create_quantizer(
        BatchQuantConfig(), signed=signed, bit_choices=(2, 3, 4, 8), per_bit=per_bit
    )


@pytest.fixture(scope="module")
def mbv3():
    """One mbv3-cifar space for the cost-heavy tests (its composed cost profiles are built
    once and shared)."""
    return get_space("mbv3-cifar")


# --- BatchQuant ------------------------------------------------------------------------
def test_batchquant_alpha_starts_at_one_and_outputs_lie_on_the_batch_grid() -> None:
    q = bq().train()
    assert torch.allclose(q.alpha(3), torch.ones(1))
    x = torch.randn(8, 4, 5, 5) * 2 + 0.5
    out = q(x, 3)
    low, high = batch_range(x)
    # the range is the channel-mean of per-channel min / max, clipped to include 0
    assert torch.isclose(low, x.amin(dim=(0, 2, 3)).mean().clamp(max=0))
    assert torch.isclose(high, x.amax(dim=(0, 2, 3)).mean().clamp(min=0))
    scale, zero = batch_qparams(low, high, *q.grid(3), 1e-8)
    codes = out / scale + zero
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.min() >= 0 - 1e-4 and codes.max() <= 7 + 1e-4
    assert len(out.unique()) <= 8


def test_batchquant_gradients_match_autograd_of_the_formula() -> None:
    q = bq(signed=True).train()
    with torch.no_grad():
        q.theta[1] = 0.3
        q.offset[1] = 0.2
    x = torch.randn(6, 3, 4, 4, requires_grad=True)
    q(x, 3).pow(2).sum().backward()
    grads = x.grad.clone(), q.theta.grad[1].clone(), q.offset.grad[1].clone()
    # reference: the spec's formula with a straight-through round, plain autograd
    x2 = x.detach().clone().requires_grad_(True)
    theta = torch.tensor(0.3, requires_grad=True)
    beta = torch.tensor(0.2, requires_grad=True)
    alpha = torch.nn.functional.softplus(theta, beta=np.log(2.0))
    scale, zero = batch_qparams(*batch_range(x2), -4, 3, 1e-8)
    u = (x2 * alpha / scale + zero + beta).clamp(-4, 3)
    qv = u + (u.round() - u).detach()
    ((qv - zero - beta) * scale / alpha).pow(2).sum().backward()
    torch.testing.assert_close(grads[0], x2.grad)
    torch.testing.assert_close(grads[1], theta.grad)
    torch.testing.assert_close(grads[2], beta.grad)


def test_batchquant_kernel_gives_the_python_paths_values(monkeypatch) -> None:
    from benchmark.arena.quant import batchquant_kernel
    from benchmark.arena.quant.batchquant import batchquant_path

    if batchquant_kernel.load() is None:
        pytest.skip("the BatchQuant CPU kernel could not be built here")
    x = torch.randn(8, 16, 9, 9) * 1.5 + 0.3
    grad = torch.randn_like(x)
    results = {}
    for path in ("auto", "python"):
        monkeypatch.setenv("MPQBENCH_LSQ_KERNEL", path)
        q = bq(signed=False).train()
        with torch.no_grad():
            q.theta[2] = 0.4
            q.offset[2] = -0.3
        xx = x.clone().requires_grad_(True)
        out = q(xx, 4)
        out.backward(grad)
        results[path] = (out.detach(), xx.grad, q.theta.grad[2], q.offset.grad[2])
        assert batchquant_path(x, q.theta[:1]) == ("python" if path == "python" else "fused")
    fused, python = results["auto"], results["python"]
    assert torch.equal(fused[0], python[0]) and torch.equal(fused[1], python[1])
    torch.testing.assert_close(fused[2], python[2], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fused[3], python[3], rtol=1e-4, atol=1e-6)


def test_batchquant_on_an_unsupported_device_takes_the_pytorch_path(monkeypatch) -> None:
    """A CUDA tensor (simulated: the kernel's ``supports`` says no) is quantized and its
    range taken by PyTorch: the same values as the kernel's."""
    from benchmark.arena.quant import batchquant_kernel
    from benchmark.arena.quant.batchquant import batchquant_path

    monkeypatch.delenv("MPQBENCH_LSQ_KERNEL", raising=False)
    x = (torch.randn(4, 8, 6, 6) * 2).to(memory_format=torch.channels_last)
    expected = bq(signed=True).train()(x, 3)
    monkeypatch.setattr(batchquant_kernel, "supports", lambda x, *scalars: False)
    assert batchquant_path(x) == "python"
    q = bq(signed=True).train()
    out = q(x.clone().requires_grad_(True), 3)
    assert type(out.grad_fn).__name__ == "_BatchQuantFunctionBackward"
    assert torch.equal(out, expected)


def test_batchquant_kernel_matches_on_channels_last_input_and_saves_only_x(monkeypatch) -> None:
    from benchmark.arena.quant import batchquant_kernel

    if batchquant_kernel.load() is None:
        pytest.skip("the BatchQuant CPU kernel could not be built here")
    x = (torch.randn(4, 8, 6, 6) * 2).to(memory_format=torch.channels_last)
    grad = torch.randn(4, 8, 6, 6)
    results = {}
    for path in ("auto", "python"):
        monkeypatch.setenv("MPQBENCH_LSQ_KERNEL", path)
        q = bq(signed=True).train()
        xx = x.clone().requires_grad_(True)
        out = q(xx, 3)
        if path == "auto":  # nothing activation-sized is saved but x itself
            saved = out.grad_fn.saved_tensors
            assert [t.numel() for t in saved if t.numel() > 1] == [x.numel()]
        out.backward(grad)
        results[path] = (out.detach(), xx.grad, q.theta.grad, q.offset.grad)
    fused, python = results["auto"], results["python"]
    assert torch.equal(fused[0], python[0]) and torch.equal(fused[1], python[1])
    torch.testing.assert_close(fused[2], python[2], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fused[3], python[3], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", [(8, 16, 9, 9), (3, 5, 7), (2, 3, 1, 1), (64, 24, 16, 16)])
def test_batch_range_kernel_gives_torchs_values_bit_for_bit(monkeypatch, shape) -> None:
    from benchmark.arena.quant import batchquant_kernel

    if batchquant_kernel.load() is None:
        pytest.skip("the BatchQuant CPU kernel could not be built here")
    x = torch.randn(shape) * 3 + 0.2
    lows, highs = batchquant_kernel.plane_ranges(batchquant_kernel.load(), x)
    inner = tuple(range(2, x.dim()))
    assert torch.equal(lows, x.amin(dim=inner).amin(dim=0))
    assert torch.equal(highs, x.amax(dim=inner).amax(dim=0))
    fused = batch_range(x)
    monkeypatch.setenv("MPQBENCH_LSQ_KERNEL", "python")
    assert all(torch.equal(a, b) for a, b in zip(fused, batch_range(x), strict=True))
    x.view(-1)[5] = float("nan")  # a NaN propagates, as torch's amin / amax
    lows, highs = batchquant_kernel.plane_ranges(batchquant_kernel.load(), x)
    assert torch.isnan(lows).sum() == 1 and torch.isnan(highs).sum() == 1


@pytest.mark.parametrize("shape", [(8, 16, 9, 9), (2, 3, 1, 1), (64, 24, 16, 16), (4, 1, 5, 5)])
def test_channels_last_batch_range_gives_torchs_values_bit_for_bit(monkeypatch, shape) -> None:
    """A channels-last batch (what mbv3's convolutions hand BatchQuant on a CPU) takes the
    kernel's rows-of-channels pass: torch's per-channel min / max, NaN included."""
    from benchmark.arena.quant import batchquant_kernel

    if batchquant_kernel.load() is None:
        pytest.skip("the BatchQuant CPU kernel could not be built here")
    x = (torch.randn(shape) * 3 + 0.2).to(memory_format=torch.channels_last)
    assert x.is_contiguous(memory_format=torch.channels_last)
    lows, highs = batchquant_kernel.channel_ranges_last(batchquant_kernel.load(), x)
    assert torch.equal(lows, x.amin(dim=(0, 2, 3))) and torch.equal(highs, x.amax(dim=(0, 2, 3)))
    fused = batch_range(x)
    monkeypatch.setenv("MPQBENCH_LSQ_KERNEL", "python")
    assert all(torch.equal(a, b) for a, b in zip(fused, batch_range(x), strict=True))
    x[1 % shape[0], shape[1] - 1, 0, 0] = float("nan")  # a NaN propagates, as torch's
    lows, highs = batchquant_kernel.channel_ranges_last(batchquant_kernel.load(), x)
    assert torch.isnan(lows).tolist() == [c == shape[1] - 1 for c in range(shape[1])]
    assert torch.isnan(highs).tolist() == [c == shape[1] - 1 for c in range(shape[1])]


def test_batchquant_recalibration_sets_the_running_range_and_eval_uses_it() -> None:
    q = bq()
    batches = [torch.rand(4, 3, 2, 2) * (i + 1) for i in range(3)]
    q.train()
    q.start_calibration()
    for b in batches:
        q(b, 4)
    q.end_calibration()
    lows, highs = zip(*(batch_range(b) for b in batches), strict=True)
    slot = q.slot(4)
    assert torch.isclose(q.running_min[slot], torch.stack(lows).mean())
    assert torch.isclose(q.running_max[slot], torch.stack(highs).mean())
    assert bool(q.calibrated[slot]) and not bool(q.calibrated[q.slot(2)])
    # training (no EMA): the running range is untouched, the batch's range is used
    before = q.running_max.clone()
    q(torch.rand(4, 3, 2, 2) * 100, 4)
    assert torch.equal(q.running_max, before)
    # eval: the running range, not the batch's
    q.eval()
    x = torch.rand(4, 3, 2, 2) * 100
    scale, zero = batch_qparams(q.running_min[slot], q.running_max[slot], 0, 15, 1e-8)
    expected = (torch.clamp(torch.round(x / scale + zero), 0, 15) - zero) * scale
    torch.testing.assert_close(q(x, 4), expected)
    # the toolkit's recalibration drives it (a model of quantized layers)
    space = get_space("resnet20")
    model = space.build(None, space.uniform_policy(4, 4), QFA.quant())
    data = torch.utils.data.TensorDataset(torch.randn(64, 3, 32, 32), torch.zeros(64).long())
    recalibrate(model, data, batches=2, batch_size=32)
    layer = model.layer1[0].conv1
    assert bool(layer.act_quantizer.calibrated[layer.act_quantizer.slot(4)])


def test_per_layer_bit_state_is_distinct_and_shared_across_architectures() -> None:
    space = get_space("mbv3-cifar")
    supernet = space.build_supernet(QFA.quant())
    layer = supernet.blocks["2"].pw_expand
    assert layer.weight_quantizer.num_slots == len(space.allowed_bits()) - 1
    assert layer.act_quantizer.num_slots == layer.weight_quantizer.num_slots
    x = torch.randn(4, 3, 32, 32)
    rng = random.Random(0)
    steps = {}
    for bits in (2, 3):
        for _ in range(2):  # two architectures using the same layer at the same bits
            arch = space.sample_arch(rng)
            space.set_active(supernet, arch, space.uniform_policy(bits, bits, arch))
            supernet.train()(x)
            steps.setdefault(bits, set()).add(layer.weight_quantizer.step_size(bits))
    # one step per (layer, bit): the same for every architecture, different between bits
    assert all(len(v) == 1 for v in steps.values())
    assert steps[2] != steps[3]
    # the full weight is quantized (init from its mean |w|), whatever the slice
    full = layer.weight.detach()
    expected = 2 * full.abs().mean() / np.sqrt(1)  # Qp = 1 at 2 bits (signed)
    assert np.isclose(layer.weight_quantizer.step_size(2), float(expected), rtol=1e-5)


def test_full_weight_quantization_commutes_with_extraction() -> None:
    space = get_space("mbv3-cifar")
    supernet = space.build_supernet(QFA.quant()).eval()
    arch = space.sample_arch(random.Random(3))
    policy = space.uniform_policy(3, 4, arch)
    x = torch.randn(2, 3, 32, 32)
    space.set_active(supernet, arch, policy)
    supernet.train()(x)  # initialises the steps, batch ranges
    net = space.extract(supernet, arch)
    supernet.train(), net.train()
    torch.testing.assert_close(net(x), supernet(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["pointwise", "depthwise"])
def test_slice_rule_is_the_weight_configs_and_each_rule_matches_its_definition(kind) -> None:
    """LSQConfig (OQAT) quantizes the active slice; LSQFullConfig (QFA) the full weight,
    then slices: a different step (init from mean |w|) and step gradient scale."""
    bits, qp = 3, 3  # signed 3-bit grid [-4, 3]

    def build(config):
        torch.manual_seed(0)
        quant = QuantConfig(weight=config, per_bit_weight=True)
        if kind == "pointwise":
            layer = DynamicQConv2d(16, 24, quant=quant)
            layer.active_out = 8
        else:
            layer = DynamicDWConv2d(16, 1, quant=quant)
            layer.active_kernel = 3
            with torch.no_grad():
                layer.transform_5to3.add_(0.1 * torch.randn(9, 9))
        layer.set_bits(LayerBits(bits, 32))
        return layer

    def fake_quant(w, step):  # LSQ's forward by its definition
        s = step.abs() + 1e-8
        return torch.round(torch.clamp(w / s, -4, qp)) * s

    def conv(layer, x, w):
        if kind == "pointwise":
            return torch.nn.functional.conv2d(x, w)
        return torch.nn.functional.conv2d(x, w, None, 1, 1, 1, x.shape[1])

    x = torch.randn(2, 8, 5, 5)  # 8 of 16 input channels
    sliced, full = build(LSQConfig()), build(LSQFullConfig())
    assert not LSQConfig.quantizes_full_weight and LSQFullConfig.quantizes_full_weight
    out_sliced, out_full = sliced(x), full(x)
    if kind == "pointwise":
        w_slice, w_full = sliced.active_weight(8), full.weight
        cut = (8, 8)
    else:
        w_slice, w_full = sliced.active_weight(8), full.active_weight(16)  # kernel transform
        cut = (8,)
    step_sliced, step_full = (q.weight_quantizer.step_size(bits) for q in (sliced, full))
    # each rule: LSQ's init on (and quantization of) its own tensor
    assert np.isclose(step_sliced, 2 * w_slice.abs().mean().item() / np.sqrt(qp), rtol=1e-5)
    assert np.isclose(step_full, 2 * w_full.abs().mean().item() / np.sqrt(qp), rtol=1e-5)
    assert not np.isclose(step_sliced, step_full)
    expected_sliced = fake_quant(w_slice, torch.tensor(step_sliced))
    expected_full = front_slice(fake_quant(w_full, torch.tensor(step_full)), *cut)
    torch.testing.assert_close(out_sliced, conv(sliced, x, expected_sliced))
    torch.testing.assert_close(out_full, conv(full, x, expected_full))
    assert not torch.allclose(out_sliced, out_full)
    # at one step value the forward agrees; the step's gradient scale is 1/sqrt(numel·Qp)
    # of the quantized tensor: the slice's or the full weight's
    with torch.no_grad():
        full.weight_quantizer.step.copy_(sliced.weight_quantizer.step)
    grads = []
    for layer in (sliced, full):
        layer.weight_quantizer.step.grad = None
        layer(x).square().sum().backward()
        grads.append(layer.weight_quantizer.step.grad[layer.weight_quantizer.slot(bits)])
    torch.testing.assert_close(sliced(x), full(x))
    ratio = float(grads[1] / grads[0])
    assert np.isclose(ratio, np.sqrt(w_slice.numel() / w_full.numel()), rtol=1e-4)


def test_fixed_option_uses_the_protocols_rule(mbv3) -> None:
    space = mbv3

    def fit(constraint: str, mode: str = "auto"):
        ctx = SimpleNamespace(space=space, constraint=Constraint.parse(constraint))
        return QFA(fixed=mode).fit(ctx)

    loose = fit("bitops<=1.0")
    assert loose.fixed == {"stem": 32, "se": 32, "classifier": 8}
    assert "first conv and SE FP" in loose.why and "own convention" in loose.why
    tight = fit("bitops<=0.3")  # the FP stem alone is 0.65x W8A8
    assert tight.fixed is None and "misses bitops<=0.3" in tight.why
    assert fit("bitops<=1.0", "space").fixed is None
    with pytest.raises(ValueError, match="minimum achievable"):
        fit("bitops<=0.3", "method")


# --- the sampler -----------------------------------------------------------------------
def test_stage0_override_rule_and_its_probability() -> None:
    rng = random.Random(0)
    assert stage0_override(3, 4, (2, 3, 4), rng) == (3, 4)
    assert stage0_override(32, 32, (2, 3, 4), rng) == (32, 32)
    draws = [stage0_override(32, 2, (2, 3, 4), rng) for _ in range(20000)]
    fp = sum(d == (32, 32) for d in draws) / len(draws)
    assert abs(fp - 0.2) < 0.015  # binomial sd 0.0028: > 5 sd
    assert all(d == (32, 32) or (d[0] in (2, 3, 4) and d[1] == 2) for d in draws)


def test_sampler_stage_rules() -> None:
    space = get_space("mbv3-cifar").with_fixed(QFA.qfa_fixed(get_space("mbv3-cifar")))
    rng = random.Random(1)
    stage0 = QFASampler(space, num_random=4, bits=(2, 3, 4, 32))
    stage1 = QFASampler(space, num_random=4, bits=(2, 3, 4))
    mixed = 0
    for _ in range(50):
        arch, policy = stage0.largest(rng)
        assert arch == space.max_arch() and len({b for b in policy.values()}) == 1
        others = stage0.others(rng)
        assert len(others) == 5 and others[0][0] == space.min_arch()
        assert len({b for b in others[0][1].values()}) == 1  # min subnet: one uniform bit
        for _, p in others[1:]:
            for b in p.values():  # never exactly one of (W, A) at 32
                assert (b.w_bits == 32) == (b.a_bits == 32)
            mixed += len({(b.w_bits, b.a_bits) for b in p.values()}) > 1
        for arch1, p1 in [stage1.largest(rng), *stage1.others(rng)]:
            assert all(b.w_bits < 32 and b.a_bits < 32 for b in p1.values())
            assert set(p1) == set(space.searchable_layers(arch1))
    assert mixed == 50 * 4  # random subnets: independent per-layer bits


# --- encoding, NSGA-II, the cost model's composed profiles --------------------------
def test_predictor_encoding_round_trips() -> None:
    space = get_space("mbv3-cifar")
    enc = Encoding(space)
    rng = random.Random(2)
    for _ in range(20):
        arch = space.sample_arch(rng)
        policy = space.sample_policy(arch, rng)
        searchable = {n: policy[n] for n in space.searchable_layers(arch)}
        f = enc.features(arch, searchable)
        assert f.shape == (enc.num_features,) and set(np.unique(f)) <= {0.0, 1.0}
        assert enc.decode_features(f) == (arch, searchable)
        assert enc.decode(enc.genome(arch, searchable)) == (arch, searchable)
    fixed = Encoding(get_space("resnet20"))
    policy = {n: LayerBits(8, 2) for n in get_space("resnet20").searchable_layers()}
    assert fixed.decode_features(fixed.features(None, policy)) == (None, policy)
    low = Encoding(get_space("resnet20"), bits=(2, 3, 4))  # QFA's stage-1 bits only
    assert low.bit_choices == (2, 3, 4) and set(low.upper) == {2}


def test_every_front_member_meets_the_constraint(mbv3) -> None:
    space = mbv3
    enc = Encoding(space)
    limit = 0.25 * space.reference().bitops_w8a8

    def objectives(genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        decoded = [enc.decode(g) for g in genomes]
        cost = np.array([space.cost(p, a).bitops for a, p in decoded], float)
        return -cost / limit + np.array([sum(g) for g in genomes]) * 1e-3, cost

    front = search_front(enc.upper, objectives, limit, population=12, generations=4, seed=0)
    assert len(front.genomes) >= 1
    for g, c in zip(front.genomes, front.cost, strict=True):
        arch, policy = enc.decode(g)
        assert space.cost(policy, arch).bitops == c <= limit


def test_pareto_seeds_take_the_measured_samples_layer_by_layer() -> None:
    """As ``build_pareto_population``: the non-dominated samples first, then the next
    layer; a layer that does not fit keeps its extremes (crowding distance)."""
    genomes = np.arange(12).reshape(6, 2)
    top1 = np.array([60.0, 70.0, 80.0, 65.0, 50.0, 75.0])
    cost = np.array([1.0, 2.0, 3.0, 2.5, 1.5, 3.5])
    # layer 1: (60, 1), (70, 2), (80, 3); layer 2: (65, 2.5), (50, 1.5), (75, 3.5)
    seeds = pareto_seeds(genomes, top1, cost, 5)
    assert [list(g) for g in seeds[:3]] == [[0, 1], [2, 3], [4, 5]]
    assert {tuple(g) for g in seeds[3:]} == {(8, 9), (10, 11)}  # the layer's two ends
    assert len(pareto_seeds(genomes, top1, cost, 2)) == 2
    assert {tuple(g) for g in pareto_seeds(genomes, top1, cost, 2)} == {(0, 1), (4, 5)}
    twice = pareto_seeds(np.vstack([genomes, genomes]), np.tile(top1, 2), np.tile(cost, 2), 99)
    assert len(twice) == 6  # each genome once


def test_the_seeded_front_spans_the_cost_range_without_anchors(mbv3) -> None:
    """NSGA-II starts from the measured samples' Pareto layers (the trained extremes among
    them); its front still spans at least 2x in BitOPs below the limit."""
    space = mbv3
    enc = Encoding(space, bits=STAGE_BITS[-1])
    limit = 0.3 * space.reference().bitops_w8a8
    sampler = QFASampler(space, bits=STAGE_BITS[-1])
    samples = QFA._extremes(space, enc) + [
        sampler.predictor_sample(random.Random(k)) for k in range(12)
    ]
    costs = np.array([space.cost(p, a).bitops for a, p in samples], float)
    top1 = np.sqrt(costs / limit)  # "measured" top-1 grows with cost
    seeds = pareto_seeds(np.stack([enc.genome(a, p) for a, p in samples]), top1, costs, 12)
    start = initial_population(enc.upper, 12, seed=0, seeds=seeds)
    assert start.shape == (12, len(enc.upper)) and (start[: len(seeds)] == seeds).all()

    def objectives(genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cost = np.array([space.cost(p, a).bitops for a, p in map(enc.decode, genomes)])
        return np.sqrt(cost / limit), cost

    front = search_front(
        enc.upper, objectives, limit, population=12, generations=3, seed=0, seeds=seeds
    )
    assert front.cost.max() <= limit
    assert front.cost.max() / front.cost.min() >= 2
    with pytest.raises(ValueError, match="outside"):
        initial_population(enc.upper, 4, seed=0, seeds=seeds + 5)


def test_predictor_samples_follow_the_originals_strata(mbv3) -> None:
    """30% at one uniform bit-width, 30% forced to full depth (plus the random draws that
    are full depth anyway: (1/2)^3 of the rest), as ``collect_network_info.py``."""
    sampler = QFASampler(mbv3, bits=STAGE_BITS[-1])
    rng = random.Random(0)
    draws = [sampler.predictor_sample(rng) for _ in range(2000)]
    uniform = np.mean([len({(b.w_bits, b.a_bits) for b in p.values()}) == 1 for _, p in draws])
    full = np.mean([a.depths == mbv3.max_arch().depths for a, _ in draws])
    assert abs(uniform - 0.3) < 0.04
    assert abs(full - (0.3 + 0.7 * 0.5**3)) < 0.04
    assert all(set(p) == set(mbv3.searchable_layers(a)) for a, p in draws[:50])


def test_predictor_data_is_scored_on_one_recalibration_subset(mbv3, monkeypatch) -> None:
    from methods.qfa.method import RECALIBRATION_SEED, _Search

    seeds: list[int] = []

    def score(net, *, seed=0, batches=None):
        seeds.append(seed)
        return 50.0

    ctx = SimpleNamespace(
        task=SimpleNamespace(seed=3), score=score, save_checkpoint=lambda state: None
    )
    monkeypatch.setattr(QFA, "_materialise", staticmethod(lambda *args: None))
    monkeypatch.setattr(QFA, "_offer_best_sample", lambda self, *args: None)
    run = _Search(ctx, mbv3, QFA.quant(), None, {}, {"phases": {}})
    data = QFA(QFAConfig(predictor_samples=9))._predictor_data(run)
    assert len(data) == 9 and seeds == [RECALIBRATION_SEED] * 9


def test_composed_mbv3_profiles_equal_direct_profiling(mbv3) -> None:
    space = mbv3
    for seed in (0, 1):
        arch = space.sample_arch(random.Random(seed))
        assert space.profiles(arch) == profile_layers(space.build(arch))


def test_options_and_preset_section_are_validated() -> None:
    assert get_method("qfa") is QFA
    with pytest.raises(ValueError, match="override_prob"):
        QFA(override_prob=1.5)
    with pytest.raises(ValueError, match="fixed = 'qfa' is wrong.*'auto', 'method', 'space'"):
        QFA(fixed="qfa")
    with pytest.raises(Exception, match="population"):
        QFAConfig(population=2)
    assert LSQFullConfig().to_dict() == {"kind": "lsq-full", "grad_scale": True}
    assert QuantConfig.from_dict(QFA.quant().to_dict()) == QFA.quant()


def test_lsq_activation_ablation_builds_a_trainable_lsq_supernet(mbv3) -> None:
    """``act_quantizer="lsq"`` (the paper's ablation): the same supernet with LSQ's learned
    activation steps per (layer, bit) in place of BatchQuant; one sandwich step trains it."""
    with pytest.raises(ValueError, match="act_quantizer"):
        QFA(act_quantizer="pact")
    assert QFA(act_quantizer="lsq").config.act_quantizer == "lsq"
    quant = QFA.quant("lsq")
    assert quant.act.kind == "lsq" and quant.weight == QFA.quant().weight
    space = mbv3.with_fixed(QFA.qfa_fixed(mbv3))
    supernet = space.build_supernet(quant).train()
    sampler = QFASampler(space, num_random=0, bits=STAGE_BITS[1])
    arch, policy = sampler.largest(random.Random(0))
    space.set_active(supernet, arch, policy)
    x = torch.randn(4, 3, 32, 32)
    torch.nn.functional.cross_entropy(supernet(x), torch.tensor([0, 1, 2, 3])).backward()
    layer = next(iter(quant_layers(supernet).values()))
    assert type(layer.act_quantizer).__name__ == "LSQQuantizer"
    steps = [q.act_quantizer.step.grad for q in quant_layers(supernet).values()]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in steps)


# --- end to end ------------------------------------------------------------------------
def test_run_qfa_on_digits_end_to_end(tmp_path: Path, micro_preset, cache_dir: Path) -> None:
    from benchmark.cli import main

    preset = micro_preset("qfa-micro", {"qfa": "rescore_held_out = true\n"})
    argv = ["run", "--methods", "qfa", "--preset", str(preset), "--executor", "serial"]
    argv += ["--out", str(tmp_path / "out"), "--run-id", "qfa", "--cache-dir", str(cache_dir)]
    assert main(argv) == 0
    rows = pd.read_parquet(tmp_path / "out" / "runs" / "qfa" / "records.parquet")
    assert (rows["status"] == "ok").all(), rows[["status", "error"]]
    assert {"retrain", "inherit"} <= set(rows["track"])
    assert rows["feasible"].all() and (rows["bitops_ratio_w8a8"] <= 0.3).all()
    # the default bitops<=0.3 is below QFA's FP-stem minimum: the space's convention
    assert all(json.loads(f) == {"stem": 8, "se": 8, "classifier": 8} for f in rows["fixed"])
    inherit = rows[rows["track"] == "inherit"]
    assert all(json.loads(q)["weight"]["kind"] == "lsq-full" for q in inherit["quant"])
    # the predictor's first samples are the sandwich's extremes; the held-out ones scored twice
    (trial,) = (tmp_path / "out" / "runs" / "qfa" / "trials").iterdir()
    state = torch.load(trial / "search_checkpoint.pt", weights_only=True)["state"]
    space = get_space("mbv3-cifar")
    first = state["data"][0]
    assert space.validate_arch(first["arch"]) == space.min_arch()
    assert {(b["w_bits"], b["a_bits"]) for b in first["policy"].values()} == {(2, 2)}
    held = state["log"]["predictor"]["held_out_index"]
    assert len(state["rescore"]) == len(held) >= 2
    assert "scored twice agree at Kendall tau" in (trial / "log.txt").read_text()
    # the search log keeps each stage's loss curve and the trained extremes' val top-1
    search_log = json.loads((trial / "search_log.json").read_text())
    assert all(s["loss_curve"] and s["loss_curve"][0][0] == 0 for s in search_log["stages"])
    labels = [f"{end} W{b}A{b}" for end in ("min", "max") for b in sorted(STAGE_BITS[-1])]
    extremes = search_log["extremes_val_top1"]
    first = state["data"][: len(labels)]
    assert extremes and extremes == {k: d["top1"] for k, d in zip(labels, first, strict=False)}


def test_the_scored_front_members_always_include_the_most_accurate() -> None:
    """``max_front`` 1 (the ``fmnist`` preset) offers the front member with the best
    predicted top-1, not the cheapest; more members add the cheapest and spread in cost."""
    from methods.qfa.method import _spread

    cost = np.array([5.0, 1.0, 3.0, 4.0, 2.0])  # a front: the costlier, the more accurate
    predicted = np.array([90.0, 70.0, 80.0, 85.0, 75.0])
    order = np.argsort(-predicted)
    assert _spread(order, cost, 1) == [0]
    assert _spread(order, cost, 2) == [0, 1]
    assert _spread(order, cost, 3) == [0, 2, 1]  # best first, then by predicted top-1
    assert _spread(order, cost, 9) == [int(k) for k in order]
    # off a strict front (the costliest is not the best predicted) the best still counts
    predicted = np.array([80.0, 70.0, 90.0, 85.0, 75.0])
    order = np.argsort(-predicted)
    assert _spread(order, cost, 1) == [2]
    assert set(_spread(order, cost, 2)) == {2, 1}
