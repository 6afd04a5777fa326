"""HAWQ-V3: Hutchinson traces against exact Hessians, the stopping test, Ω, the ILP against
brute force, tied layers, infeasible limits, options, the method and a CLI run.

The method tests use an FP ResNet-20 trained by a micro preset (``tests/tiny.toml``, whose
``[methods.hawq]`` section scales the Hessian probe down, with a 320-image training subset and one
pretrain epoch) cached in the session cache folder, where the CLI run finds it again.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.arena import (
    BudgetExceeded,
    HessianProbe,
    LayerBits,
    QConv2d,
    QLinear,
    QuantConfig,
    SearchSpace,
    apply_policy,
    hutchinson_trace,
    hutchinson_traces,
    relative_standard_error,
    twice_differentiable,
)
from benchmark.arena.context import Context
from benchmark.arena.data import load_splits
from benchmark.arena.hessian import Target, grouped_conv2d
from benchmark.arena.presets import Preset, PresetError, load_preset
from benchmark.arena.protocol import Budget, Task
from benchmark.arena.quant.minmax import symmetric_minmax
from benchmark.arena.spaces import get_space
from benchmark.cli import main
from benchmark.harness.spec import TrialSpec
from benchmark.harness.trial import run_trial
from methods import check_preset_sections, get_method
from methods.hawq import HAWQ, input_errors, layer_groups, weight_errors
from methods.hawq_ilp import AllocationProblem, InfeasibleAllocation, solve

TINY = Path(__file__).parent / "tiny.toml"
FAST = {"batch_size": 8, "max_iter": 3}  # the method tests' probe: 8 images, 3 vectors


def hawq(ctx: Context, **options: Any) -> HAWQ:
    """HAWQ as a run configures it: its preset's ``[methods.hawq]`` section, then options."""
    return HAWQ(HAWQ.configure(ctx.preset, options))


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of the micro preset: tiny.toml (its [methods.hawq] section too), 320 training images."""
    text = TINY.read_text().replace('name = "tiny"', 'name = "hawq-micro"')
    text = text.replace("[data]\n", "[data]\ntrain_subset = 320\n")
    text = text.replace("[pretrain]\nepochs = 2", "[pretrain]\nepochs = 1")
    path = tmp_path_factory.mktemp("hawq-preset") / "micro.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def splits(micro: str):
    data = load_preset(micro).data
    return load_splits(
        "digits", val_fraction=data.val_fraction, seed=0, train_subset=data.train_subset,
        augment=data.augment,
    )  # fmt: skip


@pytest.fixture(scope="module")
def micro_fp(micro: str, splits, cache_dir: Path) -> dict:
    """FP ResNet-20 of the micro preset (cached where the CLI run below looks for it)."""
    from benchmark.arena.recipes.pretrain import pretrain_fp

    space = get_space("resnet20", num_classes=splits.num_classes)
    state, _ = pretrain_fp(space, splits, load_preset(micro), seed=0, cache_dir=cache_dir)
    return state


def make_ctx(
    space: SearchSpace | str,
    fp_state: Mapping[str, Tensor],
    splits,
    constraint: str,
    tmp_path: Path,
    *,
    seed: int = 0,
    samples: int = 10**6,
    preset: str = str(TINY),
) -> Context:
    space = get_space(space, num_classes=splits.num_classes) if isinstance(space, str) else space
    loaded = load_preset(preset)
    return Context.create(
        Task(space.name, "digits", loaded.name, constraint, seed),
        space,
        loaded,
        splits,
        fp_state,
        budget=Budget(600.0, samples),
        workdir=tmp_path,
        log=logging.getLogger("test_hawq"),
    )


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """One torch thread: with two, Hessian-vector products on a busy 2-core machine spend
    their time in OpenMP barriers (measured beside other jobs: 1.3 s vs 0.08 s per product
    on ResNet-20 with 8 images, 40 ms vs 2 ms on the 2-layer MLP)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spd(n: int, seed: int, sign: float = 1.0) -> Tensor:
    """A dense symmetric definite matrix (float64): off-diagonals give Hutchinson variance."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return sign * (a @ a.T / n + 0.5 * torch.eye(n, dtype=torch.float64))


def _hutchinson_sd(h: Tensor, vectors: int) -> float:
    """Standard deviation of the mean of ``vectors`` Rademacher samples ``vᵀHv``:
    ``Var(vᵀHv) = 2 Σ_{i≠j} H_ij²``."""
    off = h - torch.diag(torch.diag(h))
    return math.sqrt(2 * float((off**2).sum()) / vectors)


# --------------------------------------------------------------------------- Hutchinson
def test_hutchinson_matches_the_exact_trace_of_a_quadratic() -> None:
    h = _spd(30, seed=1)
    estimate = hutchinson_trace(
        lambda v: (h @ v[0],), [(30,)], max_iter=2000, tol=0.0, like=h
    )  # tol 0: every vector is drawn
    assert estimate.iterations == 2000 and not estimate.converged
    exact = float(torch.trace(h))
    assert abs(estimate.trace - exact) <= 4 * _hutchinson_sd(h, 2000)
    assert estimate.normalised == pytest.approx(estimate.trace / 30)


def test_stopping_test_is_the_relative_standard_error() -> None:
    samples = [1.0, 3.0, 2.0, 2.0]
    sd = float(np.std(samples, ddof=1))
    assert relative_standard_error(samples) == pytest.approx(sd / 2 / 2.0)
    assert relative_standard_error([-1.0, -3.0]) == pytest.approx(relative_standard_error([1, 3]))
    assert relative_standard_error([5.0]) == math.inf  # one sample: no error estimate
    assert relative_standard_error([1.0, -1.0]) == math.inf  # a zero mean
    h = _spd(30, seed=2, sign=-1.0)  # a negative trace stops as a positive one does
    estimate = hutchinson_trace(lambda v: (h @ v[0],), [(30,)], max_iter=2000, like=h)
    assert estimate.converged and estimate.trace < 0
    assert relative_standard_error(estimate.samples) <= 0.03
    exact = float(torch.trace(h))
    assert abs(estimate.trace - exact) <= 4 * _hutchinson_sd(h, estimate.iterations)


def test_stopping_rule_min_and_max_iter() -> None:
    h = _spd(30, seed=3)
    loose = hutchinson_trace(lambda v: (h @ v[0],), [(30,)], max_iter=1000, tol=0.05, like=h)
    assert loose.converged and 10 <= loose.iterations < 1000
    errors = [relative_standard_error(loose.samples[:n]) for n in range(2, loose.iterations + 1)]
    assert errors[-1] <= 0.05  # stopped where the test passed, and not before
    assert all(e > 0.05 for e in errors[8:-1])  # from the 10th vector on
    capped = hutchinson_trace(lambda v: (h @ v[0],), [(30,)], max_iter=7, tol=1e-12, like=h)
    assert capped.iterations == 7 and not capped.converged
    diagonal = torch.diag(torch.arange(1.0, 6.0))  # Rademacher is exact on a diagonal
    exact = hutchinson_trace(lambda v: (diagonal @ v[0],), [(5,)], max_iter=50)
    assert exact.trace == pytest.approx(15.0) and exact.iterations == 10  # the minimum
    few = hutchinson_trace(lambda v: (diagonal @ v[0],), [(5,)], max_iter=50, min_iter=2)
    assert few.iterations == 2 and few.converged
    assert hutchinson_trace(lambda v: (diagonal @ v[0],), [(5,)], max_iter=4).iterations == 4
    with pytest.raises(ValueError, match="max_iter"):
        hutchinson_trace(lambda v: v, [(2,)], max_iter=0)
    with pytest.raises(ValueError, match="min_iter"):
        hutchinson_trace(lambda v: v, [(2,)], min_iter=0)
    with pytest.raises(ValueError, match="tol"):
        hutchinson_trace(lambda v: v, [(2,)], tol=-1.0)


def test_a_small_layers_trace_is_within_10_percent_at_the_defaults() -> None:
    """A 27-parameter layer of a 2-layer net against the exact Hessian
    (``torch.autograd.functional.hessian``): fewer than 5% of 200 seeds more than 10% off.
    (PyHessian's rule, a relative change of the mean below 1e-3, stopped such a layer
    after 2 vectors.)"""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, generator=gen), torch.randint(0, 4, (64,), generator=gen)
    w1, w2 = 0.5 * torch.randn(9, 3, generator=gen), 0.5 * torch.randn(4, 9, generator=gen)

    def loss(w: Tensor) -> Tensor:
        return F.cross_entropy(F.relu(x @ w.reshape(9, 3).T) @ w2.T, y)

    h = torch.autograd.functional.hessian(loss, w1.flatten()).double()
    exact = float(torch.trace(h))
    off = [
        abs(hutchinson_trace(lambda v: (h @ v[0],), [(27,)], seed=seed, like=h).trace - exact)
        / abs(exact)
        > 0.10
        for seed in range(200)
    ]
    assert sum(off) / 200 < 0.05


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def _mlp_batches(seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(7, 6, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 3, (7,), generator=g)
    return [(xs[:4], ys[:4]), (xs[4:], ys[4:])]  # unequal batches: weights 4/7, 3/7


def _mean_loss(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> Tensor:
    n = sum(x.shape[0] for x, _ in batches)
    return sum(F.cross_entropy(model(x), y) * (x.shape[0] / n) for x, y in batches)


def _exact_blocks(model: _MLP, batches: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """The exact Hessian of the batches' mean cross-entropy in each probe target
    (``torch.autograd.functional.hessian``): fc1's and fc2's weights, the images (fc1's
    input) and the hidden activations (fc2's input), over both batches."""
    blocks = {}
    for name in ("fc1", "fc2"):
        weight = dict(model.named_parameters())[f"{name}.weight"].detach()

        def of_weight(w: Tensor, name: str = name, shape: torch.Size = weight.shape) -> Tensor:
            params = {k: v for k, v in model.named_parameters()}
            params[f"{name}.weight"] = w.view(shape)
            return _mean_loss(lambda x: torch.func.functional_call(model, params, (x,)), batches)

        blocks[f"{name}:weight"] = torch.autograd.functional.hessian(of_weight, weight.flatten())
    sizes = [x.shape[0] for x, _ in batches]
    n = sum(sizes)

    def of_inputs(flat: Tensor, head: nn.Module, width: int) -> Tensor:
        parts = flat.split([s * width for s in sizes])
        return sum(
            F.cross_entropy(head(p.view(s, width)), y) * (s / n)
            for p, s, (_, y) in zip(parts, sizes, batches, strict=True)
        )

    images = torch.cat([x.flatten() for x, _ in batches])
    hidden = torch.cat([torch.tanh(model.fc1(x)).detach().flatten() for x, _ in batches])
    blocks["fc1:input"] = torch.autograd.functional.hessian(
        lambda f: of_inputs(f, model, 6), images
    )
    blocks["fc2:input"] = torch.autograd.functional.hessian(
        lambda f: of_inputs(f, model.fc2, 5), hidden
    )
    return blocks


def test_probe_products_are_the_exact_hessian_blocks() -> None:
    """Each Hessian-vector product of the probe (v restricted to one layer's weight or
    input, batches weighted by size) equals the exact Hessian block times v."""
    model = _MLP().double()
    batches = _mlp_batches()
    charged: list[int] = []
    probe = HessianProbe(model, ["fc1", "fc2"], batches, inputs=True, charge=charged.append)
    assert charged == [7] and probe.images == 7
    assert [t.name for t in probe.targets] == ["fc1:weight", "fc2:weight", "fc1:input", "fc2:input"]
    blocks = _exact_blocks(model, batches)
    g = torch.Generator().manual_seed(1)
    for target in probe.targets:
        h = blocks[target.name]
        assert probe.numel(target) == h.shape[0]
        for _ in range(3):
            v = torch.randn(h.shape[0], generator=g, dtype=torch.float64)
            shapes = probe.shapes(target)
            parts = v.split([math.prod(s) for s in shapes])
            hv = probe.hvp(target, tuple(p.view(s) for p, s in zip(parts, shapes, strict=True)))
            assert torch.allclose(torch.cat([t.flatten() for t in hv]), h @ v, atol=1e-12)
    assert charged == [7] * (1 + 4 * 3)  # the forward once, then every product


def test_probe_traces_match_the_exact_traces_of_a_small_mlp() -> None:
    model = _MLP().double()
    batches = _mlp_batches()
    probe = HessianProbe(model, ["fc1", "fc2"], batches, inputs=True)
    vectors = 400
    estimates = hutchinson_traces(probe, max_iter=vectors, tol=0.0, seed=5)
    for name, h in _exact_blocks(model, batches).items():
        got = estimates[name]
        assert got.iterations == vectors and got.numel == h.shape[0]
        assert abs(got.trace - float(torch.trace(h))) <= 4 * _hutchinson_sd(h, vectors), name
    assert [t.shape for t in probe.layer_inputs["fc2"]] == [(4, 5), (3, 5)]


def test_single_linear_layer_trace_has_its_closed_form() -> None:
    """Softmax cross-entropy of ``Wx``: ``H = (1/N) Σ_n (diag p − p pᵀ) ⊗ x xᵀ``, so
    ``tr H = (1/N) Σ_n (Σ_c p_c (1 − p_c)) ‖x_n‖²``: no autograd in the reference."""
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(8, 4, bias=False).double()
    x = torch.randn(16, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (16,), generator=g)
    p = torch.softmax(layer(x), dim=1).detach()
    exact = float(((p * (1 - p)).sum(1) * (x**2).sum(1)).mean())
    h = (
        sum(
            torch.kron(torch.diag(pn) - torch.outer(pn, pn), torch.outer(xn, xn))
            for pn, xn in zip(p, x, strict=True)
        )
        / 16
    )
    assert float(torch.trace(h)) == pytest.approx(exact)
    probe = HessianProbe(nn.Sequential(layer), ["0"], [(x, y)])
    estimate = hutchinson_traces(probe, max_iter=400, tol=0.0)["0:weight"]
    assert abs(estimate.trace - exact) <= 4 * _hutchinson_sd(h, 400)


def test_twice_differentiable_keeps_values_and_gives_second_derivatives() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 9, 9, generator=g, dtype=torch.float64)
    with twice_differentiable():
        hs, hsig = F.hardswish(x), F.hardsigmoid(x)
        for stride, padding, groups in ((1, 1, 6), (2, 2, 3), (1, 0, 2)):
            w = torch.randn(6, 6 // groups, 3, 3, generator=g, dtype=torch.float64)
            out = F.conv2d(x, w, None, stride, padding, 1, groups)
            assert torch.allclose(out, torch.conv2d(x, w, None, stride, padding, 1, groups))
    assert torch.allclose(hs, torch.ops.aten.hardswish(x))
    assert torch.allclose(hsig, torch.ops.aten.hardsigmoid(x))
    direct = grouped_conv2d(x, w, torch.ones(6, dtype=torch.float64), 1, 0, 1, 2)
    assert torch.allclose(direct, F.conv2d(x, w, torch.ones(6, dtype=torch.float64), 1, 0, 1, 2))
    # a depthwise conv + h_swish: the probe's Hv equals central differences of the gradient
    model = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Hardswish(), nn.Flatten())
    model = nn.Sequential(*model, nn.Linear(6 * 81, 3)).double()
    labels = torch.tensor([0, 2])
    probe = HessianProbe(model, ["0"], [(x, labels)])
    weight = model[0].weight
    v = torch.randn(weight.shape, generator=g, dtype=torch.float64)
    (hv,) = probe.hvp(Target("0", "weight"), (v,))

    def grad_at(w: Tensor) -> Tensor:
        with torch.no_grad():
            weight.copy_(w)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels), weight)
        return grad

    w0, eps = weight.detach().clone(), 1e-5
    finite = (grad_at(w0 + eps * v) - grad_at(w0 - eps * v)) / (2 * eps)
    grad_at(w0)
    assert torch.allclose(hv, finite, rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------- Ω
def test_omega_decreases_with_bits(micro_fp, splits, tmp_path: Path) -> None:
    ctx = make_ctx("resnet20", micro_fp, splits, "bitops<=0.5", tmp_path)
    model = ctx.subnet()
    layers = ctx.space.searchable_layers()
    bits = (2, 3, 4, 8)
    quant = ctx.space.layer_quant()
    w_err = weight_errors(model, layers, bits)
    assert np.all(np.diff(w_err, axis=1) < 0) and np.all(w_err > 0)
    probe = ctx.hessian_probe(model, layers, inputs=True, batches=1, batch_size=8)
    a_err = input_errors(model, probe.layer_inputs, layers, bits, quant)
    assert np.all(np.diff(a_err, axis=1) < 0) and np.all(a_err > 0)
    traces = hutchinson_traces(probe, max_iter=3, tol=0.0)
    for i, name in enumerate(layers):
        tr = traces[f"{name}:weight"].normalised
        omega = tr * w_err[i]
        if tr > 0:
            assert np.all(np.diff(omega) < 0), name
    assert sum(traces[f"{n}:weight"].trace > 0 for n in layers) >= len(layers) - 2
    # a measurement, no state: the same numbers again
    assert np.array_equal(w_err, weight_errors(model, layers, bits))
    hand = _minmax_error(model.layer1[0].conv1.weight, 8)
    assert w_err[0, 3] == pytest.approx(hand, rel=1e-9)


def _minmax_error(weight: Tensor, bits: int) -> float:
    """``‖Q(W) − W‖²`` of HAWQ-V3's per-channel symmetric min/max quantizer, by hand."""
    w = weight.detach().double()
    n = 2 ** (bits - 1) - 1
    total = 0.0
    for channel in w:
        scale = max(float(channel.abs().max()), 1e-8) / n
        q = (channel / scale).round().clamp(-n - 1, n) * scale
        total += float(((q - channel) ** 2).sum())
    return total


def test_omega_uses_the_originals_quantizer_error_ratio() -> None:
    """A Gaussian weight's 4-bit / 8-bit error ratio is about 290 with per-channel min/max
    (LSQ's initial per-tensor step gave about 18)."""
    weight = torch.randn(64, 64, 3, 3, generator=torch.Generator().manual_seed(0)).double()
    err = {b: float(((symmetric_minmax(weight, b) - weight) ** 2).sum()) for b in (4, 8)}
    assert 250 <= err[4] / err[8] <= 330
    # per channel: a channel of larger weights gets its own, larger scale
    scaled = weight.clone()
    scaled[0] *= 100
    assert torch.equal(symmetric_minmax(scaled, 4)[1:], symmetric_minmax(weight, 4)[1:])
    assert (symmetric_minmax(weight, 4, channel_dim=None) - weight).abs().max() <= (
        weight.abs().max() / 7 / 2 + 1e-12
    )
    with pytest.raises(ValueError, match="at least 2 bits"):
        symmetric_minmax(weight, 1)


# --------------------------------------------------------------------------- the ILP
def _brute_force(problem: AllocationProblem) -> tuple[float, list[int]] | None:
    best = None
    for picks in itertools.product(range(problem.choices), repeat=problem.groups):
        if problem.fits(picks):
            value = problem.objective(picks)
            if best is None or value < best[0] - 1e-15:
                best = (value, list(picks))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_ilp_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups, choices = int(rng.integers(3, 7)), int(rng.integers(2, 5))
    cost = np.sort(rng.integers(1, 10**6, size=(groups, choices)), axis=1)
    omega = np.sort(rng.random((groups, choices)) * 10.0 ** rng.integers(-6, 2), axis=1)[:, ::-1]
    if seed % 4 == 3:
        omega[0] = -omega[0]  # a negative trace: that group prefers fewer bits
    low, high = cost.min(1).sum(), cost.max(1).sum()
    budget = float(low + rng.random() * (high - low))
    if seed == 0:  # a limit exactly at an achievable cost
        budget = float(cost[:, 0].sum() + cost[0, -1] - cost[0, 0])
    problem = AllocationProblem(omega, cost, budget)
    got = solve(problem)
    best = _brute_force(problem)
    assert best is not None and got.status == "Optimal"
    assert problem.fits(got.picks) and got.cost == problem.total_cost(got.picks) <= budget
    assert got.objective == pytest.approx(best[0], rel=1e-9, abs=1e-15)


def test_ilp_infeasible_and_bad_input() -> None:
    problem = AllocationProblem(np.ones((3, 2)), np.array([[5, 9]] * 3), 14.0)
    with pytest.raises(InfeasibleAllocation, match="costs 15, over the budget 14"):
        solve(problem)
    assert solve(AllocationProblem(np.ones((3, 2)), np.array([[5, 9]] * 3), 15.0)).picks == [0] * 3
    with pytest.raises(ValueError, match="equal non-empty"):
        AllocationProblem(np.ones((3, 2)), np.ones((3, 3), dtype=int), 1.0)
    with pytest.raises(ValueError, match="integers"):
        AllocationProblem(np.ones((1, 2)), np.ones((1, 2)), 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        AllocationProblem(np.array([[np.nan, 1.0]]), np.ones((1, 2), dtype=int), 1.0)


# --------------------------------------------------------------------------- tied layers
class _ShortcutBlock(nn.Module):
    def __init__(self, quant: QuantConfig) -> None:
        super().__init__()
        self.conv_a = QConv2d(4, 8, 3, stride=2, padding=1, bias=False, quant=quant)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = QConv2d(8, 8, 3, padding=1, bias=False, quant=quant)
        self.bn_b = nn.BatchNorm2d(8)
        self.shortcut = QConv2d(4, 8, 1, stride=2, bias=False, quant=quant)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn_b(self.conv_b(F.relu(self.bn_a(self.conv_a(x)))))
        return F.relu(out + self.shortcut(x))


class _ShortcutNet(nn.Module):
    def __init__(self, num_classes: int, quant: QuantConfig) -> None:
        super().__init__()
        self.stem = QConv2d(3, 4, 3, padding=1, bias=False, quant=quant, act_signed=True)
        self.bn = nn.BatchNorm2d(4)
        self.block = _ShortcutBlock(quant)
        self.head = QConv2d(8, 16, 1, bias=False, quant=quant)
        self.fc = QLinear(16, num_classes, quant=quant)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.head(self.block(F.relu(self.bn(self.stem(x))))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class ShortcutSpace(SearchSpace):
    """A toy space with a downsample shortcut conv tied to its block's first conv."""

    name = "toy-shortcut"
    bit_choices = (2, 4, 8)
    searches = "bits"
    default_fixed = {"stem": 8, "classifier": 8}

    def build(
        self, arch: Any = None, policy: Any = None, quant: QuantConfig | None = None
    ) -> nn.Module:
        model = _ShortcutNet(self.num_classes, self.layer_quant(quant))
        if policy is not None:
            apply_policy(model, self.full_policy(policy))
        return model

    def fixed_roles(self, arch: Any = None) -> dict[str, list[str]]:
        return {"stem": ["stem"], "classifier": ["fc"]}

    def tied_layers(self, arch: Any = None) -> list[tuple[str, ...]]:
        return [("block.shortcut", "block.conv_a")]


@pytest.mark.parametrize("activations", ["tied", "free"])
def test_tied_layers_get_one_variable(activations: str, splits, tmp_path: Path) -> None:
    space = ShortcutSpace(num_classes=splits.num_classes)
    groups = layer_groups(space, None, space.searchable_layers())
    assert groups == [("block.conv_a", "block.shortcut"), ("block.conv_b",), ("head",)]
    fp = space.build().state_dict()
    seen = set()
    for ratio in (0.4, 0.5, 0.65, 0.8):
        ctx = make_ctx(space, fp, splits, f"bitops<={ratio}", tmp_path)
        result = hawq(ctx, bits="space", activations=activations, **FAST).search(ctx)
        (cand,) = result.candidates
        assert cand.policy["block.conv_a"] == cand.policy["block.shortcut"]
        assert ctx.feasible(cand.policy)
        assert result.log["groups"] == [list(g) for g in groups]
        assert len(result.log["constraint"]["group_costs"]) == 3
        seen.add(cand.policy["block.conv_a"])
    assert len(seen) > 1  # the tied pair's bits move with the limit


def test_bad_ties_are_refused() -> None:
    class Twice(ShortcutSpace):
        def tied_layers(self, arch: Any = None) -> list[tuple[str, ...]]:
            return [("block.shortcut", "block.conv_a"), ("block.conv_a", "head")]

    class Fixed(ShortcutSpace):
        def tied_layers(self, arch: Any = None) -> list[tuple[str, ...]]:
            return [("stem", "block.conv_a")]

    for space, match in ((Twice(), "twice"), (Fixed(), "not a searched layer")):
        with pytest.raises(ValueError, match=match):
            layer_groups(space, None, space.searchable_layers())
    assert get_space("resnet20").tied_layers() == []


# --------------------------------------------------------------------------- the method
def test_registered_and_options_validated(splits, micro_fp, tmp_path: Path) -> None:
    assert get_method("hawq") is HAWQ and HAWQ.searches == "bits"
    for kwargs, match in (
        ({"bits": [4, 40]}, r"bits\[1\] = 40 is out of range"),
        ({"bits": []}, "bits must be"),
        ({"bits": "all"}, "'space'"),
        ({"bits": 4}, "bits = 4 is wrong"),
        ({"activations": "both"}, "activations = 'both' is wrong.*one of 'tied', 'free'"),
        ({"max_iter": 0}, "max_iter = 0 is out of range; accepted: a whole number ≥ 1"),
        ({"batches": 1.5}, "batches = 1.5 is wrong"),
        ({"batch_size": 0}, "batch_size = 0 is out of range"),
        ({"tol": -1}, "tol = -1 is out of range; accepted: a number ≥ 0"),
    ):
        with pytest.raises(ValueError, match=match):
            HAWQ(**kwargs)
    with pytest.raises(PresetError, match="unknown key beta"):
        HAWQ(beta=3)
    ctx = make_ctx("resnet20", micro_fp, splits, "bitops<=0.5", tmp_path)
    with pytest.raises(ValueError, match="5 bits is not allowed on resnet20"):
        hawq(ctx, bits=[4, 5]).search(ctx)
    bad = Preset.from_dict({**load_preset(str(TINY)).to_dict(), "methods": {"hawq": {"iters": 3}}})
    with pytest.raises(PresetError, match=r"unknown key \[methods.hawq\] iters"):
        check_preset_sections(bad)
    given = Preset.from_dict(
        {**load_preset(str(TINY)).to_dict(), "methods": {"hawq": {"max_iter": 10, "tol": 0.5}}}
    )
    settings = HAWQ.configure(given, {"tol": 0.1})  # defaults < the preset's section < options
    assert (settings.max_iter, settings.tol, settings.batches) == (10, 0.1, 2)


@pytest.mark.parametrize(
    ("constraint", "options"),
    [
        ("bitops<=0.5", {}),
        ("bitops<=0.3", {"bits": "space", "activations": "free"}),
        ("size<=0.6", {"bits": [2, 4, 8]}),
    ],
)
def test_search_meets_the_constraint(
    constraint: str, options: dict, micro_fp, splits, tmp_path: Path
) -> None:
    ctx = make_ctx("resnet20", micro_fp, splits, constraint, tmp_path)
    result = hawq(ctx, **options, **FAST).search(ctx)
    (cand,) = result.candidates
    space, layers = ctx.space, ctx.space.searchable_layers()
    assert ctx.feasible(cand.policy) and cand.label == "hawq"
    assert cand.policy["conv1"] == cand.policy["fc"] == LayerBits(8, 8)
    bits = set(options.get("bits", [4, 8]) if options.get("bits") != "space" else [2, 3, 4, 8])
    chosen = [cand.policy[n] for n in layers]
    assert {b.w_bits for b in chosen} <= bits and {b.a_bits for b in chosen} <= bits
    if options.get("activations") != "free":
        assert all(b.w_bits == b.a_bits for b in chosen)
    assert len({b.w_bits for b in chosen}) > 1  # a mixed allocation at these limits
    log = json.loads(json.dumps(result.log))  # JSON-serialisable
    assert log["ilp"]["status"] == "Optimal" == cand.meta["status"]
    assert log["bits"] == sorted(bits) and log["activations"] == options.get("activations", "tied")
    targets = len(layers) * (2 if options.get("activations") == "free" else 1)
    assert len(log["traces"]) == targets and log["rounds"] == 3 and log["offers"] == [1, 2]
    assert log["hessian"]["batches"] == 1  # tiny.toml's [methods.hawq] batches = 1
    hvps = sum(t["iterations"] for t in log["traces"].values())
    assert ctx.budget.samples == 8 * (1 + hvps)
    assert ctx.offered == [cand]
    value = space.cost(cand.policy)
    value = value.bitops if constraint.startswith("bitops") else value.size_bits
    assert cand.meta["cost"] == value


def test_budget_end_keeps_the_last_offer(micro_fp, splits, tmp_path: Path) -> None:
    # 8 images for the forward, 18 products of 8 per round: the budget ends round 3
    ctx = make_ctx(
        "resnet20", micro_fp, splits, "bitops<=0.5", tmp_path, samples=8 + 8 * 18 * 2 + 50
    )
    with pytest.raises(BudgetExceeded):
        hawq(ctx, batch_size=8, max_iter=50, tol=0.0).search(ctx)
    (offered,) = ctx.offered
    assert offered.meta["trace_rounds"] == 2 and ctx.feasible(offered.policy)


def test_deterministic_for_a_seed(micro_fp, splits, tmp_path: Path) -> None:
    runs = []
    for _ in range(2):
        ctx = make_ctx("resnet20", micro_fp, splits, "bitops<=0.4", tmp_path, seed=3)
        result = hawq(ctx, **FAST).search(ctx)
        runs.append((result.candidates[0].policy_json(), json.dumps(result.log["traces"])))
    assert runs[0] == runs[1]


def test_infeasible_limit_is_refused_before_any_image(micro_fp, splits, tmp_path: Path) -> None:
    space = get_space("resnet20")
    lowest = space.cost(space.uniform_policy(4, 4)).bitops / space.reference().bitops_w8a8
    ctx = make_ctx("resnet20", micro_fp, splits, f"bitops<={lowest * 1.000001}", tmp_path)
    (cand,) = hawq(ctx, **FAST).search(ctx).candidates
    assert all(cand.policy[n] == LayerBits(4, 4) for n in space.searchable_layers())
    ctx = make_ctx("resnet20", micro_fp, splits, f"bitops<={lowest * 0.99}", tmp_path)
    with pytest.raises(ValueError, match=f"infeasible on resnet20: .* costs {lowest:.4f}x W8A8"):
        hawq(ctx, **FAST).search(ctx)
    assert ctx.budget.samples == 0


def test_mbv3_reference_arch(splits, tmp_path: Path) -> None:
    """The mechanics on mbv3-cifar (untrained supernet): h_swish, SE and depthwise convs
    through the double backward."""
    space = get_space("mbv3-cifar", num_classes=splits.num_classes)
    fp_state = space.build_supernet().state_dict()
    ctx = make_ctx("mbv3-cifar", fp_state, splits, "bitops<=0.8", tmp_path)
    result = hawq(ctx, batch_size=4, max_iter=1).search(ctx)
    (cand,) = result.candidates
    assert cand.arch == space.reference_arch and ctx.feasible(cand.policy, cand.arch)
    assert {cand.policy[n].w_bits for n in space.searchable_layers(cand.arch)} <= {4, 8}
    traces = result.log["traces"]
    assert len(traces) == len(space.searchable_layers(cand.arch))
    assert all(math.isfinite(t["trace"]) for t in traces.values())


# --------------------------------------------------------------------------- end to end
def test_cli_run_end_to_end(tmp_path: Path, cache_dir: Path, micro: str, micro_fp) -> None:
    argv = ["run", "--methods", "hawq", "--space", "resnet20", "--preset", micro,
            "--executor", "serial", "--out", str(tmp_path), "--run-id", "hawq",
            "--cache-dir", str(cache_dir), "--constraint", "bitops<=0.4",
            "--method-options", '{"hawq": {"max_iter": 3}}']  # fmt: skip
    assert main(argv) == 0
    rows = pd.read_parquet(tmp_path / "runs" / "hawq" / "records.parquet")
    assert list(rows["candidate"]) == ["hawq"] and list(rows["method"]) == ["hawq[max_iter=3]"]
    assert (rows["status"] == "ok").all() and rows["feasible"].all()
    assert (rows["bitops_ratio_w8a8"] <= 0.4).all() and (rows["top1_test"] > 0).all()
    extra = json.loads(rows["extra"].iloc[0])
    assert extra["status"] == "Optimal" and extra["activations"] == "tied"
    # tiny.toml's [methods.hawq]: 1 batch of 16 images; 18 layers × 3 vectors
    assert rows["samples_processed"].iloc[0] == 16 * (1 + 18 * 3)


def test_budget_end_evaluates_the_offered_allocation(
    tmp_path: Path, cache_dir: Path, micro: str, micro_fp
) -> None:
    # tiny.toml's [methods.hawq]: 16 images, 18 products of 16 per round; the budget ends round 3
    argv = ["run", "--methods", "hawq", "--space", "resnet20", "--preset", micro,
            "--executor", "serial", "--out", str(tmp_path), "--run-id", "hawq-budget",
            "--cache-dir", str(cache_dir), "--constraint", "bitops<=0.4",
            "--max-search-samples", str(16 + 2 * 18 * 16 + 100)]  # fmt: skip
    assert main(argv) == 0
    rows = pd.read_parquet(tmp_path / "runs" / "hawq-budget" / "records.parquet")
    assert list(rows["status"]) == ["ok"] and rows["stopped_by_budget"].all()
    assert rows["feasible"].all() and json.loads(rows["extra"].iloc[0])["trace_rounds"] == 2


def test_infeasible_limit_is_a_failed_trial_not_a_crash(
    tmp_path: Path, cache_dir: Path, micro: str, micro_fp
) -> None:
    task = {"space": "resnet20", "dataset": "digits", "preset": micro,
            "constraint": "bitops<=0.2", "seed": 0}  # fmt: skip
    spec = TrialSpec("r", "hawq", task, str(tmp_path), cache_dir=str(cache_dir))
    (row,) = run_trial(spec)
    assert row["status"] == "failed" and row["samples_processed"] == 0
    assert "cheapest policy, every searched layer at W4A4" in row["error"]
    assert '"bits": "space"' in row["error"]  # what would make it reachable


def test_ratios_give_the_papers_family_of_budgets(micro_fp, splits, tmp_path: Path) -> None:
    """``ratios``: one more candidate per r under all-min + r·(all-max − all-min) of the
    searched layers (ILP.ipynb), cheaper for smaller r, skipped above the task's limit."""
    ctx = make_ctx("resnet20", micro_fp, splits, "bitops<=0.7", tmp_path)
    result = hawq(ctx, ratios=[0.25, 0.5, 0.75], **FAST).search(ctx)
    assert len(result.candidates) >= 3  # the optimum, r = 0.25 and r = 0.5 at least
    labels = [c.label for c in result.candidates]
    assert labels[0] == "hawq" and set(labels[1:]) <= {"hawq-r0.25", "hawq-r0.5", "hawq-r0.75"}
    table = ctx.space.cost_table()
    pairs = [(4, 4), (8, 8)]
    costs = table.pair_coefficients("bitops", pairs)
    low, high = int(costs.min(axis=1).sum()), int(costs.max(axis=1).sum())
    fixed = table.fixed_total("bitops")
    previous = -1.0
    for cand in result.candidates[1:]:
        r = cand.meta["ratio"]
        assert cand.meta["cost"] - fixed <= low + r * (high - low)  # within the paper's budget
        assert ctx.feasible(cand.policy) and cand.meta["cost"] >= previous
        previous = cand.meta["cost"]
    skipped = [k for k, v in result.log["ratios"].items() if isinstance(v, str)]
    for key in skipped:  # only budgets above the task's limit are left out
        assert fixed + low + float(key) * (high - low) > ctx.limit.absolute
    assert len(result.candidates) - 1 + len(skipped) == 3
    with pytest.raises(PresetError, match=r"ratios\[0\] = 1.5 is out of range"):
        HAWQ(ratios=[1.5])
