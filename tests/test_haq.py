"""HAQ: the action → bit map, the constraint loop, the state, the DDPG agent (shapes, soft
updates, learning a toy reward), the search with and without a cost table, resume, and the
CLI end to end.

The search tests use an FP ResNet-20 trained by a micro preset (``tests/tiny.toml`` with a
320-image training subset and 1 pretrain epoch) cached in the session cache folder, where
the CLI runs with the same preset file find it again; ``[methods.haq]`` of tests/tiny.toml
gives 4 episodes (2 of warm-up) of 2 finetune steps.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from benchmark.arena import (
    QConv2d,
    QLinear,
    SearchSpace,
    apply_policy,
    cost_file_from_table,
    get_space,
)
from benchmark.arena.context import Context
from benchmark.arena.data import load_splits
from benchmark.arena.presets import load_preset
from benchmark.arena.protocol import Budget, DivergedError, Task
from benchmark.cli import main
from methods import get_method
from methods.haq import HAQ, HAQ_QUANT, HAQConfig
from methods.haq.agent import DDPGAgent, ReplayBuffer
from methods.haq.env import (
    CostLimit,
    InfeasibleLimit,
    action_to_bits,
    constrain,
    static_features,
    step_state,
)

TINY = Path(__file__).parent / "tiny.toml"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread, as a trial with the default ``--cpus-per-trial 1`` runs (the
    session default of 2 threads loses badly on a machine shared with other jobs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of the micro preset: tiny.toml, 320 training images, 1 pretrain epoch."""
    text = TINY.read_text().replace('name = "tiny"', 'name = "haq-micro"')
    text = text.replace("[data]\n", "[data]\ntrain_subset = 320\n")
    text = text.replace("[pretrain]\nepochs = 2", "[pretrain]\nepochs = 1")
    path = tmp_path_factory.mktemp("haq-preset") / "micro.toml"
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
    """FP ResNet-20 of the micro preset (cached where the CLI runs below look for it)."""
    from benchmark.arena.recipes.pretrain import pretrain_fp

    space = get_space("resnet20", num_classes=splits.num_classes)
    state, _ = pretrain_fp(space, splits, load_preset(micro), seed=0, cache_dir=cache_dir)
    return state


def make_ctx(
    micro: str,
    fp_state: dict,
    splits,
    workdir: Path,
    constraint: str = "bitops<=0.3",
    section: HAQConfig | None = None,
    space: SearchSpace | None = None,
) -> Context:
    preset = load_preset(micro)
    space = space or get_space("resnet20", num_classes=splits.num_classes)
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context.create(
        Task(space.name, "digits", preset.name, constraint, 0),
        space,
        preset,
        splits,
        fp_state,
        budget=Budget(600.0, 10**7),
        workdir=workdir,
        log=logging.getLogger("test_haq"),
    )
    _CONFIGS[id(ctx)] = section or HAQ.configure(preset)
    return ctx


_CONFIGS: dict[int, HAQConfig] = {}  # each test context's HAQ config (by id)


def haq_for(ctx: Context, **options: Any) -> HAQ:
    """HAQ with the config ``make_ctx`` was given for ``ctx`` (else the preset's), then
    ``options``."""
    return HAQ(_CONFIGS[id(ctx)], **options)


# --------------------------------------------------------------------------- action → bits
def test_action_to_bits_at_the_edges() -> None:
    bits = (2, 3, 4, 8)
    assert action_to_bits(0.0, bits) == 2 and action_to_bits(1.0, bits) == 8
    assert action_to_bits(-0.3, bits) == 2 and action_to_bits(1.7, bits) == 8  # clipped
    for k, b in enumerate(bits):  # n equal bins: [k/n, (k+1)/n) → choice k
        assert action_to_bits(k / 4, bits) == b
        assert action_to_bits(np.nextafter((k + 1) / 4, 0), bits) == b
    # on consecutive bits it is the original's round(a·(max − min + 1) + min − 0.5)
    consecutive = tuple(range(2, 9))
    for a in np.linspace(0.003, 0.997, 301):
        assert action_to_bits(a, consecutive) == int(np.round(a * 7 + 2 - 0.5))


