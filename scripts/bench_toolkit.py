"""Speed of the method toolkit on ``mbv3-cifar``: scoring subnets and the sandwich step.

Usage: python scripts/bench_toolkit.py [--threads 2] [--rounds 5] [--subnets 4] [--steps 3]

1. Scoring one random subnet (random architecture and per-layer bits) on digits with the
   smoke preset: extract + recalibrate (4 × 64 train images) + validation top-1.
   ``before``: ``space.build_from_fp`` per subnet (the whole supernet is rebuilt and loaded
   each time, what ``random`` did); ``after``: ``ctx.subnet`` + ``ctx.score`` (one FP
   supernet kept, subnets extracted from it). Rounds alternate before/after. Reported:
   subnets scored per minute for each, and the share of the ``after`` time spent outside
   the model's forward passes (target <= 20%).
2. One FP sandwich training step (largest + smallest + 2 random subnets, batch 64,
   forward + backward + SGD): the sampler-driven step against a copy of the hard-wired
   step it replaced, interleaved A, B, A, B; median ratio and spread (target <= 1.05).

The FP supernet comes from the cache (``$MPQBENCH_CACHE``), trained once if missing
(~30 s). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.arena import Budget, Context, Task, get_space, sandwich_step, soft_cross_entropy
from benchmark.arena.data import load_splits, make_loader
from benchmark.arena.presets import load_preset
from benchmark.arena.recipes.loop import make_optimizer
from benchmark.arena.recipes.pretrain import fp_starting_point
from benchmark.arena.recipes.scoring import evaluate, recalibrate
from benchmark.arena.spaces.mbv3.arch import max_arch, min_arch, sample_arch


class ForwardClock:
    """Wall seconds spent inside a model's top-level forward calls."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def watch(self, model: nn.Module) -> nn.Module:
        model.register_forward_pre_hook(self._start)
        model.register_forward_hook(self._stop)
        return model

    def _start(self, module: nn.Module, args: object) -> None:
        self._t0 = time.perf_counter()

    def _stop(self, module: nn.Module, args: object, out: object) -> None:
        self.seconds += time.perf_counter() - self._t0


def score_before(ctx: Context, arch, policy, seed: int, clock: ForwardClock) -> float:
    model = clock.watch(ctx.space.build_from_fp(ctx.fp_state, arch, policy))
    rc = ctx.preset.recalibration
    recalibrate(model, ctx.train_set, batches=rc.batches, batch_size=rc.batch_size, seed=seed)
    return evaluate(model, ctx.val_set, batch_size=ctx.preset.data.eval_batch_size)


def score_after(ctx: Context, arch, policy, seed: int, clock: ForwardClock) -> float:
    return ctx.score(clock.watch(ctx.subnet(arch, policy)), seed=seed)


def bench_scoring(ctx: Context, rounds: int, subnets: int) -> dict[str, float]:
    rng = random.Random(0)
    samples = []
    for _ in range(rounds * subnets):
        arch = ctx.space.sample_arch(rng)
        samples.append((arch, ctx.space.sample_policy(arch, rng)))
    ctx.subnet(*samples[0])  # the kept FP supernet is built once, before timing
    totals = {"before": 0.0, "after": 0.0}
    forward = {"before": ForwardClock(), "after": ForwardClock()}
    for r in range(rounds):
        chunk = samples[r * subnets : (r + 1) * subnets]
        for name, fn in (("before", score_before), ("after", score_after)):
            t0 = time.perf_counter()
            accs = [
                fn(ctx, arch, policy, i, forward[name]) for i, (arch, policy) in enumerate(chunk)
            ]
            totals[name] += time.perf_counter() - t0
            assert all(0.0 <= a <= 100.0 for a in accs)
    n = rounds * subnets
    return {
        "subnets": n,
        "before_per_min": round(60 * n / totals["before"], 1),
        "after_per_min": round(60 * n / totals["after"], 1),
        "before_outside_forward": round(1 - forward["before"].seconds / totals["before"], 3),
        "after_outside_forward": round(1 - forward["after"].seconds / totals["after"], 3),
    }


def old_sandwich_step(seed: int, num_random: int = 2):
    """The hard-wired FP sandwich step before the toolkit (verbatim logic)."""
    rng = random.Random(seed)
    largest, smallest = max_arch(), min_arch()

    def step(model, x, y):
        model.set_active(largest)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        teacher = F.softmax(logits.detach(), dim=1)
        for arch in [smallest, *(sample_arch(rng) for _ in range(num_random))]:
            model.set_active(arch)
            loss = loss + soft_cross_entropy(model(x), teacher)
        model.set_active(largest)
        return loss, x.shape[0] * (2 + num_random)

    return step


def bench_sandwich(ctx: Context, rounds: int, steps: int) -> dict[str, float]:
    space = ctx.space
    supernet = ctx.fp_supernet()
    optimizer = make_optimizer(supernet, ctx.preset.supernet)
    loader = make_loader(ctx.train_set, 64, shuffle=True, seed=0, drop_last=True)
    x, y = next(iter(loader))
    steps_by_name = {"old": old_sandwich_step(0), "new": sandwich_step(space, seed=0)}

    def run(name: str) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss, _ = steps_by_name[name](supernet, x, y)
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - t0) / steps

    run("old"), run("new")  # warm-up
    ratios, old_s, new_s = [], [], []
    for _ in range(rounds):
        a, b = run("old"), run("new")
        old_s.append(a)
        new_s.append(b)
        ratios.append(b / a)
    return {
        "old_step_s": round(statistics.median(old_s), 4),
        "new_step_s": round(statistics.median(new_s), 4),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--subnets", type=int, default=4, help="subnets per scoring round")
    parser.add_argument("--steps", type=int, default=3, help="sandwich steps per timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    preset = load_preset("smoke")
    splits = load_splits("digits", val_fraction=preset.data.val_fraction, seed=0)
    space = get_space("mbv3-cifar")
    fp_state, _ = fp_starting_point(space, splits, preset, seed=0)
    ctx = Context.create(
        Task("mbv3-cifar", "digits", "smoke", "bitops<=0.3", 0),
        space,
        preset,
        splits,
        fp_state,
        budget=Budget(1e9, 10**12),
        workdir=Path(tempfile.mkdtemp()),
    )
    out = {
        "threads": args.threads,
        "scoring": bench_scoring(ctx, args.rounds, args.subnets),
        "sandwich_step": bench_sandwich(ctx, args.rounds, args.steps),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
