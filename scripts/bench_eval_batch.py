"""Speed: evaluation's images per second against its batch size (issue 36).

Usage: python scripts/bench_eval_batch.py [--space resnet20] [--threads 1]
       [--sizes 50,100,200,500] [--images 2000] [--rounds 3] [--data-dir DIR]

Times ``evaluate`` (the harness's top-1 pass: eval mode, ``torch.inference_mode``, the
loader every trial uses) of ``--space``'s reference network in FP and at uniform W4A4 LSQ
on the first
``--images`` Fashion-MNIST test images, at each batch size of ``--sizes``. The sizes
alternate within each round (50, 100, ..., 50, 100, ...) so that the machine's noise falls
on all of them; prints, per model and size, the median images per second over the rounds
with min and max, and each size's speed relative to the largest, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch.utils.data import Subset

from benchmark.arena.data import load_splits
from benchmark.arena.recipes.scoring import evaluate
from benchmark.arena.spaces import get_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="resnet20", choices=("resnet20", "mbv3-cifar"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="50,100,200,500")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()
    splits = load_splits("fashion-mnist", args.data_dir, val_fraction=0.2, seed=0)
    test = Subset(splits.test, range(min(args.images, len(splits.test))))
    space = get_space(args.space)
    arch = space.reference_arch
    models = {
        "fp": space.build(arch),
        "w4a4": space.build(arch, policy=space.uniform_policy(4, arch=arch)),
    }
    for model in models.values():  # warm-up; LSQ steps initialised on one training batch
        model.train()(torch.stack([splits.train[i][0] for i in range(64)]))
        evaluate(model, Subset(test, range(100)), batch_size=100)
    speed: dict[str, dict[int, list[float]]] = {m: {s: [] for s in sizes} for m in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            for size in sizes:
                t0 = time.perf_counter()
                evaluate(model, test, batch_size=size)
                speed[name][size].append(len(test) / (time.perf_counter() - t0))
    result: dict[str, object] = {
        "space": args.space,
        "threads": args.threads,
        "images": len(test),
        "rounds": args.rounds,
        "load_average_before": [round(x, 2) for x in load_before],
    }
    for name, by_size in speed.items():
        largest = statistics.median(by_size[max(sizes)])
        result[name] = {
            str(size): {
                "images_per_s": round(statistics.median(v), 1),
                "min": round(min(v), 1),
                "max": round(max(v), 1),
                "vs_largest": round(statistics.median(v) / largest, 3),
            }
            for size, v in by_size.items()
        }
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
