"""DNAS: Gumbel-softmax masks, the expected cost, the multiplicative loss and its
coefficients, the direction θ moves in, the alternating phases, the branch-sum identity of
the super-net layers (DoReFa / PACT), the search on both spaces, end to end on digits."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Subset, TensorDataset

from benchmark.arena import (
    Budget,
    Context,
    CostTable,
    DoReFaConfig,
    LayerBits,
    PACTConfig,
    Phase,
    QConv2d,
    QLinear,
    QuantConfig,
    Task,
    get_space,
    train,
)
from benchmark.arena.cost import LayerProfile
from benchmark.arena.data import load_splits
from benchmark.arena.presets import PresetError, load_preset
from benchmark.cli import main
from methods import get_method
from methods.dnas import DNAS
from methods.dnas.config import DNASConfig
from methods.dnas.loss import LossControl, cost_aware_loss
from methods.dnas.method import FEASIBLE_DRAWS, QUANT, draw_costs, feasible_share
from methods.dnas.selection import Sample, choose
from methods.dnas.steps import SearchState, theta_step, weight_step
from methods.dnas.supernet import BANK, SuperNet, gumbel_softmax

TINY = Path(__file__).parent / "tiny.toml"


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def one_thread():
    """Toy-sized tensors: one thread (two only add OpenMP overhead, much of it on a busy
    machine); the session's count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_model(bits: tuple[int, ...] = (2, 8)) -> nn.Module:
    """Two quantized linear layers (16 → 32 → 4), DoReFa weights and PACT activations."""
    quant = dataclasses.replace(QUANT, bit_choices=bits)
    return nn.Sequential(
        QLinear(16, 32, quant=quant, act_signed=True),
        nn.ReLU(),
        QLinear(32, 4, quant=quant, act_signed=False),
    )


def toy_table() -> CostTable:
    layers = (
        LayerProfile("0", "linear", 16 * 32, 16 * 32, 16, 32),
        LayerProfile("2", "linear", 32 * 4, 32 * 4, 32, 4),
    )
    return CostTable(layers, {}, (2, 8, 32))


