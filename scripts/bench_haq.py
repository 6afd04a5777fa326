"""Speed of the ``haq`` search on digits with a preset's ``[methods.haq]`` length.

Usage: python scripts/bench_haq.py [--space resnet20] [--preset smoke] [--threads 2]
       [--constraint bitops<=0.3] [--episodes N] [--cost-table FILE] [--cache-dir DIR]

Gets the space's FP checkpoint for the preset on digits (from the cache; trained once if
missing, not timed), then runs one ``HAQ().search(ctx)`` and times it: the whole search,
the time inside the per-episode finetune (``ctx.finetune``, model building included) and
scoring (``ctx.score``, the FP score included), and the rest (the agent's actions and
updates, the constraint loop, checkpoints and bookkeeping). Prints JSON with episodes per
minute and the share of the search outside finetune and scoring. Targets (smoke, resnet20,
2 cores): search ≤ 120 s, outside share < 10%.

On a machine shared with other jobs the wall times say little by themselves, so the
script also times a plain FP32 ResNet-20 training step (batch 128, the same threads)
before and after the search, and scales the search time by the quiet machine's step
(``QUIET_FP32_STEP_S``, docs/benchmarks.md: 0.357–0.405 s on 2 threads) as an estimate.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmark.arena.cache import default_cache_dir
from benchmark.arena.context import Context
from benchmark.arena.data import load_splits
from benchmark.arena.presets import load_preset
from benchmark.arena.protocol import Budget, Task
from benchmark.arena.recipes.pretrain import fp_starting_point
from benchmark.arena.spaces import get_space
from methods import get_method
from methods.haq import HAQ

QUIET_FP32_STEP_S = 0.38
"""FP32 ResNet-20 step at batch 128 on the project's 2-core machine when quiet (seconds;
the middle of docs/benchmarks.md's 0.357–0.405 s)."""


def fp32_step_seconds(steps: int = 5) -> float:
    """Median seconds of a plain FP32 ResNet-20 training step (batch 128, random data)."""
    model = get_space("resnet20").build()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def timed(fn: Callable[..., Any], spent: dict[str, float], key: str) -> Callable[..., Any]:
    """``fn`` adding its wall seconds to ``spent[key]``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="resnet20")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--constraint", default="bitops<=0.3")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=None, help="override the preset's")
    parser.add_argument("--cost-table", default=None)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    preset = load_preset(args.preset)
    data = preset.data
    splits = load_splits(
        "digits", val_fraction=data.val_fraction, seed=0, train_subset=data.train_subset,
        augment=data.augment,
    )  # fmt: skip
    space = get_space(args.space, num_classes=splits.num_classes)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    fp_state, _ = fp_starting_point(space, splits, preset, seed=0, cache_dir=cache)
    config = get_method("haq").configure(preset, {"cost_table": args.cost_table})
    if args.episodes is not None:
        config = replace(config, episodes=args.episodes)

    spent = {"finetune": 0.0, "score": 0.0}
    load_before = os.getloadavg()[0]
    step_before = fp32_step_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        task = Task(space.name, "digits", preset.name, args.constraint, 0)
        ctx = Context.create(
            task, space, preset, splits, fp_state, budget=Budget(3600.0, 10**9),
            workdir=Path(tmp), log=logging.getLogger("bench_haq"),
        )  # fmt: skip
        ctx.finetune = timed(ctx.finetune, spent, "finetune")  # type: ignore[method-assign]
        ctx.score = timed(ctx.score, spent, "score")  # type: ignore[method-assign]
        start = time.perf_counter()
        result = HAQ(config).search(ctx)
        total = time.perf_counter() - start
    step = (step_before + fp32_step_seconds()) / 2
    episodes = result.log["episodes"]
    inside = spent["finetune"] + spent["score"]
    best = result.candidates[0]
    report = {
        "space": args.space,
        "preset": args.preset,
        "constraint": args.constraint,
        "haq_config": config.__dict__,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}",
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "search_seconds": round(total, 2),
        "episodes": len(episodes),
        "episodes_per_minute": round(60 * len(episodes) / total, 2),
        "finetune_seconds": round(spent["finetune"], 2),
        "score_seconds": round(spent["score"], 2),
        "outside_seconds": round(total - inside, 2),
        "outside_share": round((total - inside) / total, 4),
        "samples": ctx.budget.samples,
        "fp32_step_seconds": round(step, 3),
        "estimated_quiet_search_seconds": round(total * QUIET_FP32_STEP_S / step, 1),
        "targets": {"search_seconds": 120.0, "outside_share": 0.10},
        "best": {
            "episode": best.meta["episode"],
            "proxy_val_top1": best.meta["proxy_val_top1"],
            "of_limit": {k: v for k, v in best.meta.items() if k.endswith("_of_limit")},
        },
        "fp_val_top1": result.log["fp_val_top1"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
