"""``haq``: the HAQ search (episodes of a DDPG agent choosing per-layer bits, hardware cost
feedback through the constraint loop). See :mod:`methods.haq` for what is kept and why."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, Strict

from benchmark.arena import (
    Candidate,
    Context,
    CostFile,
    CostTable,
    DivergedError,
    KLLinearConfig,
    LayerBits,
    Method,
    QuantConfig,
    Recipe,
    SearchResult,
    SearchSpace,
    load_cost_file,
    method_config,
)
from methods import register_method
from methods.haq.agent import DDPGAgent, DDPGConfig
from methods.haq.env import (
    STATE_DIM,
    CostLimit,
    InfeasibleLimit,
    action_to_index,
    check_reachable,
    constrain,
    static_features,
    step_state,
)

REWARD_SCALE = 0.1
"""HAQ's reward: ``0.1·(top-1 − FP top-1)``, top-1 in percent."""

HAQ_QUANT = QuantConfig(
    weight=KLLinearConfig(),
    act=KLLinearConfig(learn_clip=True, clip_init=6.0),
)
"""The per-episode quantizer: KL-calibrated linear weights (max |w| from 5 bits), activations
with a learnable clip starting at min(6, calibrated)."""

PINNED_BITS = 8
"""HAQ keeps the first and the last layer at W8A8."""


@method_config
class HAQConfig:
    """HAQ's settings (``--method-options '{"haq": {...}}'`` or ``[methods.haq]``): the
    search's length (defaults: the original's, ``rl_quantize.py``) and its cost table.

    Attributes:
        cost_table: a CSV or JSON file of measured per-layer costs (latency, energy, ...)
            of the space's layers at each (w_bits, a_bits); see
            :mod:`benchmark.arena.cost_file`. The search then keeps every episode's policy
            within ``table_ratio`` of the table's W8A8 cost as well as within the task's
            constraint (which still decides feasibility). Default: the shared cost model
            (BitOPs, or weight bits for a size constraint) alone.
        table_ratio: the limit under ``cost_table`` as a fraction of the table's cost of
            the W8A8 policy; default: the task's limit as a fraction of its W8A8 reference.
        top_k: candidates to return: the ``top_k`` best distinct policies found.
        episodes: episodes in all, warm-up included (HAQ: 600).
        warmup: episodes 0 to ``warmup`` (``warmup + 1`` of them) take uniform random
            actions and do not update the agent, as the original's ``episode <= warmup``
            (HAQ: 20).
        finetune_steps: optimiser steps of the short QAT finetune of each episode's policy
            (the preset's ``[finetune]`` recipe cut to this many; 0: calibrate and score
            only). HAQ: one epoch of a 20,000-image subset at batch 128, ~157 steps.
        finetune_lr: the short finetune's SGD learning rate (HAQ: 0.001,
            ``rl_quantize.py``); ``None``: the preset's ``[finetune]`` rate. The rest of
            the recipe (schedule, momentum, weight decay, batch) is the preset's.
        sigma_decay: exploration σ is ``0.5·sigma_decay^(episode − warmup)`` (HAQ: 0.99).
    """

    episodes: Annotated[int, Strict(), Field(ge=1)] = 600
    warmup: Annotated[int, Strict(), Field(ge=0)] = 20
    finetune_steps: Annotated[int, Strict(), Field(ge=0)] = 157
    finetune_lr: Annotated[float, Strict(), Field(gt=0)] | None = 0.001
    sigma_decay: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.99
    cost_table: Annotated[str, Strict(), Field(min_length=1)] | None = None
    table_ratio: Annotated[float, Strict(), Field(gt=0)] | None = None
    top_k: Annotated[int, Strict(), Field(ge=1)] = 1

    def __post_init__(self) -> None:
        if self.table_ratio is not None and self.cost_table is None:
            raise ValueError("table_ratio needs a cost_table to apply to")


@dataclass(frozen=True)
class Setup:
    """What one search works on: the layers, their bit choices, states and limits."""

    arch: Any
    table: CostTable
    layers: tuple[str, ...]  # searchable layers, network order
    bits: tuple[int, ...]  # their bit choices, ascending
    movable: np.ndarray  # False for a layer pinned at 8 bits
    pinned_index: int | None  # choice index of 8 bits (pinned layers)
    static: np.ndarray  # (layers, 8) normalised state columns
    limits: tuple[CostLimit, ...]  # the task's constraint first, then a user table's limit
    cost_file: CostFile | None

    def policy(self, w_index: np.ndarray, a_index: np.ndarray) -> dict[str, LayerBits]:
        return {
            name: LayerBits(self.bits[int(w)], self.bits[int(a)])
            for name, w, a in zip(self.layers, w_index, a_index, strict=True)
        }