def toy_data(n: int = 256, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = (x @ torch.randn(16, 4, generator=torch.Generator().manual_seed(99))).argmax(1)
    return TensorDataset(x, y)


def trained_toy() -> nn.Module:
    """The toy model trained in FP until it fits its data (a clear accuracy gap between
    2-bit and 8-bit quantization then)."""
    torch.manual_seed(0)
    model = toy_model()
    x, y = toy_data().tensors
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def toy_net(model: nn.Module, categorical: str, weights: str = "shared") -> SuperNet:
    return SuperNet(model, toy_table(), ("0", "2"), (2, 8), categorical, weights, "bitops")


def one_hot_masks(net: SuperNet, policy: dict[str, LayerBits]) -> dict[str, torch.Tensor]:
    n = len(net.bits)
    if net.categorical == "pairs":
        rows = [net.pairs.index((policy[k].w_bits, policy[k].a_bits)) for k in net.names]
        return {"pair": F.one_hot(torch.tensor(rows), n * n).float()}
    w = [net.bits.index(policy[k].w_bits) for k in net.names]
    a = [net.bits.index(policy[k].a_bits) for k in net.names]
    return {"w": F.one_hot(torch.tensor(w), n).float(), "a": F.one_hot(torch.tensor(a), n).float()}


def small_splits(n_train: int = 60, n_val: int = 16):
    """The first images of digits' train / val splits (search tests need no accuracy): with
    batches of 16, three weight steps (48 images) and one θ step (12) per epoch."""
    full = load_splits("digits", val_fraction=0.1, seed=0)
    return SimpleNamespace(
        train=Subset(full.train, range(n_train)),
        val=Subset(full.val, range(n_val)),
        num_classes=full.num_classes,
    )


RECIPE = DNASConfig(epochs=2, batch_size=16, theta_lr=0.1, tau_decay=0.5)  # the tests' search
SHORT = DNASConfig(epochs=1, batch_size=16)


def make_ctx(
    space_name: str,
    tmp_path: Path,
    *,
    constraint: str = "bitops<=0.3",
    reports: list | None = None,
) -> Context:
    """A context on random FP weights (quantizer entries dropped, as in a checkpoint)."""
    space = get_space(space_name)
    torch.manual_seed(0)
    model = space.build_supernet() if space_name == "mbv3-cifar" else space.build()
    fp = {k: v for k, v in model.state_dict().items() if "_quantizer." not in k}
    preset = load_preset(str(TINY))
    preset = dataclasses.replace(  # recalibrate BN on 16 images when scoring a sample
        preset, recalibration=dataclasses.replace(preset.recalibration, batch_size=16)
    )
    return Context.create(
        Task(space_name, "digits", preset.name, constraint, 0),
        space,
        preset,
        small_splits(),
        fp,
        budget=Budget(600.0, 10**7),
        workdir=tmp_path,
        log=logging.getLogger("test_dnas"),
        reporter=None if reports is None else reports.append,
    )


# --------------------------------------------------------------------------- masks
def test_gumbel_softmax_masks_sum_to_one_and_harden_as_tau_falls() -> None:
    logits = torch.randn(2000, 6, generator=torch.Generator().manual_seed(1))
    peaks = []
    for tau in (10.0, 5.0, 1.0, 0.3, 0.01):
        masks = gumbel_softmax(logits, tau, torch.Generator().manual_seed(2))
        assert masks.shape == logits.shape and bool((masks >= 0).all())
        torch.testing.assert_close(masks.sum(dim=1), torch.ones(2000))
        peaks.append(float(masks.max(dim=1).values.mean()))
    assert peaks == sorted(peaks) and peaks[0] < 0.3 and peaks[-1] > 0.98
    # the argmax of a hard draw is distributed like softmax(θ): here θ favours column 0
    biased = torch.zeros(4000, 3)
    biased[:, 0] = math.log(4.0)  # P = (4, 1, 1) / 6
    hard = gumbel_softmax(biased, 0.01, torch.Generator().manual_seed(3)).argmax(1)
    assert abs(float((hard == 0).float().mean()) - 4 / 6) < 0.03
    # differentiable in the logits
    theta = torch.zeros(3, requires_grad=True)
    (gumbel_softmax(theta, 1.0, torch.Generator().manual_seed(0))[0]).backward()
    assert theta.grad is not None and float(theta.grad.abs().sum()) > 0


@pytest.mark.parametrize("metric", ["bitops", "size"])
@pytest.mark.parametrize("categorical", ["pairs", "factorised"])
def test_expected_cost_equals_the_cost_model_at_one_hot_theta(categorical, metric) -> None:
    space = get_space("resnet20")
    table = space.cost_table()
    model = space.build(quant=QUANT)
    net = SuperNet(model, table, table.searchable, (2, 3, 4, 8), categorical, "shared", metric)
    rng = torch.Generator().manual_seed(0)
    for _ in range(3):
        policy = net.sample_policy(rng)
        report = space.cost(space.full_policy(policy))
        expected = float(net.expected_cost(one_hot_masks(net, policy)))
        assert expected == pytest.approx(report.bitops if metric == "bitops" else report.size_bits)
    # at uniform θ, the mean of uniform choices: Σ MACs·E[b]² + the fixed layers
    mean_bits = sum((2, 3, 4, 8)) / 4
    macs = sum(table.profile(n).macs for n in table.searchable)
    if metric == "bitops":
        uniform = macs * mean_bits**2 + table.fixed_total("bitops")
        assert float(net.expected_cost(net.probs())) == pytest.approx(uniform)


@pytest.mark.parametrize("metric", ["bitops", "size"])
@pytest.mark.parametrize("categorical", ["pairs", "factorised"])
def test_sampled_costs_are_the_cost_table_of_draws_from_p_theta(categorical, metric) -> None:
    space = get_space("resnet20")
    table = space.cost_table()
    net = SuperNet(
        space.build(quant=QUANT), table, table.searchable, (2, 3, 4, 8), categorical, "shared",
        metric,
    )  # fmt: skip
    rng = torch.Generator().manual_seed(0)
    # at uniform θ their mean is the expected cost (4000 draws: within 2%)
    costs = net.sampled_costs(4000, rng)
    assert costs.shape == (4000,) and costs.dtype == torch.float64
    assert float(costs.mean()) == pytest.approx(float(net.expected_cost(net.probs())), rel=0.02)
    assert float(costs.std()) > 0
    # at a near one-hot θ every draw is that policy, costed as the cost table costs it
    policy = net.sample_policy(rng)
    with torch.no_grad():
        for name, logits in net.theta.logits().items():
            masks = one_hot_masks(net, policy)[name]
            logits.copy_(masks * 50.0)
    want = table.total(policy, metric)
    assert net.sampled_costs(50, rng).tolist() == [float(want)] * 50
    # the share under a limit between the cheapest and the dearest draw is strictly inside
    with torch.no_grad():
        for logits in net.theta.logits().values():
            logits.zero_()
    median = float(net.sampled_costs(1000, rng).median())
    draws = draw_costs(net, 1)
    assert draws.shape == (FEASIBLE_DRAWS,)
    assert 0.3 < feasible_share(draws, median) < 0.7
    assert feasible_share(draws, float(draws.max())) == 1.0


# --------------------------------------------------------------------------- the loss
def test_loss_rises_with_cost_as_the_formula_says() -> None:
    ce = torch.tensor(0.7)
    costs = torch.tensor([1e3, 1e6, 1e9, 1e12])
    for beta, gamma in ((0.2, 0.6), (1.0, 2.0), (3.0, 0.0)):
        values = cost_aware_loss(ce, costs, beta, gamma)
        torch.testing.assert_close(values, 0.7 * beta * costs.log() ** gamma)
        if gamma > 0:
            assert bool((values[1:] > values[:-1]).all())
        else:  # γ = 0: the cost has no say
            torch.testing.assert_close(values, torch.full((4,), 0.7 * beta))
    # ∂ log L / ∂ log Cost = γ / log Cost
    cost = torch.tensor(5e8, dtype=torch.float64, requires_grad=True)
    loss = cost_aware_loss(torch.tensor(0.5, dtype=torch.float64), cost, 0.2, 0.6)
    (grad,) = torch.autograd.grad(loss.log(), cost)
    assert float(grad * cost) == pytest.approx(0.6 / math.log(5e8))


def test_auto_gamma_steers_a_quantile_to_the_limit_and_moves_at_most_threefold() -> None:
    control = LossControl.create("auto", "auto", start_cost=2e9, gamma_start=0.6, rate=1.0)
    control.update(cost=1.8e9, limit=2e9, steer=2e9)  # the quantile at the limit: on target
    assert control.gamma == pytest.approx(0.6)
    control.update(cost=1.8e9, limit=2e9, steer=2.2e9)  # mean under, quantile over: more
    assert control.gamma == pytest.approx(0.6 * 1.1)
    control.update(cost=1.8e9, limit=2e9, steer=20e9)  # far over: x3 at most
    assert control.gamma == pytest.approx(0.6 * 1.1 * 3)
    control.update(cost=0.01e9, limit=2e9)  # far under (no steer: the cost): /3 at most
    assert control.gamma == pytest.approx(0.6 * 1.1)
    assert DNASConfig().feasible_target == 0.9
    for bad in (1.0, 0.0):
        with pytest.raises(Exception, match="feasible_target"):
            DNASConfig(feasible_target=bad)


def test_auto_beta_starts_the_factor_at_one_and_auto_gamma_tracks_the_limit() -> None:
    control = LossControl.create("auto", "auto", start_cost=2e9, gamma_start=0.6, rate=1.0)
    assert control.gamma == 0.6
    assert float(control(torch.tensor(1.0), torch.tensor(2e9))) == pytest.approx(1.0)
    control.update(cost=4e9, limit=2e9)  # twice over the limit: more pressure
    assert control.gamma == pytest.approx(1.2)
    # β follows: the factor is 1 at the epoch's expected cost, whatever γ became
    assert float(control(torch.tensor(1.0), torch.tensor(4e9))) == pytest.approx(1.0)
    control.update(cost=1e9, limit=2e9)  # under it: less
    assert control.gamma == pytest.approx(0.6)
    assert control.beta == pytest.approx(1 / math.log(1e9) ** 0.6)
    fixed = LossControl.create(0.2, 0.6, start_cost=2e9, gamma_start=9.0, rate=1.0)
    fixed.update(cost=4e9, limit=2e9)
    assert (fixed.beta, fixed.gamma) == (0.2, 0.6)
    with pytest.raises(ValueError, match="exceed e"):
        LossControl.create("auto", 1.0, start_cost=2.0, gamma_start=1.0, rate=1.0)


def theta_after(model: nn.Module, categorical: str, beta: float, gamma: float, steps: int = 40):
    """θ of the toy super-net after ``steps`` of θ's phase (Adam, weights fixed)."""
    net = toy_net(model, categorical)
    state = SearchState(tau=1.0, generator=torch.Generator().manual_seed(0))
    control = LossControl.create(beta, gamma, start_cost=1e4, gamma_start=1.0, rate=1.0)
    step = theta_step(net, state, control)
    opt = torch.optim.Adam(net.theta.parameters(), lr=0.05)
    x, y = toy_data().tensors
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = step(model, x, y)
        loss.backward()
        opt.step()
    net.set_weights_trainable(True)
    return net


@pytest.mark.parametrize("categorical", ["pairs", "factorised"])
def test_theta_moves_to_cheap_choices_under_a_large_gamma_and_accurate_ones_under_none(
    categorical: str, one_thread
) -> None:
    model = trained_toy()
    start = float(toy_net(model, categorical).expected_cost(toy_net(model, categorical).probs()))
    accurate = theta_after(model, categorical, beta=1.0, gamma=0.0)  # cross-entropy only
    cheap = theta_after(model, categorical, beta="auto", gamma=200.0)
    cost_accurate = float(accurate.expected_cost(accurate.probs()))
    cost_cheap = float(cheap.expected_cost(cheap.probs()))
    assert cost_cheap < 0.8 * start < start < 0.9 * cost_accurate
    assert all(b.w_bits == 8 for b in accurate.argmax_policy().values())
    table = toy_table()
    assert table.total(cheap.argmax_policy(), "bitops") < start  # the mode moved too
    assert table.total(accurate.argmax_policy(), "bitops") > start


def test_beta_only_scales_thetas_gradient(one_thread) -> None:
    """In the multiplicative loss β multiplies θ's gradient; its direction is γ's business."""
    model = trained_toy()
    x, y = toy_data().tensors
    grads = []
    for beta in (0.1, 10.0):
        net = toy_net(model, "pairs")
        state = SearchState(tau=1.0, generator=torch.Generator().manual_seed(5))
        control = LossControl.create(beta, 3.0, start_cost=1e4, gamma_start=1.0, rate=1.0)
        loss, _ = theta_step(net, state, control)(model, x, y)
        loss.backward()
        grads.append(net.theta.pair.grad.clone())
    torch.testing.assert_close(grads[1], 100.0 * grads[0])


# --------------------------------------------------------------------------- phases
@pytest.mark.parametrize("weights", ["shared", "separate"])
def test_each_alternating_phase_updates_only_its_own_parameters(weights: str, one_thread) -> None:
    model = trained_toy()
    net = toy_net(model, "pairs" if weights == "separate" else "factorised", weights)
    state = SearchState(tau=2.0, generator=torch.Generator().manual_seed(0))
    control = LossControl.create("auto", 2.0, start_cost=1e4, gamma_start=1.0, rate=1.0)
    events = []

    def snap() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        weights_now = [p.detach().clone() for p in net.module.parameters()]
        theta_now = [p.detach().clone() for p in net.theta.parameters()]
        return weights_now, theta_now

    def recorded(name: str, step):
        def wrapped(m, x, y):
            events.append((name, *snap()))
            loss, n = step(m, x, y)
            if name == "theta":  # no weight gradient is even computed in θ's phase
                loss.backward(retain_graph=True)
                assert all(p.grad is None for p in net.module.parameters())
                net.theta.zero_grad()
            return loss, n

        return wrapped

    theta_opt = torch.optim.Adam(net.theta.parameters(), lr=0.1)
    phase = Phase(toy_data(64, 1), theta_opt, recorded("theta", theta_step(net, state, control)),
                  every="epoch", batch_size=32)  # fmt: skip
    recipe = dataclasses.replace(load_preset("smoke").finetune, epochs=2, batch_size=32, lr=0.05)
    train(net.module, toy_data(128, 2), recipe,
          step_loss=recorded("weights", weight_step(net, state)), phases=[phase])  # fmt: skip
    events.append(("end", *snap()))
    names = [e[0] for e in events[:-1]]
    assert names == (["weights"] * 4 + ["theta"] * 2) * 2
    for (name, w0, t0), (_, w1, t1) in itertools.pairwise(events):
        moved_w = any(not torch.equal(a, b) for a, b in zip(w0, w1, strict=True))
        moved_t = any(not torch.equal(a, b) for a, b in zip(t0, t1, strict=True))
        assert (moved_w, moved_t) == ((True, False) if name == "weights" else (False, True))
    if weights == "separate":  # the branch weights are the weights' phase's too
        bank = [n for n, _ in net.module.named_parameters() if n.startswith(BANK)]
        assert len(bank) == 2 * 4


# --------------------------------------------------------------------------- identity
def conv_layer(quant: QuantConfig) -> QConv2d:
    torch.manual_seed(0)
    return QConv2d(4, 6, 3, padding=1, bias=True, quant=quant, act_signed=False)


BITS = (2, 4, 8)
DNAS_QUANT = dataclasses.replace(QUANT, bit_choices=BITS)


def explicit_branches(layer, x, pairs, probs, weights):
    """``Σ_k m_k·conv(Q_ak(x), Q_wk(W_k))`` with one convolution per branch, plus bias."""
    total = 0
    for (w, a), p, weight in zip(pairs, probs, weights, strict=True):
        xq, wq = layer.act_quantizer(x, a), layer.weight_quantizer(weight, w)
        total = total + p * layer._conv_forward(xq, wq, None)
    return total + layer.bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("variant", ["shared-factorised", "shared-pairs", "separate-pairs"])
def test_the_super_net_layer_equals_the_explicit_branch_sum(variant: str) -> None:
    layer = conv_layer(DNAS_QUANT)
    x = torch.rand(2, 4, 9, 9) * 3
    pairs = list(itertools.product(BITS, BITS))
    for _, a in pairs:  # initialise every PACT clip first
        layer.act_quantizer(x, a)
    torch.manual_seed(1)
    theta = torch.randn(len(pairs), requires_grad=True)
    theta_w = torch.randn(len(BITS), requires_grad=True)
    theta_a = torch.randn(len(BITS), requires_grad=True)
    separate = [
        (layer.weight.detach() + 0.1 * torch.randn_like(layer.weight)).requires_grad_()
        for _ in pairs
    ]
    upstream = torch.randn(2, 6, 9, 9)
    results = []
    for hook in (True, False):
        for t in (theta, theta_w, theta_a, layer.weight, *separate):
            t.grad = None
        if variant == "shared-factorised":
            pw, pa = theta_w.softmax(0), theta_a.softmax(0)
            probs, weights = torch.outer(pw, pa).reshape(-1), [layer.weight] * len(pairs)
            if hook:
                layer.set_bit_mixture(BITS, pw, BITS, pa)
        else:
            probs = theta.softmax(0)
            weights = separate if variant == "separate-pairs" else [layer.weight] * len(pairs)
            if hook:
                layer.set_branch_mixture(pairs, probs, separate if "separate" in variant else None)
        out = layer(x) if hook else explicit_branches(layer, x, pairs, probs, weights)
        layer.clear_bit_mixture()
        (out * upstream).sum().backward()
        leaves = (theta, theta_w, theta_a, layer.weight, *separate)
        results.append((out.detach(), [None if t.grad is None else t.grad.clone() for t in leaves]))
    (out_h, grads_h), (out_e, grads_e) = results
    torch.testing.assert_close(out_h, out_e, rtol=1e-5, atol=1e-5)
    for gh, ge in zip(grads_h, grads_e, strict=True):
        assert (gh is None) == (ge is None)
        if gh is not None:
            torch.testing.assert_close(gh, ge, rtol=1e-4, atol=1e-5)
    assert layer.act_quantizer.alpha.grad is not None  # the PACT clips learn through it too


def test_dorefa_and_pact_quantizers() -> None:
    w = torch.randn(64, 8) * 0.2
    dorefa = QuantConfig(weight=DoReFaConfig(keep_scale=False)).make_weight_quantizer()
    for bits in (2, 3, 4, 8):
        q = dorefa(w, bits)
        levels = torch.unique(q)
        assert len(levels) <= 2**bits and float(q.abs().max()) == pytest.approx(1.0)
        grid = (q + 1) / 2 * (2**bits - 1)  # on DoReFa's [−1, 1] grid
        torch.testing.assert_close(grid, grid.round())
    scaled = QuantConfig(weight=DoReFaConfig()).make_weight_quantizer()(w, 8)
    assert float((scaled - w).norm() / w.norm()) < 0.05  # keep_scale: the FP weights' scale
    pact = QuantConfig(act=PACTConfig(init_quantile=1.0)).make_act_quantizer(signed=False)
    x = torch.rand(1000) * 4
    q = pact(x, 2)  # α initialised to max(x): grid {0, α/3, 2α/3, α}
    alpha = pact.clip(2)
    assert alpha == pytest.approx(float(x.max()))
    torch.testing.assert_close(q / alpha * 3, (q / alpha * 3).round())
    # PACT's gradients: 1 inside [0, α] to x, 1 above α to α
    with torch.no_grad():
        pact.alpha.fill_(2.0)
    xs = torch.tensor([-1.0, 0.5, 1.5, 3.0], requires_grad=True)
    pact(xs, 2).sum().backward()
    assert xs.grad.tolist() == [0.0, 1.0, 1.0, 0.0] and float(pact.alpha.grad[0]) == 1.0
    signed = QuantConfig(act=PACTConfig()).make_act_quantizer(signed=True)
    y = signed(torch.randn(1000), 3)
    assert float(y.min()) < 0 < float(y.max()) and len(torch.unique(y)) <= 8
    with pytest.raises(ValueError, match="init_quantile"):
        PACTConfig(init_quantile=0.0)
    assert PACTConfig.from_dict(PACTConfig().to_dict()) == PACTConfig()
    assert DoReFaConfig.from_dict({"kind": "dorefa", "keep_scale": False}) == DoReFaConfig(False)


def test_an_fp_checkpoint_with_quantizer_entries_builds_other_quantizers() -> None:
    """The FP checkpoint (written with LSQ layers) warm-starts DoReFa / PACT per-bit layers:
    its quantizer entries are ignored, whatever their shapes."""
    space = get_space("resnet20")
    state = space.build().state_dict()
    assert state["conv1.act_quantizer.step"].shape == (1,)
    model = space.build_from_fp(state, quant=QUANT)
    assert model.state_dict()["conv1.act_quantizer.alpha"].shape == (4,)  # one per 2, 3, 4, 8
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])


