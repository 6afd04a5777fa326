"""Speed: the data pipeline's share of a Fashion-MNIST training step (issue 36: goal ≤ 5%).

Usage: python scripts/bench_data_pipeline.py [--preset fmnist] [--threads 1] [--rounds 5]
       [--steps 10] [--data-dir DIR]

The training split of ``--preset``'s dataset (its val fraction, train subset and
augmentation) through the loader every trainer uses (``make_loader``, shuffled, the
preset's finetune batch size). Each round times, one after the other in this process,
``--steps`` batches drawn from the loader alone (A) and ``--steps`` whole training steps of
``resnet20`` (B: draw, forward, backward, SGD) in FP and at uniform W4A4 LSQ; the share is
median(A) / median(B) per round. Prints the median share over the rounds with its min and
max, and the milliseconds per batch, as JSON (with the load average before and after).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from collections.abc import Iterator

import torch

from benchmark.arena.data import load_splits
from benchmark.arena.data.splits import make_loader
from benchmark.arena.presets import load_preset
from benchmark.arena.spaces import get_space


def endless(dataset: torch.utils.data.Dataset, batch: int) -> Iterator[tuple]:
    """Batches of the shuffled loader, epoch after epoch (a new order each epoch)."""
    for epoch in itertools.count():
        yield from make_loader(dataset, batch, shuffle=True, seed=epoch, drop_last=True)


def time_draws(batches: Iterator[tuple], steps: int) -> float:
    """Median seconds to draw one batch."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        next(batches)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_steps(model: torch.nn.Module, batches: Iterator[tuple], steps: int) -> float:
    """Median seconds of one training step, the draw included."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fmnist")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    preset = load_preset(args.preset)
    data = preset.data
    splits = load_splits(
        preset.dataset,
        args.data_dir,
        val_fraction=data.val_fraction,
        seed=0,
        train_subset=data.train_subset,
        augment=data.augment,
    )
    batch = preset.finetune.batch_size
    batches = endless(splits.train, batch)
    space = get_space("resnet20")
    models = {
        "fp": space.build().train(),
        "w4a4": space.build(policy=space.uniform_policy(4)).train(),
    }
    for model in models.values():  # warm-up: LSQ's step initialisation, the allocator
        time_steps(model, batches, 2)
    draws: list[float] = []
    steps: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):  # A, B, A, B, ...: the machine's noise falls on both
        for name, model in models.items():
            draws.append(time_draws(batches, args.steps))
            steps[name].append(time_steps(model, batches, args.steps))
    result = {
        "preset": args.preset,
        "dataset": preset.dataset,
        "batch": batch,
        "augment": data.augment,
        "threads": args.threads,
        "rounds": args.rounds,
        "draw_ms": round(1000 * statistics.median(draws), 2),
        "load_average_before": [round(x, 2) for x in load_before],
    }
    for name, times in steps.items():
        pairs = list(zip(draws[list(models).index(name) :: len(models)], times, strict=True))
        shares = [draw / step for draw, step in pairs]
        result[f"{name}_step_ms"] = round(1000 * statistics.median(times), 1)
        result[f"{name}_share"] = {
            "median": round(statistics.median(shares), 4),
            "min": round(min(shares), 4),
            "max": round(max(shares), 4),
        }
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