@register_method
class HAQ(Method):
    """Hardware-aware automated quantization (Wang et al., CVPR 2019) on any space.

    Settings: :class:`HAQConfig`.
    """

    name = "haq"
    searches = "bits"
    config_class = HAQConfig

    @classmethod
    def prepare_config(cls, config: HAQConfig, spaces: Sequence[SearchSpace]) -> HAQConfig:
        """Check a ``cost_table`` against each space (its reference architecture) before the
        run starts; the path is made absolute for the trials."""
        if config.cost_table is None:
            return config
        given = Path(config.cost_table).expanduser()
        table = load_cost_file(given)
        for space in spaces:
            table.check(space.name, space.cost_table(space.reference_arch))
        return replace(config, cost_table=str(given.resolve()))

    # --- set-up -------------------------------------------------------------------------
    def setup(self, ctx: Context) -> Setup:
        """The layers, states, bit choices and limits of this task (no image is used).

        Raises:
            ValueError: a cost table that does not fit, a first or last layer that cannot
                be at 8 bits, or limits the lowest bits cannot meet.
        """
        space = ctx.space
        arch = space.reference_arch
        table = space.cost_table(arch)
        layers = tuple(table.searchable)
        bits = tuple(sorted(space.bit_choices))
        movable = np.ones(len(layers), bool)
        for end in {table.names[0], table.names[-1]}:
            if end in table.fixed:
                if table.fixed[end] != LayerBits(PINNED_BITS, PINNED_BITS):
                    b = table.fixed[end]
                    raise ValueError(
                        f"HAQ keeps the first and last layer at W8A8, but {space.name} fixes "
                        f"{end} at W{b.w_bits}A{b.a_bits}: use the space's default convention"
                    )
            elif PINNED_BITS in bits:
                movable[layers.index(end)] = False
            else:
                raise ValueError(
                    f"HAQ keeps the first and last layer at W8A8, but {end} is searched over "
                    f"{list(bits)} on {space.name}"
                )
        profiles = space.profiles(arch)
        static = static_features([profiles[n] for n in layers])
        limit = ctx.limit
        metric = limit.metric
        task = CostLimit(metric, limit.coefficients(arch, bits), limit.fixed(arch), limit.absolute)
        limits = [task]
        cost_file = None
        if self.config.cost_table is not None:
            cost_file = load_cost_file(self.config.cost_table)
            cost_file.check(space.name, table)
            ratio = self.config.table_ratio or limit.ratio
            limits.append(
                CostLimit(
                    "table",
                    cost_file.coefficients(table, bits),
                    cost_file.fixed_total(table),
                    ratio * cost_file.reference_total(table),
                )
            )
        pinned = bits.index(PINNED_BITS) if not movable.all() else None
        start = np.where(movable, len(bits) - 1, pinned or 0)  # pinned layers stay at 8
        try:
            check_reachable(limits, start, start, movable)
        except InfeasibleLimit as err:
            raise ValueError(f"HAQ on {space.name} under {ctx.constraint.text}: {err}") from None
        return Setup(arch, table, layers, bits, movable, pinned, static, tuple(limits), cost_file)

    # --- the search ---------------------------------------------------------------------
    def search(self, ctx: Context) -> SearchResult:
        section = self.config
        setup = self.setup(ctx)
        agent = DDPGAgent(
            STATE_DIM,
            DDPGConfig().replay_per_layer * len(setup.layers),
            seed=_seed(ctx.task.seed, -1),
        )
        signature = self._signature(setup, section)
        saved = ctx.load_checkpoint()
        if saved is not None:
            if saved.get("signature") != signature:
                raise ValueError("the saved HAQ search was for other layers, bits or options")
            agent.load_state_dict(saved["agent"])
            history, fp_top1, start = saved["history"], saved["fp_val_top1"], saved["episode"]
            ctx.log.info("haq: resumed at episode %d", start)
        else:
            with torch.random.fork_rng(devices=_devices(ctx)):
                torch.manual_seed(_seed(ctx.task.seed, -2))
                fp_top1 = ctx.score(ctx.subnet(setup.arch), seed=0)
            history, start = [], 0
        for episode in range(start, section.episodes):
            if ctx.budget.exhausted():
                break
            entry = self._episode(ctx, setup, section, agent, episode, fp_top1)
            history.append(entry)
            ctx.save_checkpoint(
                {
                    "signature": signature,
                    "agent": agent.state_dict(),
                    "history": history,
                    "fp_val_top1": fp_top1,
                    "episode": episode + 1,
                }
            )
            log = self._log(setup, history, fp_top1)  # kept if the budget ends the search
            ctx.offer(*self._candidates(ctx, setup, history), log=log)
            best = max(e["proxy_val_top1"] for e in history)
            report = {"episode": episode, "reward": entry["reward"], "best_val_top1": best}
            if entry["critic_loss"] is not None:
                report["critic_loss"] = entry["critic_loss"]
            ctx.report(proxy_val_top1=entry["proxy_val_top1"], **report)
        candidates = self._candidates(ctx, setup, history)
        return SearchResult(candidates, self._log(setup, history, fp_top1))

    def _episode(
        self,
        ctx: Context,
        setup: Setup,
        section: HAQConfig,
        agent: DDPGAgent,
        episode: int,
        fp_top1: float,
    ) -> dict[str, Any]:
        """One episode: actions layer by layer, the constraint loop, finetune, score, learn."""
        warm = episode <= section.warmup  # the original's test: warmup + 1 random episodes
        sigma = DDPGConfig().sigma_init * section.sigma_decay ** max(episode - section.warmup, 0)
        w_index, a_index, steps = self._act(setup, agent, warm, sigma)
        w_index, a_index = constrain(w_index, a_index, setup.limits, setup.movable)
        policy = ctx.space.full_policy(setup.policy(w_index, a_index), setup.arch)
        top1, diverged = self._proxy_score(ctx, setup, section, episode, policy)
        reward = REWARD_SCALE * (top1 - fp_top1)
        losses: list[tuple[float, float]] = []
        for t, (state, action) in enumerate(steps):
            done = t == len(steps) - 1
            following = state if done else steps[t + 1][0]
            agent.observe(state, action, reward, following, done)
            if not warm:
                losses.append(agent.update())
        entry: dict[str, Any] = {
            "episode": episode,
            "explore": "random" if warm else "agent",
            "sigma": None if warm else sigma,
            "w_bits": [setup.bits[int(i)] for i in w_index],
            "a_bits": [setup.bits[int(i)] for i in a_index],
            "proxy_val_top1": top1,
            "diverged": diverged,
            "reward": reward,
            "critic_loss": float(np.mean([c for c, _ in losses])) if losses else None,
            "actor_loss": float(np.mean([p for _, p in losses])) if losses else None,
        }
        for limit in setup.limits:
            cost = limit.total(w_index, a_index)
            entry[f"{limit.name}_cost"] = cost
            entry[f"{limit.name}_of_limit"] = cost / limit.limit if limit.limit else math.inf
        return entry

    @staticmethod
    def _act(
        setup: Setup, agent: DDPGAgent, warm: bool, sigma: float
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, float]]]:
        """The episode's actions, layer by layer (weight bits, then activation bits):
        random in warm-up, else the actor's with truncated-normal exploration ``sigma``.
        Returns the weight and activation choice indices and the (state, action) steps."""
        n = len(setup.bits)
        w_index = np.full(len(setup.layers), setup.pinned_index or 0)
        a_index = w_index.copy()
        steps: list[tuple[np.ndarray, float]] = []
        previous = 1.0
        for layer in np.flatnonzero(setup.movable):
            for weight_step, index in ((True, w_index), (False, a_index)):
                state = step_state(setup.static[layer], previous, weight_step)
                action = agent.random_action() if warm else agent.explore_action(state, sigma)
                index[layer] = action_to_index(action, n)
                previous = setup.bits[index[layer]] / setup.bits[-1]
                steps.append((state, action))
        return w_index, a_index, steps

    @staticmethod
    def _proxy_score(
        ctx: Context, setup: Setup, section: HAQConfig, episode: int, policy: dict
    ) -> tuple[float, bool]:
        """The policy's short finetune and validation top-1 (percent), under the episode's
        own torch seed; ``(0.0, True)`` when the finetune diverged."""
        with torch.random.fork_rng(devices=_devices(ctx)):
            torch.manual_seed(_seed(ctx.task.seed, episode))
            try:
                if section.finetune_steps > 0:
                    model, _ = ctx.finetune(
                        policy,
                        setup.arch,
                        steps=section.finetune_steps,
                        recipe=finetune_recipe(ctx, section),
                        quant=HAQ_QUANT,
                        seed=_seed(ctx.task.seed, episode),
                    )
                else:
                    model = ctx.subnet(setup.arch, policy, quant=HAQ_QUANT)
                return ctx.score(model, seed=episode), False
            except DivergedError as err:
                # Our choice (the paper does not say): an episode whose short finetune
                # diverges scores 0% top-1, the worst reward, and is never a candidate;
                # the search goes on.
                ctx.log.warning("haq: episode %d diverged (%s): scored 0%% top-1", episode, err)
                return 0.0, True

    # --- results ------------------------------------------------------------------------
    def _candidates(
        self, ctx: Context, setup: Setup, history: list[dict[str, Any]]
    ) -> list[Candidate]:
        """The ``top_k`` best distinct policies (by proxy top-1; ties: the earlier)."""
        best: dict[str, dict[str, Any]] = {}
        for entry in history:
            if entry.get("diverged"):
                continue
            key = json.dumps([entry["w_bits"], entry["a_bits"]])
            if key not in best or entry["proxy_val_top1"] > best[key]["proxy_val_top1"]:
                best[key] = entry
        ranked = sorted(best.values(), key=lambda e: (-e["proxy_val_top1"], e["episode"]))
        candidates = []
        for rank, entry in enumerate(ranked[: self.config.top_k]):
            policy = {
                name: LayerBits(w, a)
                for name, w, a in zip(setup.layers, entry["w_bits"], entry["a_bits"], strict=True)
            }
            skip = ("w_bits", "a_bits", "explore", "diverged")
            meta = {k: entry[k] for k in entry if k not in skip}
            candidates.append(
                Candidate(
                    ctx.space.full_policy(policy, setup.arch),
                    setup.arch,
                    label="haq" if rank == 0 else f"haq-{rank + 1}",
                    meta=meta,
                )
            )
        return candidates

    def _log(self, setup: Setup, history: list[dict[str, Any]], fp_top1: float) -> dict[str, Any]:
        cost_file = setup.cost_file
        return {
            "layers": list(setup.layers),
            "bit_choices": list(setup.bits),
            "pinned_8bit": [n for n, m in zip(setup.layers, setup.movable, strict=True) if not m],
            "fp_val_top1": fp_top1,
            "limits": {lim.name: lim.limit for lim in setup.limits},
            "cost_table": None
            if cost_file is None
            else {"source": cost_file.source, "space": cost_file.space, "unit": cost_file.unit},
            "quant": HAQ_QUANT.to_dict(),
            "episodes": history,
        }

    def _signature(self, setup: Setup, section: HAQConfig) -> dict[str, Any]:
        """What a saved search must match to be continued."""
        return {
            "layers": list(setup.layers),
            "bits": list(setup.bits),
            "limits": [lim.limit for lim in setup.limits],
            # the episode count is where the search stops, not what it is
            "preset": {
                k: getattr(section, k)
                for k in ("warmup", "finetune_steps", "finetune_lr", "sigma_decay")
            },
            "cost_table": self.config.cost_table,
        }


def _seed(task_seed: int, episode: int) -> int:
    """A seed per (task seed, episode), so a resumed search repeats an episode exactly."""
    return (task_seed * 1_000_003 + episode + 7) % 2**31


def _devices(ctx: Context) -> list[torch.device]:
    """Devices whose RNG :func:`torch.random.fork_rng` saves (the trial's, if CUDA)."""
    return [ctx.device] if ctx.device.type == "cuda" else []


def finetune_recipe(ctx: Context, config: HAQConfig) -> Recipe:
    """The per-episode finetune's recipe: the preset's ``[finetune]`` (its schedule over
    the ``finetune_steps`` steps), at the learning rate ``finetune_lr`` when given."""
    base = ctx.preset.finetune
    return base if config.finetune_lr is None else replace(base, lr=config.finetune_lr)