# --------------------------------------------------------------------------- selection
def test_candidates_are_the_most_accurate_and_the_most_efficient_feasible_ones() -> None:
    def sample(name, cost, acc, feasible=True):
        return Sample(name, {}, cost, cost / 100, feasible, 0.0, acc)

    pool = [sample("a", 50, 90.0), sample("b", 20, 80.0), sample("c", 40, 95.0),
            sample("d", 10, 99.0, feasible=False), sample("e", 20, 85.0)]  # fmt: skip
    assert [(r, s.name) for r, s in choose(pool, 2)] == [
        ("most-accurate", "c"),
        ("most-efficient", "e"),
    ]
    assert [s.name for _, s in choose(pool, 3)] == ["c", "e", "a"]
    assert choose([sample("x", 1, 1.0, feasible=False)], 2) == []


# --------------------------------------------------------------------------- options
def test_registered_with_validated_options_and_preset_section() -> None:
    assert get_method("dnas") is DNAS and DNAS.config_class is DNASConfig
    bad = [
        ({"weights": "both"}, ValueError, "weights = 'both' is wrong.*'shared', 'separate'"),
        ({"categorical": "joint"}, ValueError, "categorical = 'joint' is wrong.*'pairs'"),
        ({"beta": 0}, ValueError, "beta = 0 is out of range; accepted: a number > 0 or"),
        ({"beta": "big"}, ValueError, "beta = 'big' is wrong.*a number > 0 or one of 'auto'"),
        ({"gamma": -1}, ValueError, "gamma = -1 is out of range; accepted: a number ≥ 0"),
        ({"samples": 1}, ValueError, "samples = 1 is out of range; accepted: a whole number ≥ 2"),
        ({"candidates": 2.5}, ValueError, "candidates = 2.5 is wrong"),
        ({"bits": [4]}, ValueError, "at least two distinct"),
        ({"weight_fraction": 0.0}, ValueError, "weight_fraction = 0.0 is out of range"),
        ({"select": "best"}, ValueError, "select = 'best' is wrong.*'sampled', 'proxy'"),
        ({"bits": "248"}, ValueError, "bits = '248' is wrong"),
    ]
    for options, error, text in bad:
        with pytest.raises(error, match=text) as info:
            DNAS(**options)
        assert "\n" not in str(info.value)
    preset = load_preset("smoke")
    assert DNAS.configure(preset).weights == "shared"
    assert DNAS.configure(load_preset("paper")).weights == "separate"
    assert DNAS.configure(load_preset("paper"), {"weights": "shared"}).weights == "shared"
    broken = dataclasses.replace(preset, methods={"dnas": {"tau0": -1.0}})
    with pytest.raises(PresetError, match=r"\[methods.dnas\] tau0"):
        DNAS.configure(broken)


