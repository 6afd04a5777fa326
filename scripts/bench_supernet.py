"""Speed of the ``mbv3-cifar`` supernet: slicing overhead and smoke FP supernet pretraining.

Usage: python scripts/bench_supernet.py [--threads 2] [--batch 128] [--steps 5] [--no-pretrain]

Prints JSON with, for FP (every layer) and W4A4 (stem and classifier at 8 bits): the
median seconds of one forward+backward of the largest subnet run inside the supernet and
of the same subnet extracted as a static net, and their ratio (target <= 1.25); then the
wall seconds of the real smoke ``pretrain_supernet`` call on digits with an empty cache
(target <= 120 s on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from torch import nn

from benchmark.arena.data import load_splits
from benchmark.arena.presets import load_preset
from benchmark.arena.recipes.pretrain import pretrain_supernet
from benchmark.arena.spaces import get_space
from benchmark.arena.spaces.mbv3.arch import max_arch


def fwd_bwd_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Median wall seconds of one forward + backward (after 2 warm-up steps)."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    times = []
    for i in range(steps + 2):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss_fn(model(x), y).backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def slicing_overhead(policy: str, batch: int, steps: int, rounds: int = 3) -> dict[str, float]:
    space = get_space("mbv3-cifar")
    torch.manual_seed(0)
    supernet = space.build_supernet()
    space.set_active(supernet, max_arch(), None if policy == "fp" else policy)
    static = space.extract(supernet, max_arch())
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    super_t, static_t = [], []
    for _ in range(rounds):  # interleaved so both see the same machine noise
        super_t.append(fwd_bwd_seconds(supernet, x, y, steps))
        static_t.append(fwd_bwd_seconds(static, x, y, steps))
    s, t = min(super_t), min(static_t)
    return {"supernet_s": round(s, 4), "static_s": round(t, 4), "ratio": round(s / t, 3)}


def smoke_pretraining() -> dict[str, float]:
    preset = load_preset("smoke")
    splits = load_splits("digits", val_fraction=preset.data.val_fraction, seed=0)
    space = get_space("mbv3-cifar")
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        _, info = pretrain_supernet(space, splits, preset, seed=0, cache_dir=cache)
        wall = time.perf_counter() - start
    return {
        "wall_s": round(wall, 1),
        "train_s": round(info["seconds"], 1),
        "steps": info["steps"],
        "samples": info["samples"],
        "largest_test_top1": round(info["subnets"]["largest"]["test_top1"], 2),
        "smallest_test_top1": round(info["subnets"]["smallest"]["test_top1"], 2),
        "reference_test_top1": round(info["subnets"]["reference"]["test_top1"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--no-pretrain", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, object] = {"threads": args.threads, "batch": args.batch}
    for policy in ("fp", "w4a4"):  # fp: every layer FP; w4a4: stem/classifier at 8 bits
        result[f"max_subnet_fwd_bwd_{policy}"] = slicing_overhead(policy, args.batch, args.steps)
    if not args.no_pretrain:
        result["smoke_supernet_pretraining"] = smoke_pretraining()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
