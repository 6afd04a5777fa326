"""Speed of the ``ompq`` search (taps + ORM + LP + rounding) with the FP checkpoint given.

Usage: python scripts/bench_ompq.py [--space resnet20] [--constraint bitops<=0.3]
       [--repeats 7] [--threads 2] [--solver lp] [--random-init] [--cache-dir DIR]

Gets the space's smoke FP checkpoint on digits (from the cache; trained once if missing,
not timed; ``--random-init`` skips training and uses untrained weights, same work), then
times ``OMPQ().search(ctx)`` ``--repeats`` times on fresh contexts. Prints JSON: the first
(cold: the space's layer profiles are computed inside it) and the median / min / max of
the rest (warm), plus a one-off breakdown of the stages. Target: median <= 2 s on 2 cores
for resnet20.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmark.arena.cache import default_cache_dir
from benchmark.arena.context import Context
from benchmark.arena.data import DataSplits, fixed_batch, load_splits
from benchmark.arena.presets import Preset, load_preset
from benchmark.arena.protocol import Budget, Task
from benchmark.arena.recipes.pretrain import fp_starting_point
from benchmark.arena.spaces import get_space
from benchmark.arena.spaces.base import SearchSpace
from methods.ompq import OMPQ, tap_grams, task_budget
from methods.ompq_orm import (
    BitProblem,
    gamma,
    importance,
    objective_coefs,
    orm_from_grams,
    round_floor_ceil,
    solve_ilp,
    solve_lp,
)


def make_context(
    space: SearchSpace,
    splits: DataSplits,
    preset: Preset,
    fp_state: dict,
    constraint: str,
    workdir: Path,
    seed: int = 0,
) -> Context:
    """A harness-like :class:`Context` for one ompq search (CPU)."""
    task = Task(space.name, "digits", preset.name, constraint, seed)
    return Context.create(
        task,
        space,
        preset,
        splits,
        fp_state,
        budget=Budget(600.0, 10**9),
        workdir=workdir,
        log=logging.getLogger("bench_ompq"),
    )


def stage_breakdown(ctx: Context, method: OMPQ) -> dict[str, float]:
    """Seconds of each stage of one search, run piece by piece (warm space)."""
    times: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[name] = now - t
        t = now

    space, arch = ctx.space, ctx.space.reference_arch
    choices = method.weight_choices(space)
    model = space.build_from_fp(ctx.fp_state, arch)
    lap("build_model")
    taps, _ = space.feature_taps(model, arch)
    budget = task_budget(ctx, arch, taps, method.config.a_bits)
    lap("taps_and_costs")
    images, _ = fixed_batch(ctx.train_set, method.config.batch_size, ctx.task.seed)
    lap("fixed_batch")
    grams = tap_grams(model, taps, images)
    lap("forward_and_grams")
    orm, _ = orm_from_grams(grams)
    coefs = objective_coefs(importance(gamma(orm), method.config.beta)[1])
    lap("orm_gamma_theta")
    problem = BitProblem(coefs, budget.unit_costs, budget.limit - budget.fixed, choices)
    lp_bits, _ = solve_lp(problem)
    lap("lp_cbc")
    rounded = round_floor_ceil(problem, lp_bits)
    lap("rounding")
    solve_ilp(problem, incumbent=rounded.bits)
    lap("ilp_cbc (variant, not in the default search)")
    return {k: round(v, 4) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="resnet20")
    parser.add_argument("--constraint", default="bitops<=0.3")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--solver", default="lp", choices=["lp", "ilp", "both"])
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    preset = load_preset("smoke")
    splits = load_splits("digits", val_fraction=preset.data.val_fraction, seed=0)
    space = get_space(args.space, num_classes=splits.num_classes)
    if args.random_init:
        torch.manual_seed(0)
        build = getattr(space, "build_supernet", space.build)
        fp_state, source = build().state_dict(), "random init"
    else:
        cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        fp_state, _ = fp_starting_point(space, splits, preset, seed=0, cache_dir=cache)
        source = f"smoke FP checkpoint ({cache})"

    load_before = os.getloadavg()[0]
    times: list[float] = []
    result: Any = None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            if i == 0:  # cold: a fresh space instance, profiles not cached yet
                space = get_space(args.space, num_classes=splits.num_classes)
            ctx = make_context(space, splits, preset, fp_state, args.constraint, Path(tmp))
            method = OMPQ(solver=args.solver)
            start = time.perf_counter()
            result = method.search(ctx)
            times.append(time.perf_counter() - start)
        breakdown = stage_breakdown(ctx, OMPQ())
    warm = times[1:] or times
    report = {
        "space": args.space,
        "constraint": args.constraint,
        "solver": args.solver,
        "fp_state": source,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "repeats": args.repeats,
        "cold_seconds": round(times[0], 4),
        "warm_median_seconds": round(statistics.median(warm), 4),
        "warm_min_seconds": round(min(warm), 4),
        "warm_max_seconds": round(max(warm), 4),
        "target_seconds": 2.0,
        "meets_target": statistics.median(warm) <= 2.0,
        "stages_seconds": breakdown,
        "candidates": [
            {
                "label": c.label,
                "constraint_ratio_w8a8": c.meta["constraint_ratio_w8a8"],
                "w_bits": [b.w_bits for b in c.policy.values()],
            }
            for c in result.candidates
        ],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