# --------------------------------------------------------------------------- search
@pytest.mark.parametrize("weights", ["shared", "separate"])
def test_search_on_resnet20_meets_the_constraint_and_logs_each_epoch(weights, tmp_path) -> None:
    reports: list[dict] = []
    ctx = make_ctx("resnet20", tmp_path, constraint="bitops<=0.5", reports=reports)
    offers: list[list[str]] = []
    offer = ctx.offer
    ctx.offer = lambda *cands, **kw: (offers.append([c.label for c in cands]), offer(*cands, **kw))[
        -1
    ]
    bits = None if weights == "shared" else [2, 4]  # the space's {2, 3, 4, 8}, or fewer convs
    result = DNAS(RECIPE, weights=weights, bits=bits, samples=2, select="proxy").search(ctx)
    space, log = ctx.space, result.log
    assert log["variant"]["weights"] == weights
    assert log["variant"]["categorical"] == ("factorised" if weights == "shared" else "pairs")
    assert 1 <= len(result.candidates) <= 2
    assert result.candidates[0].label == "dnas-accurate"
    for cand in result.candidates:
        assert ctx.feasible(cand.policy, cand.arch) and cand.quant == QUANT
        model = space.build(cand.arch, cand.policy, cand.quant)
        model.load_state_dict(cand.weights)  # the inherit track's weights fit the plain model
    # θ, τ and the expected cost per epoch, in the log and in the reports
    epochs = log["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert [e["tau"] for e in epochs] == pytest.approx([5.0, 5.0 * math.exp(-0.5)])
    assert set(epochs[0]["theta"]) == set(space.searchable_layers())
    assert all(abs(sum(p.values()) - (1 if weights == "separate" else 2)) < 0.01
               for p in epochs[0]["theta"].values())  # fmt: skip
    per_epoch = [r for r in reports if "tau" in r]
    assert [r["expected_cost"] for r in per_epoch] == [e["expected_cost"] for e in epochs]
    assert all("theta" in r for r in per_epoch)
    assert epochs[0]["gamma"] == 0.6 and epochs[1]["gamma"] != 0.6  # gamma="auto" moved it
    # every sample is costed; the scored ones are feasible
    assert all(s["val_top1"] is None or s["feasible"] for s in log["samples"])
    # the argmax offered after each epoch where it met the constraint, then the answer so
    # far after each scored sample, the last offer being the result
    feasible_epochs = sum(e["argmax_feasible"] for e in epochs)
    assert offers[:feasible_epochs] == [["dnas-argmax"]] * feasible_epochs
    assert offers[-1] == [c.label for c in result.candidates]
    kept = ctx.offered_log  # what a budget stop would keep: every epoch, the scored samples
    assert kept["epochs"] == epochs and kept["variant"] == log["variant"]
    assert kept["samples"] == [s for s in log["samples"] if s["val_top1"] is not None]


def test_sampled_selection_offers_the_first_feasible_draws_unscored(tmp_path) -> None:
    reports: list[dict] = []
    ctx = make_ctx("resnet20", tmp_path, constraint="bitops<=0.5", reports=reports)
    seen: list[int] = []
    train = ctx.train
    ctx.train = lambda *a, **k: (seen.append(len(k["data"])), train(*a, **k))[-1]
    result = DNAS(RECIPE, samples=6, candidates=3, weight_fraction=0.5).search(ctx)
    assert seen == [round(0.5 * round(0.8 * len(ctx.train_set)))]  # half the weights' part
    log = result.log
    assert log["select"] == "sampled" and log["feasible_draws"] == FEASIBLE_DRAWS
    assert 0.0 <= log["feasible_share"] <= 1.0
    assert all(0.0 <= e["feasible_share"] <= 1.0 for e in log["epochs"])
    assert all(e["quantile_cost"] > 0 for e in log["epochs"])
    assert not any(s["name"] == "argmax" for s in log["samples"])
    assert all(s["val_top1"] is None for s in log["samples"])  # no proxy score
    assert not any("sample" in r and "val_top1" in r for r in reports)
    drawn = [s["name"] for s in log["samples"] if s["feasible"]][:3]
    assert [c.label for c in result.candidates] == [f"dnas-{name}" for name in drawn]
    assert [role["role"] for role in log["chosen"]] == ["sampled"] * len(drawn)
    for cand in result.candidates:
        assert ctx.feasible(cand.policy, cand.arch) and cand.meta["proxy_val_top1"] is None
        ctx.space.build(cand.arch, cand.policy, QUANT).load_state_dict(cand.weights)


def test_search_on_the_mbv3_reference_architecture(tmp_path) -> None:
    ctx = make_ctx("mbv3-cifar", tmp_path)
    result = DNAS(SHORT, samples=2).search(ctx)
    cand = result.candidates[0]
    assert cand.arch == ctx.space.reference_arch and ctx.feasible(cand.policy, cand.arch)
    searched = ctx.space.searchable_layers(cand.arch)
    assert {cand.policy[n].w_bits for n in searched} <= {2, 3, 4}
    ctx.space.build(cand.arch, cand.policy, QUANT).load_state_dict(cand.weights)


def test_unreachable_and_missed_constraints_are_clear_errors(tmp_path) -> None:
    ctx = make_ctx("resnet20", tmp_path, constraint="bitops<=0.05")
    with pytest.raises(ValueError, match="infeasible on resnet20.*at least 0.0727"):
        DNAS(RECIPE).search(ctx)
    assert ctx.budget.samples == 0  # refused before any training
    # reachable only with every layer near W2A2: with no cost pressure, no sample gets there
    ctx = make_ctx("resnet20", tmp_path, constraint="bitops<=0.075")
    with pytest.raises(ValueError, match=r"none of the \d architectures .* cheapest reached"):
        DNAS(SHORT, gamma=0.0, bits=[2, 8], samples=2).search(ctx)


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tiny.toml with 320 training images and 1 pretrain epoch."""
    text = TINY.read_text().replace('name = "tiny"', 'name = "dnas-micro"')
    text = text.replace("[data]\n", "[data]\ntrain_subset = 320\n")
    text = text.replace("[pretrain]\nepochs = 2", "[pretrain]\nepochs = 1")
    path = tmp_path_factory.mktemp("dnas-preset") / "micro.toml"
    path.write_text(text)
    return str(path)


def test_cli_run_end_to_end_on_digits(tmp_path: Path, cache_dir: Path, micro: str) -> None:
    argv = ["run", "--methods", "dnas", "--space", "resnet20", "--preset", micro,
            "--executor", "serial", "--out", str(tmp_path), "--run-id", "dnas",
            "--cache-dir", str(cache_dir), "--constraint", "bitops<=0.3"]  # fmt: skip
    assert main(argv) == 0
    rows = pd.read_parquet(tmp_path / "runs" / "dnas" / "records.parquet")
    assert (rows["status"] == "ok").all() and rows["feasible"].all()
    assert set(rows["track"]) == {"retrain", "inherit"}
    assert rows["candidate"].iloc[0].startswith("dnas-sample")  # select="sampled"
    assert (rows["bitops_ratio_w8a8"] <= 0.3).all() and (rows["samples_processed"] > 0).all()
    extra = json.loads(rows["extra"].iloc[0])
    assert extra["role"] == "sampled" and extra["weights"] == "shared"
    inherit = rows[rows["track"] == "inherit"]
    assert json.loads(inherit["quant"].iloc[0])["weight"]["kind"] == "dorefa"


def test_auto_beta_stays_finite_for_a_large_gamma() -> None:
    """``(log C₀)^γ`` overflows float64 past γ ≈ 236 for BitOPs-sized costs; β is kept in
    logs, so the loss stays finite (a fast ``gamma="auto"`` reached γ ≈ 200 in 3 epochs)."""
    control = LossControl.create("auto", "auto", start_cost=5e8, gamma_start=0.6, rate=8.0)
    for _ in range(7):  # x3 an epoch at most: 0.6 · 3^7 > 1e3
        control.update(cost=1.5 * 5e8, limit=5e8)  # 1.5x over the limit every epoch
    assert control.gamma == 1e3  # at its bound
    assert math.isfinite(control.log_beta) and control.beta == 0.0  # 0 only for the log
    assert control.start_cost == 7.5e8  # C₀ follows the last epoch's expected cost
    cost = torch.tensor(7.5e8, dtype=torch.float64)
    loss = control(torch.tensor(0.5, dtype=torch.float64), cost)
    assert float(loss) == pytest.approx(0.5, rel=1e-9)  # the factor is 1 at C₀


def test_gamma_is_steered_within_the_epoch_and_at_most_3x_an_epoch() -> None:
    from methods.dnas.loss import LossControl
    from methods.dnas.steps import Steering

    shares: list[float] = []
    steering = Steering(75, shares.append)
    for _ in range(2):  # two epochs of 75 θ steps
        for _ in range(75):
            steering.before_step()
        steering.end_epoch()
    every = 75 // 8  # 9 steps
    one_epoch = [every / 75] * 8 + [3 / 75]  # after steps 9, 18, ..., 72; the last 3 at the end
    assert shares == pytest.approx(one_epoch * 2)
    assert sum(shares[:9]) == pytest.approx(1.0)
    single: list[float] = []
    one_step = Steering(1, single.append)  # an epoch of one θ step: steered once, at its end
    one_step.before_step()
    one_step.end_epoch()
    assert single == [1.0]
    control = LossControl.create("auto", "auto", start_cost=1e9, gamma_start=0.6, rate=8.0)
    for share in one_epoch:  # the draws far over the limit all epoch: 3x in all, not more
        control.update(5e8, 2e8, steer=1e9, share=share)
    assert control.gamma == pytest.approx(1.8)
    with pytest.raises(ValueError, match="share"):
        control.update(5e8, 2e8, share=0.0)