# --------------------------------------------------------------------------- constraint loop
def _limit(coefs: np.ndarray, limit: float, name: str = "cost") -> CostLimit:
    return CostLimit(name, coefs, 0.0, limit)


def test_constraint_loop_walks_back_activation_then_weight() -> None:
    bits = np.array([2, 3, 4, 8])
    coefs = np.array([bits[:, None] * bits[None, :]] * 3, dtype=float)  # 3 layers, w·a
    start = np.full(3, 3)  # W8A8 everywhere: 3 × 64 = 192
    w, a = constrain(start, start, [_limit(coefs, 192.0)])
    assert list(w) == list(a) == [3, 3, 3]  # already within: unchanged
    w, a = constrain(start, start, [_limit(coefs, 160.0)])
    assert list(w) == [3, 3, 3] and list(a) == [3, 3, 2]  # last layer's a-bits 8 → 4: 160
    w, a = constrain(start, start, [_limit(coefs, 159.0)])
    assert list(w) == [3, 3, 2] and list(a) == [3, 3, 2]  # then its w-bits: W4A4 = 144
    w, a = constrain(start, start, [_limit(coefs, 143.0)])
    assert list(w) == [3, 3, 2] and list(a) == [3, 2, 2]  # then the layer before


def test_constraint_loop_always_ends_within_every_limit() -> None:
    rng = np.random.default_rng(0)
    for case in range(300):
        layers, choices = int(rng.integers(1, 12)), int(rng.integers(2, 6))
        limits = []
        for _ in range(int(rng.integers(1, 3))):  # monotone or not: any measured table
            coefs = rng.uniform(0, 10, (layers, choices, choices))
            if case % 2:
                coefs = np.sort(np.sort(coefs, 1), 2)
            low = coefs[:, 0, 0].sum()
            limits.append(_limit(coefs, low + rng.uniform(0, 1) * (coefs.sum((1, 2)).max() - low)))
        movable = rng.uniform(size=layers) < 0.8
        w0 = rng.integers(0, choices, layers)
        a0 = rng.integers(0, choices, layers)
        low_w, low_a = np.where(movable, 0, w0), np.where(movable, 0, a0)
        if all(lim.met(w0, a0) for lim in limits):  # within already: left alone
            w, a = constrain(w0, a0, limits, movable)
            assert (w == w0).all() and (a == a0).all()
        elif not all(lim.met(low_w, low_a) for lim in limits):
            with pytest.raises(InfeasibleLimit, match="cannot be met"):
                constrain(w0, a0, limits, movable)
            continue
        w, a = constrain(w0, a0, limits, movable)
        assert all(lim.met(w, a) for lim in limits)
        assert (w <= w0).all() and (a <= a0).all() and (w >= 0).all() and (a >= 0).all()
        assert (w[~movable] == w0[~movable]).all() and (a[~movable] == a0[~movable]).all()


def test_all_minimum_bits_over_the_limit_is_a_clear_error(micro, micro_fp, splits, tmp_path):
    space = get_space("resnet20")
    lowest = space.cost(space.uniform_policy(2, 2)).bitops / space.reference().bitops_w8a8
    ctx = make_ctx(micro, micro_fp, splits, tmp_path, f"bitops<={lowest * 1.000001}")
    setup = haq_for(ctx).setup(ctx)  # just reachable
    low = np.zeros(len(setup.layers), int)
    assert setup.limits[0].met(low, low)
    ctx = make_ctx(micro, micro_fp, splits, tmp_path, f"bitops<={lowest * 0.99}")
    with pytest.raises(ValueError, match="bitops limit .* cannot be met: every searchable layer"):
        haq_for(ctx).search(ctx)
    assert ctx.budget.samples == 0  # refused before any image


