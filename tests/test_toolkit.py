"""The method toolkit: every helper charges the budget exactly the images it forwards, the
alternating loop touches only each phase's own parameters and data, the sampler-driven
sandwich step equals the hard-wired one it replaced, subnets come from one FP supernet,
and ``ctx.split`` is disjoint and seeded."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmark.arena import (
    Budget,
    Context,
    Phase,
    SandwichSampler,
    Task,
    get_space,
    sandwich_step,
    soft_cross_entropy,
    train,
)
from benchmark.arena.presets import load_preset
from benchmark.arena.recipes.loop import lr_at, make_optimizer, total_steps
from benchmark.arena.spaces.mbv3.arch import max_arch, min_arch, sample_arch

TINY = Path(__file__).parent / "tiny.toml"


def make_ctx(space_name: str, fp_state, splits, tmp_path: Path, seed: int = 0) -> Context:
    space = get_space(space_name, num_classes=splits.num_classes)
    preset = load_preset(str(TINY))
    return Context.create(
        Task(space_name, "digits", preset.name, "bitops<=0.5", seed),
        space,
        preset,
        splits,
        fp_state,
        budget=Budget(600.0, 10**7),
        workdir=tmp_path,
        log=logging.getLogger("test_toolkit"),
    )


def count_images(model: nn.Module) -> list[int]:
    """Images through ``model``'s top-level forward, appended per call."""
    seen: list[int] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    return seen


def random_fp_supernet_state() -> dict:
    space = get_space("mbv3-cifar")
    state = space.build_supernet().state_dict()
    return {k: v for k, v in state.items() if "_quantizer." not in k}


# --- budget charging -------------------------------------------------------------------
def test_finetune_and_score_charge_exactly_what_they_forward(
    pretrained, digits_splits, tmp_path
) -> None:
    ctx = make_ctx("resnet20", pretrained.state, digits_splits, tmp_path)
    policy = ctx.space.uniform_policy(4, 4)
    model, stats = ctx.finetune(policy, steps=2)
    assert stats.steps == 2 and stats.samples == 2 * ctx.preset.finetune.batch_size
    assert ctx.budget.samples == stats.samples
    before = ctx.budget.samples
    seen = count_images(model)
    acc = ctx.score(model)
    assert 0.0 <= acc <= 100.0
    recal = ctx.preset.recalibration
    assert sum(seen) == recal.batches * recal.batch_size + len(ctx.val_set)
    assert ctx.budget.samples - before == sum(seen)


def test_a_method_that_only_calls_helpers_is_charged_the_images_it_used(
    digits_splits, tmp_path
) -> None:
    ctx = make_ctx("mbv3-cifar", random_fp_supernet_state(), digits_splits, tmp_path)
    space = ctx.space
    supernet = ctx.fp_supernet()
    seen = count_images(supernet)
    recipe = dataclasses.replace(ctx.preset.finetune, max_steps=2, batch_size=8)
    sampler = SandwichSampler(space, num_random=1, policy=lambda arch, rng: "w4a4")
    ctx.train(supernet, sandwich_step(space, sampler, seed=0), recipe=recipe)
    scored = []
    for i in range(2):
        net = ctx.subnet(space.sample_arch(ctx.rng), "w3a3", supernet=supernet)
        scored.append(count_images(net))
        ctx.score(net, seed=i)
    used = sum(seen) + sum(map(sum, scored))
    assert sum(seen) == 2 * 3 * 8  # 2 steps, 3 subnets of 8 images
    assert ctx.budget.samples == used
    recal = ctx.preset.recalibration
    assert [sum(s) for s in scored] == [recal.batches * recal.batch_size + len(ctx.val_set)] * 2


def test_train_charges_every_phase(digits_splits, tmp_path) -> None:
    ctx = make_ctx("resnet20", {}, digits_splits, tmp_path)
    model, extra = (
        nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)),
        nn.Parameter(torch.ones(())),
    )
    phase = Phase(digits_splits.val, torch.optim.SGD([extra], lr=0.1), batch_size=16)
    recipe = dataclasses.replace(ctx.preset.finetune, max_steps=3, batch_size=32)
    seen = count_images(model)
    stats = ctx.train(model, recipe=recipe, phases=[phase])
    assert seen == [32, 16] * 3
    assert ctx.budget.samples == stats.samples == 3 * 48


