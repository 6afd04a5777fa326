"""Speed: FP pretraining of a space on digits with a preset (empty cache), and its accuracy.

Usage: python scripts/bench_pretrain.py [--space resnet20] [--preset smoke] [--threads 2]
Prints JSON: wall seconds, steps, test/val top-1 (%). Targets (issue 2, resnet20 smoke):
<= 60 s on 2 cores and >= 95% test top-1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from benchmark.arena.data import load_splits
from benchmark.arena.presets import load_preset
from benchmark.arena.recipes.pretrain import fp_starting_point
from benchmark.arena.spaces import get_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="resnet20")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = load_preset(args.preset)
    splits = load_splits(preset.dataset, val_fraction=preset.data.val_fraction, seed=args.seed)
    space = get_space(args.space, num_classes=splits.num_classes)
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        _, info = fp_starting_point(space, splits, preset, seed=args.seed, cache_dir=cache)
        seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "device": f"cpu ({args.threads} threads)",
                "space": args.space,
                "preset": args.preset,
                "wall_s": round(seconds, 1),
                "train_s": round(info["seconds"], 1),
                "steps": info["steps"],
                "samples": info["samples"],
                "val_top1": round(info["val_top1"], 2),
                "test_top1": round(info["test_top1"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