def test_a_size_constraint_costs_weight_bits(micro, micro_fp, splits, tmp_path: Path) -> None:
    ctx = make_ctx(micro, micro_fp, splits, tmp_path, "size<=0.4")
    (limit,) = haq_for(ctx).setup(ctx).limits
    top = np.full(18, 3)
    assert limit.name == "size" and limit.coefficients.shape == (18, 4, 4)
    assert limit.total(top, top) == ctx.space.reference().size_bits_w8a8  # W8A8 everywhere
    assert limit.total(top, np.zeros(18, int)) == limit.total(top, top)  # a-bits cost nothing
    assert limit.limit == pytest.approx(0.4 * ctx.space.reference().size_bits_w8a8)


# --------------------------------------------------------------------------- state
def test_state_columns_are_normalised_over_layers() -> None:
    space = get_space("resnet20")
    names = space.searchable_layers()
    profiles = space.profiles()
    geometry = [profiles[n] for n in names]
    first, down = geometry[0], geometry[names.index("layer2.0.conv1")]
    assert (first.in_channels, first.out_channels, first.stride, first.kernel) == (16, 16, 1, 3)
    assert (first.params, first.in_pixels) == (16 * 16 * 9, 32 * 32)
    assert (down.stride, down.in_pixels, down.out_channels) == (2, 32 * 32, 32)
    static = static_features(geometry)
    assert static.shape == (18, 8) and static.dtype == np.float32
    assert static.min() == 0.0 and static.max() == 1.0
    assert (static[:, 0] == 0).all() and (static[:, 4] == 0).all()  # constant: no dw, 3×3
    np.testing.assert_allclose(static[:, 7], np.arange(18) / 17, rtol=1e-6)  # layer index
    stride = static[:, 3]
    assert stride[names.index("layer2.0.conv1")] == 1.0 and stride[0] == 0.0
    assert static[names.index("layer3.2.conv2"), 5] == 1.0  # the most weights
    state = step_state(static[3], 0.5, weight_step=False)
    assert state.shape == (10,) and state[8] == 0.5 and state[9] == 0.0
    assert step_state(static[3], 1.0, weight_step=True)[9] == 1.0