# --- the alternating loop ----------------------------------------------------------------
class Scaled(nn.Module):
    """A linear layer (the weights) times a scalar (the "architecture" parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.alpha = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.alpha


def _marked(value: float, n: int) -> TensorDataset:
    x = torch.randn(n, 4)
    x[:, 0] = value  # column 0 says which dataset a batch came from
    return TensorDataset(x, torch.randint(0, 3, (n,)))


@pytest.mark.parametrize("every", ["step", "epoch"])
def test_alternating_phases_touch_only_their_own_params_and_data(every: str) -> None:
    model = Scaled()
    weights, arch = list(model.linear.parameters()), [model.alpha]
    weight_data, arch_data = _marked(1.0, 32), _marked(-1.0, 16)
    events: list[tuple[str, list[torch.Tensor], torch.Tensor]] = []

    def recording(name: str, marker: float):
        def step(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
            assert torch.all(x[:, 0] == marker), f"{name} got another phase's batch"
            snapshot = [p.detach().clone() for p in (*weights, *arch)]
            events.append((name, snapshot[:-1], snapshot[-1]))
            return F.cross_entropy(m(x), y), x.shape[0]

        return step

    recipe = load_preset("smoke").finetune
    recipe = dataclasses.replace(recipe, epochs=2, batch_size=8, lr=0.5, weight_decay=0.0)
    phase = Phase(
        arch_data,
        torch.optim.Adam(arch, lr=0.1),
        recording("arch", -1.0),
        every=every,
        batch_size=8,
    )
    train(
        model,
        weight_data,
        recipe,
        step_loss=recording("weights", 1.0),
        optimizer=torch.optim.SGD(weights, lr=0.5),
        phases=[phase],
    )
    names = [name for name, _, _ in events]
    if every == "step":
        assert names == ["weights", "arch"] * 8
    else:  # 4 weight steps per epoch, then a full pass (2 batches) over the arch data
        assert names == (["weights"] * 4 + ["arch"] * 2) * 2
    for (name, w0, a0), (_, w1, a1) in zip(events, events[1:], strict=False):
        moved_weights = any(not torch.equal(p, q) for p, q in zip(w0, w1, strict=True))
        moved_arch = not torch.equal(a0, a1)
        if name == "weights":  # what happened between this call and the next: its step
            assert moved_weights and not moved_arch
        else:
            assert moved_arch and not moved_weights


def test_on_epoch_is_called_after_each_epoch_and_clipping_bounds_the_gradient() -> None:
    model = Scaled()
    epochs, norms = [], []
    recipe = dataclasses.replace(load_preset("smoke").finetune, epochs=3, batch_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    real_step = opt.step

    def watched_step(*args, **kwargs):
        grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack(grads))))
        return real_step(*args, **kwargs)

    opt.step = watched_step

    def huge_loss(m, x, y):
        return 1e6 * F.cross_entropy(m(x), y), x.shape[0]

    stats = train(
        model,
        _marked(1.0, 16),
        recipe,
        step_loss=huge_loss,
        optimizer=opt,
        clip_grad_norm=0.5,
        on_epoch=epochs.append,
    )
    assert epochs == [0, 1, 2] and stats.steps == 6
    assert max(norms) <= 0.5 + 1e-6


def test_a_caller_optimizer_keeps_its_own_learning_rates_under_the_schedule() -> None:
    model = Scaled()
    opt = torch.optim.SGD(
        [{"params": model.linear.parameters(), "lr": 0.2}, {"params": [model.alpha], "lr": 0.02}]
    )
    seen = []
    recipe = dataclasses.replace(load_preset("smoke").finetune, epochs=1, batch_size=8)

    def record(step, loss, samples):
        seen.append([g["lr"] for g in opt.param_groups])

    train(model, _marked(1.0, 32), recipe, optimizer=opt, on_step=record)
    steps = total_steps(recipe, 4)
    assert seen == [[lr_at(s, steps, 0, 0.2), lr_at(s, steps, 0, 0.02)] for s in range(steps)]


def test_generator_losses_are_back_propagated_one_by_one() -> None:
    model = Scaled()
    values = []

    def two_parts(m, x, y):
        def parts():
            for scale in (1.0, 2.0):
                loss = scale * F.cross_entropy(m(x), y)
                values.append(float(loss.detach()))
                yield loss

        return parts(), 2 * x.shape[0]

    recipe = dataclasses.replace(load_preset("smoke").finetune, max_steps=1, batch_size=8)
    stats = train(model, _marked(1.0, 8), recipe, step_loss=two_parts)
    assert stats.samples == 16
    assert math.isclose(stats.final_loss, sum(values))


# --- the sandwich step --------------------------------------------------------------------
def old_sandwich_step(seed: int, num_random: int = 2, label_smoothing: float = 0.0):
    """The hard-wired FP sandwich step that the sampler-driven one replaced (verbatim logic)."""
    rng = random.Random(seed)
    largest, smallest = max_arch(), min_arch()

    def step(model, x, y):
        model.set_active(largest)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        teacher = F.softmax(logits.detach(), dim=1)
        for arch in [smallest, *(sample_arch(rng) for _ in range(num_random))]:
            model.set_active(arch)
            loss = loss + soft_cross_entropy(model(x), teacher)
        model.set_active(largest)
        return loss, x.shape[0] * (2 + num_random)

    return step


def old_train(model, data, recipe, step_loss, seed):
    """The training loop before the toolkit (its arithmetic, verbatim)."""
    from benchmark.arena.data import make_loader

    loader = make_loader(data, recipe.batch_size, shuffle=True, seed=seed, drop_last=True)
    steps = total_steps(recipe, len(loader))
    warmup = round(recipe.warmup_epochs * len(loader))
    optimizer = make_optimizer(model, recipe)
    model.train()
    done = 0
    while done < steps:
        for x, y in loader:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(done, steps, warmup, recipe.lr)
            optimizer.zero_grad(set_to_none=True)
            loss, _ = step_loss(model, x, y)
            loss.backward()
            optimizer.step()
            done += 1
            if done >= steps:
                break


def test_sampler_sandwich_step_reproduces_the_old_fp_pretraining_bit_for_bit(
    digits_splits,
) -> None:
    space = get_space("mbv3-cifar")
    recipe = dataclasses.replace(
        load_preset("smoke").supernet, batch_size=16, max_steps=3, warmup_epochs=0.1
    )
    data = torch.utils.data.Subset(digits_splits.train, range(64))
    torch.manual_seed(1)
    old = space.build_supernet()
    new = space.build_supernet()
    new.load_state_dict(old.state_dict())
    old_train(old, data, recipe, old_sandwich_step(seed=5), seed=3)
    train(new, data, recipe, seed=3, step_loss=sandwich_step(space, seed=5))
    old_state, new_state = old.state_dict(), new.state_dict()
    assert old_state.keys() == new_state.keys()
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    assert not torch.equal(old_state["classifier.weight"], space.build_supernet().classifier.weight)


def test_sandwich_with_a_policy_sampler_and_an_external_teacher(digits_splits) -> None:
    space = get_space("mbv3-cifar")
    supernet = space.build_supernet().train()
    bits_seen = []
    supernet.register_forward_pre_hook(lambda m, _: bits_seen.append(m.blocks["0"].dw.w_bits))
    sampler = SandwichSampler(
        space, num_random=2, policy=lambda arch, rng: space.sample_policy(arch, rng)
    )
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    loss, samples = sandwich_step(space, sampler, seed=0, teacher=teacher)(supernet, x, y)
    assert samples == 4 * 4 and len(bits_seen) == 4
    assert set(bits_seen) <= set(space.bit_choices)
    loss.backward()
    assert teacher[1].weight.grad is None  # the teacher only gives targets
    # accumulate=True back-propagates per subnet: same gradient up to rounding
    grads = {n: p.grad.clone() for n, p in supernet.named_parameters() if p.grad is not None}
    supernet.zero_grad(set_to_none=True)
    parts, _ = sandwich_step(space, sampler, seed=0, teacher=teacher, accumulate=True)(
        supernet, x, y
    )
    for part in parts:
        part.backward()
    for name, grad in grads.items():
        torch.testing.assert_close(dict(supernet.named_parameters())[name].grad, grad)


# --- subnets and splits -------------------------------------------------------------------
def test_subnets_come_from_one_fp_supernet_and_match_build_from_fp(
    digits_splits, tmp_path, monkeypatch
) -> None:
    state = random_fp_supernet_state()
    ctx = make_ctx("mbv3-cifar", state, digits_splits, tmp_path)
    space = ctx.space
    builds = []
    real = type(space).build_supernet
    monkeypatch.setattr(
        type(space), "build_supernet", lambda self, *a, **k: builds.append(1) or real(self, *a, **k)
    )
    rng = random.Random(0)
    for _ in range(3):
        arch = space.sample_arch(rng)
        policy = space.sample_policy(arch, rng)
        net = ctx.subnet(arch, policy)
        reference = space.build_from_fp(state, arch, policy)
        assert net.state_dict().keys() == reference.state_dict().keys()
        assert all(torch.equal(v, reference.state_dict()[k]) for k, v in net.state_dict().items())
    assert len(builds) == 1 + 3  # one kept FP supernet; the other three are build_from_fp's


def _bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_a_recalibrated_subnet_gets_its_own_bn_statistics_and_is_charged(
    digits_splits, tmp_path
) -> None:
    from benchmark.arena.recipes.scoring import recalibrate

    ctx = make_ctx("mbv3-cifar", random_fp_supernet_state(), digits_splits, tmp_path, seed=3)
    arch = ctx.space.reference_arch
    kept = _bn_stats(ctx.fp_supernet(cached=True))
    plain = ctx.subnet(arch)
    assert ctx.budget.samples == 0
    own = ctx.subnet(arch, recalibrated=True)
    config = ctx.preset.recalibration
    assert ctx.budget.samples == config.batches * config.batch_size
    expected = ctx.subnet(arch)
    recalibrate(expected, ctx.train_set, batches=config.batches,
                batch_size=config.batch_size, seed=3)  # fmt: skip
    got, want, before = _bn_stats(own), _bn_stats(expected), _bn_stats(plain)
    assert got.keys() == want.keys() and got
    assert all(torch.allclose(got[k], want[k]) for k in got)
    assert not all(torch.allclose(got[k], before[k]) for k in got)  # they did change
    after = _bn_stats(ctx.fp_supernet(cached=True))
    assert all(torch.equal(after[k], kept[k]) for k in kept)  # the kept supernet untouched


def test_a_fixed_space_model_keeps_the_checkpoint_statistics(digits_splits, tmp_path) -> None:
    space = get_space("resnet20", num_classes=digits_splits.num_classes)
    state = {k: v for k, v in space.build().state_dict().items() if "_quantizer." not in k}
    state = {k: v + 0.5 if "running_mean" in k else v for k, v in state.items()}
    ctx = make_ctx("resnet20", state, digits_splits, tmp_path)
    model = ctx.subnet(recalibrated=True)
    assert ctx.budget.samples == 0
    stats = _bn_stats(model)
    assert stats and all(torch.equal(stats[k], state[k]) for k in stats)


def test_split_is_disjoint_seeded_and_leaves_validation_alone(digits_splits, tmp_path) -> None:
    ctx = make_ctx("resnet20", {}, digits_splits, tmp_path, seed=0)
    first, rest = ctx.split(0.8)
    n = len(ctx.train_set)
    assert len(first) == round(0.8 * n) and len(first) + len(rest) == n
    assert set(first.indices).isdisjoint(rest.indices)
    assert sorted([*first.indices, *rest.indices]) == list(range(n))
    assert first.dataset is ctx.train_set and rest.dataset is ctx.train_set
    again, _ = make_ctx("resnet20", {}, digits_splits, tmp_path, seed=0).split(0.8)
    other, _ = make_ctx("resnet20", {}, digits_splits, tmp_path, seed=1).split(0.8)
    assert again.indices == first.indices and other.indices != first.indices
    with pytest.raises(ValueError, match="empty part"):
        ctx.split(0.0)


def test_subset_is_a_fixed_seeded_share_of_a_part(digits_splits, tmp_path) -> None:
    ctx = make_ctx("resnet20", {}, digits_splits, tmp_path, seed=0)
    first, _ = ctx.split(0.8)
    part = ctx.subset(first, 0.3)
    assert len(part) == round(0.3 * len(first)) and part.dataset is first
    assert len(set(part.indices)) == len(part) and max(part.indices) < len(first)
    again = make_ctx("resnet20", {}, digits_splits, tmp_path, seed=0).subset(first, 0.3)
    other = make_ctx("resnet20", {}, digits_splits, tmp_path, seed=1).subset(first, 0.3)
    assert again.indices == part.indices and other.indices != part.indices
    assert len(ctx.subset(first, 1.0)) == len(first) and len(ctx.subset(first, 1e-9)) == 1
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="subset fraction must be in"):
            ctx.subset(first, bad)


# --- offers ------------------------------------------------------------------------------
def test_an_infeasible_offer_warns_once_in_the_trial_log(
    pretrained, digits_splits, tmp_path, caplog
) -> None:
    from benchmark.arena import Candidate

    ctx = make_ctx("resnet20", pretrained.state, digits_splits, tmp_path)  # bitops<=0.5
    space = ctx.space
    fits = Candidate(space.uniform_policy(4, 4), label="w4")
    over = Candidate(space.uniform_policy(8, 8), label="w8")
    assert ctx.candidate_feasible(fits) is True and ctx.candidate_feasible(over) is False
    with caplog.at_level(logging.WARNING, logger="test_toolkit"):
        ctx.offer(fits)
        assert not caplog.records  # a feasible offer is silent
        ctx.offer(fits, over)
        ctx.offer(over)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "w8" in warnings[0] and "bitops<=0.5" in warnings[0]
    assert [c.label for c in ctx.offered] == ["w8"]  # offered all the same
    bad = Candidate({"nolayer": space.uniform_policy(4, 4)["conv1"]}, label="bad")
    assert ctx.candidate_feasible(bad) is None  # not a candidate of this space