class TinySpace(SearchSpace):
    """conv → depthwise conv → linear, no fixed layers: HAQ pins the first and last at 8."""

    name = "haq-tiny"
    bit_choices = (2, 4, 8)
    searches = "bits"
    default_fixed: dict = {}

    def build(self, arch=None, policy=None, quant=None) -> nn.Module:
        quant = self.layer_quant(quant)
        model = nn.Sequential(
            QConv2d(3, 8, 3, stride=2, padding=1, quant=quant, act_signed=True),
            nn.ReLU(),
            QConv2d(8, 8, 3, padding=1, groups=8, quant=quant, act_signed=False),
            nn.ReLU(),
            QConv2d(8, 64, 1, quant=quant, act_signed=False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            QLinear(64, self.num_classes, quant=quant, act_signed=None),
        )
        if policy is not None:
            apply_policy(model, self.full_policy(policy))
        return model

    def fixed_roles(self, arch=None) -> dict[str, list[str]]:
        return {}


def test_depthwise_and_linear_layers_and_pinned_ends(micro, splits, tmp_path: Path) -> None:
    space = TinySpace(num_classes=splits.num_classes)
    geometry = list(space.profiles().values())
    assert [g.name for g in geometry] == ["0", "2", "4", "7"]
    assert [g.kind == "dwconv" for g in geometry] == [False, True, False, False]
    fc = geometry[3]
    assert (fc.stride, fc.kernel, fc.in_pixels, fc.params) == (0, 1, 1, 64 * splits.num_classes)
    fp_state = space.build().state_dict()
    section = HAQConfig(episodes=3, warmup=1, finetune_steps=1, sigma_decay=0.9)
    ctx = make_ctx(micro, fp_state, splits, tmp_path, "bitops<=0.5", section, space)
    result = haq_for(ctx).search(ctx)
    assert result.log["pinned_8bit"] == ["0", "7"]
    for entry in result.log["episodes"]:
        assert entry["w_bits"][0] == entry["a_bits"][0] == entry["w_bits"][3] == 8
        assert entry["bitops_of_limit"] <= 1.0
    (best,) = result.candidates
    assert ctx.feasible(best.policy) and best.policy["7"].w_bits == 8


# --------------------------------------------------------------------------- the agent
def test_ddpg_shapes_soft_update_and_replay() -> None:
    agent = DDPGAgent(10, capacity=50, seed=0)
    states = torch.rand(7, 10)
    actions = agent.actor(states)
    assert actions.shape == (7, 1) and ((actions > 0) & (actions < 1)).all()
    assert agent.critic(states, actions).shape == (7, 1)
    rng = np.random.default_rng(0)
    for t in range(60):  # wraps the 50-slot ring
        agent.observe(rng.random(10, dtype=np.float32), t / 60, 0.1, rng.random(10), t % 6 == 5)
    assert len(agent.memory) == 50 and agent.memory.head == 10
    assert agent.memory.actions[9, 0] == pytest.approx(59 / 60)
    before = [p.detach().clone() for p in agent.critic_target.parameters()]
    critic_loss, actor_loss = agent.update()
    assert np.isfinite(critic_loss) and np.isfinite(actor_loss)
    assert agent.baseline == pytest.approx(0.1)  # the first batch mean
    for old, new, source in zip(
        before, agent.critic_target.parameters(), agent.critic.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.99 * old + 0.01 * source.detach())
    index = ReplayBuffer(100, 3)
    for i in range(80):
        index.append(np.full(3, i, np.float32), 0.0, 0.0, np.zeros(3), False)
    drawn = index.sample(np.random.default_rng(1), 64)[0][:, 0]
    assert len(set(drawn.tolist())) == 64  # without replacement when there are enough
    assert index.sample(np.random.default_rng(1), 90)[0].shape == (90, 3)  # else with
    action = agent.explore_action(np.zeros(10, np.float32), sigma=0.3)
    assert 0.0 <= action <= 1.0


def test_exploration_is_the_truncated_normal() -> None:
    from scipy.stats import kstest, truncnorm

    from methods.haq.agent import truncated_normal

    rng = np.random.default_rng(0)
    for mean, sigma in ((0.5, 0.5), (0.9, 0.2), (0.02, 0.1)):
        draws = [truncated_normal(rng, mean, sigma) for _ in range(2000)]
        assert 0.0 <= min(draws) and max(draws) <= 1.0
        law = truncnorm(-mean / sigma, (1 - mean) / sigma, loc=mean, scale=sigma)
        assert kstest(draws, law.cdf).pvalue > 0.01, (mean, sigma)
    assert truncated_normal(rng, 1.3, 0.0) == 1.0  # no noise: the (clipped) mean


def test_ddpg_learns_a_toy_reward_with_a_known_best_policy() -> None:
    """Three layers; the episode's one reward is −mean |a − best| with the best action 0.85
    for weight steps and 0.15 for activation steps. HAQ's hyperparameters, 10 warm-up and
    70 learning episodes: the greedy policy moves most of the way to the best one."""
    layers, best = 3, np.array([0.85, 0.15] * 3)
    static = np.eye(layers, 8, dtype=np.float32)
    agent = DDPGAgent(10, 128 * layers, seed=0)

    def play(mode: str, sigma: float = 0.0) -> tuple[list, float]:
        steps, previous = [], 1.0
        for layer in range(layers):
            for weight_step in (True, False):
                s = step_state(static[layer], previous, weight_step)
                if mode == "random":
                    a = agent.random_action()
                elif mode == "greedy":
                    a = agent.greedy_action(s)
                else:
                    a = agent.explore_action(s, sigma)
                steps.append((s, a))
                previous = a
        return steps, -float(np.abs(np.array([a for _, a in steps]) - best).mean())

    start = play("greedy")[1]
    warm = []
    for episode in range(80):
        steps, reward = play("random" if episode < 10 else "explore", 0.5 * 0.97 ** (episode - 10))
        if episode < 10:
            warm.append(reward)
        for t, (s, a) in enumerate(steps):
            done = t == len(steps) - 1
            agent.observe(s, a, reward, s if done else steps[t + 1][0], done)
            if episode >= 10:
                agent.update()
    steps, learned = play("greedy")
    assert learned > start + 0.15 and learned > np.mean(warm) + 0.15, (start, learned)
    weights, acts = [a for s, a in steps if s[9] == 1], [a for s, a in steps if s[9] == 0]
    assert min(weights) > max(acts)  # it learned which step wants which action


# --------------------------------------------------------------------------- the method
def test_registered_options_and_preset_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert get_method("haq") is HAQ and HAQ.searches == "bits"
    defaults = HAQConfig()
    assert (defaults.episodes, defaults.warmup, defaults.finetune_steps) == (600, 20, 157)
    assert defaults.sigma_decay == 0.99 and defaults.top_k == 1 and defaults.cost_table is None
    for bad, words in (
        ({"top_k": 0}, "top_k = 0 is out of range"),
        ({"cost_table": 3}, "cost_table = 3 is wrong"),
        ({"table_ratio": 0.5}, "table_ratio needs a cost_table"),
        ({"cost_table": "t.csv", "table_ratio": -1.0}, "table_ratio = -1.0 is out of range"),
        ({"cost_table": "t.csv", "table_ratio": "half"}, "table_ratio = 'half' is wrong"),
    ):
        with pytest.raises(ValueError, match=words):
            HAQ(**bad)
    space = get_space("resnet20")
    table = cost_file_from_table(space.cost_table(), "resnet20").write(tmp_path / "t.csv")
    given = HAQConfig(cost_table=str(table), top_k=2)
    assert HAQ.prepare_config(given, [space]) == given  # absolute already
    monkeypatch.chdir(tmp_path)
    relative = HAQ.prepare_config(HAQConfig(cost_table="t.csv"), [space])
    assert relative.cost_table == str(table)
    with pytest.raises(ValueError, match="is for space 'resnet20', not 'mbv3-cifar'"):
        HAQ.prepare_config(given, [get_space("mbv3-cifar")])


def test_search_meets_the_constraint_and_logs_every_episode(
    micro, micro_fp, splits, tmp_path: Path
) -> None:
    ctx = make_ctx(micro, micro_fp, splits, tmp_path, "bitops<=0.25")
    offers = []
    original = ctx.offer
    ctx.offer = lambda *c, **kw: (offers.append(c), original(*c, **kw))  # type: ignore[method-assign]
    result = haq_for(ctx, top_k=3).search(ctx)
    log = json.loads(json.dumps(result.log))  # JSON-serialisable
    episodes = log["episodes"]
    # the original's warm-up test, episode <= warmup (2): three random episodes
    assert [e["explore"] for e in episodes] == ["random", "random", "random", "agent"]
    assert [e["sigma"] for e in episodes] == [None, None, None, pytest.approx(0.45)]
    assert episodes[2]["critic_loss"] is None and np.isfinite(episodes[3]["critic_loss"])
    assert len(offers) == 4 and all(1 <= len(o) <= 3 for o in offers)
    assert ctx.offered_log["episodes"] == result.log["episodes"]  # what a budget stop keeps
    samples_per_episode = 2 * 64 + 64 + len(splits.val)  # finetune, recalibration, validation
    assert ctx.budget.samples == (64 + len(splits.val)) + 4 * samples_per_episode  # + FP score
    for entry in episodes:
        assert entry["bitops_of_limit"] <= 1.0 and set(entry["w_bits"]) <= {2, 3, 4, 8}
        assert entry["reward"] == pytest.approx(
            0.1 * (entry["proxy_val_top1"] - log["fp_val_top1"])
        )
    tops = [c.meta["proxy_val_top1"] for c in result.candidates]
    assert tops == sorted(tops, reverse=True) and tops[0] == max(
        e["proxy_val_top1"] for e in episodes
    )
    assert [c.label for c in result.candidates][:2] == ["haq", "haq-2"]
    for cand in result.candidates:
        assert ctx.feasible(cand.policy) and cand.policy["conv1"] == cand.policy["fc"]
        assert cand.policy["fc"].w_bits == 8


def test_resume_from_a_checkpoint_gives_the_same_next_episode(
    micro, micro_fp, splits, tmp_path: Path
) -> None:
    section = HAQConfig(episodes=3, warmup=1, finetune_steps=1, sigma_decay=0.9)
    straight_ctx = make_ctx(micro, micro_fp, splits, tmp_path / "a", section=section)
    straight = haq_for(straight_ctx).search(straight_ctx)
    # the same search stopped after 2 episodes (the agent has learned once), then continued
    first = make_ctx(micro, micro_fp, splits, tmp_path / "b", section=replace(section, episodes=2))
    haq_for(first).search(first)
    resumed_ctx = make_ctx(micro, micro_fp, splits, tmp_path / "b", section=section)
    resumed = haq_for(resumed_ctx).search(resumed_ctx)
    assert resumed_ctx.budget.samples == 64 + 64 + len(splits.val)  # only episode 2 ran
    assert resumed.log["episodes"] == straight.log["episodes"]
    assert [c.policy_json() for c in resumed.candidates] == [
        c.policy_json() for c in straight.candidates
    ]


def test_a_diverged_episode_scores_zero_and_the_search_goes_on(
    micro, micro_fp, splits, tmp_path: Path
) -> None:
    """A policy whose short finetune diverges (NaN loss) costs its episode, not the search:
    it scores 0% top-1 (the worst reward) and is never a candidate."""
    section = HAQConfig(episodes=3, warmup=1, finetune_steps=1, sigma_decay=0.9)
    ctx = make_ctx(micro, micro_fp, splits, tmp_path, section=section)
    original, calls = ctx.finetune, []

    def finetune(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise DivergedError("finetune: loss became nan at step 1")
        return original(*args, **kwargs)

    ctx.finetune = finetune  # type: ignore[method-assign]
    result = haq_for(ctx, top_k=3).search(ctx)
    episodes = result.log["episodes"]
    assert len(episodes) == 3 and [e["diverged"] for e in episodes] == [False, True, False]
    lost = episodes[1]
    assert lost["proxy_val_top1"] == 0.0
    assert lost["reward"] == pytest.approx(-0.1 * result.log["fp_val_top1"])
    assert result.candidates and all(c.meta["episode"] != 1 for c in result.candidates)
    assert all("diverged" not in c.meta for c in result.candidates)


@pytest.mark.parametrize("finetune_lr", [0.001, None])
def test_the_episode_finetune_runs_at_the_originals_rate_unless_told(
    finetune_lr, micro, micro_fp, splits, tmp_path: Path
) -> None:
    """HAQ's per-episode finetune uses ``finetune_lr`` (the original's 0.001 by default)
    with the rest of the preset's ``[finetune]`` recipe; ``None`` keeps the preset's rate."""
    section = HAQConfig(episodes=2, warmup=1, finetune_steps=1, finetune_lr=finetune_lr)
    ctx = make_ctx(micro, micro_fp, splits, tmp_path, section=section)
    original, recipes = ctx.finetune, []

    def finetune(*args, **kwargs):
        recipes.append(kwargs["recipe"])
        return original(*args, **kwargs)

    ctx.finetune = finetune  # type: ignore[method-assign]
    haq_for(ctx).search(ctx)
    preset = ctx.preset.finetune
    assert len(recipes) == 2 and preset.lr != 0.001
    want = preset if finetune_lr is None else replace(preset, lr=0.001)
    assert all(recipe == want for recipe in recipes)
    assert HAQConfig().finetune_lr == 0.001


def test_a_cost_table_limits_the_search_beside_the_task(
    micro, micro_fp, splits, tmp_path: Path
) -> None:
    """A made-up latency table where activation bits cost twice as much as weight bits:
    every episode meets its limit (half the table's W8A8 cost) and the task's constraint."""
    space = get_space("resnet20")
    table = space.cost_table()
    lat = cost_file_from_table(table, "resnet20")
    costs = {
        name: {(w, a): table.profile(name).macs * (w + 2 * a) * 1e-9 for (w, a) in row}
        for name, row in lat.costs.items()
    }
    path = type(lat)("resnet20", "ms", costs).write(tmp_path / "lat.json")
    section = HAQConfig(episodes=3, warmup=1, finetune_steps=1, sigma_decay=0.9)
    ctx = make_ctx(micro, micro_fp, splits, tmp_path / "w", "bitops<=0.5", section)
    result = haq_for(ctx, cost_table=str(path), table_ratio=0.5).search(ctx)
    log = result.log
    assert log["cost_table"]["unit"] == "ms" and set(log["limits"]) == {"bitops", "table"}
    reference = sum(table.profile(n).macs * 24 * 1e-9 for n in table.names)
    assert log["limits"]["table"] == pytest.approx(0.5 * reference)
    for entry in log["episodes"]:
        assert entry["table_of_limit"] <= 1.0 and entry["bitops_of_limit"] <= 1.0
        searched = zip(log["layers"], entry["w_bits"], entry["a_bits"], strict=True)
        expected = sum(table.profile(n).macs * (w + 2 * a) * 1e-9 for n, w, a in searched)
        expected += sum(table.profile(n).macs * 24 * 1e-9 for n in ("conv1", "fc"))  # W8A8
        assert entry["table_cost"] == pytest.approx(expected)
    assert ctx.feasible(result.candidates[0].policy)


def test_mbv3_reference_arch_mechanics(micro, splits, tmp_path: Path) -> None:
    space = get_space("mbv3-cifar", num_classes=splits.num_classes)
    fp_state = space.build_supernet().state_dict()  # untrained: the mechanics only
    section = HAQConfig(episodes=2, warmup=1, finetune_steps=1, sigma_decay=0.9)
    ctx = make_ctx(micro, fp_state, splits, tmp_path, "bitops<=0.2", section, space)
    result = haq_for(ctx).search(ctx)
    (cand,) = result.candidates
    assert cand.arch == space.reference_arch and ctx.feasible(cand.policy, cand.arch)
    assert {cand.policy[n].w_bits for n in space.searchable_layers(cand.arch)} <= {2, 3, 4}
    assert result.log["pinned_8bit"] == []  # stem and classifier are fixed at W8A8 already
    kept = ctx.fp_supernet(HAQ_QUANT, cached=True)
    fresh = space.build_supernet(HAQ_QUANT, fp_state)
    for (name, a), b in zip(kept.state_dict().items(), fresh.state_dict().values(), strict=True):
        if "_quantizer." not in name:  # the episodes' finetunes left the kept supernet alone
            assert torch.equal(a, b), name


# --------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("with_table", [False, True])
def test_cli_run_end_to_end(
    with_table: bool,
    tmp_path: Path,
    cache_dir: Path,
    micro: str,
    micro_fp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["run", "--methods", "haq", "--space", "resnet20", "--preset", micro,
            "--executor", "serial", "--out", str(tmp_path / "out"), "--run-id", "haq",
            "--cache-dir", str(cache_dir), "--constraint", "bitops<=0.3"]  # fmt: skip
    if with_table:
        table = get_space("resnet20").cost_table()
        made = cost_file_from_table(table, "resnet20")
        made.write(tmp_path / "lat.csv")
        argv += ["--method-options", json.dumps({"haq": {"cost_table": "lat.csv", "top_k": 2}})]
    monkeypatch.chdir(tmp_path)  # a relative table path: made absolute before the trials
    assert main(argv) == 0
    rows = pd.read_parquet(tmp_path / "out" / "runs" / "haq" / "records.parquet")
    assert (rows["status"] == "ok").all() and rows["feasible"].all()
    assert (rows["bitops_ratio_w8a8"] <= 0.3).all() and (rows["top1_test"] > 0).all()
    extra = json.loads(rows["extra"].iloc[0])
    assert extra["episode"] in range(4) and extra["bitops_of_limit"] <= 1.0
    if with_table:
        assert list(rows["candidate"]) == ["haq", "haq-2"]
        assert extra["table_of_limit"] <= 1.0 and "table_cost" in extra
        options = json.loads(rows["method_options"].iloc[0])
        assert options["cost_table"] == str(tmp_path / "lat.csv")
    else:
        assert list(rows["candidate"]) == ["haq"] and "table_cost" not in extra
