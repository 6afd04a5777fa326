"""Cost of HAWQ's sensitivity: Hessian-vector products per layer, and one whole search.

Usage: python scripts/bench_hawq.py [--space resnet20] [--batch-size 16] [--vectors 3]
       [--threads 1] [--inputs] [--native-grouped-conv] [--search] [--max-iter 10]

Part 1 (always): builds the space's reference architecture (untrained weights: the work of
a product does not depend on their values), one :class:`HessianProbe` on ``--batch-size``
random 32×32 images, then times ``--vectors`` Hessian-vector products per target (each
layer's weight; with ``--inputs`` also its input activations), in rounds as the method
runs them. Prints JSON: the probe's build seconds, per target the median seconds of a
product, and per round (one product per target) the total, wall and CPU (process) time.
``--native-grouped-conv`` runs grouped (depthwise) convolutions with torch's own double
backward instead of :func:`benchmark.arena.hessian.grouped_conv2d`, for comparison.

Part 2 (``--search``): one ``HAWQ(max_iter=..., batch_size=..., batches=1).search(ctx)`` on
digits (smoke preset, untrained FP weights), wall seconds and samples charged.

Every result says where it ran: platform, CPU count, torch threads, torch version and the
1-minute load average before and after (the numbers move with other jobs on the machine).
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

from benchmark.arena import HessianProbe, get_space
from benchmark.arena.context import Context
from benchmark.arena.data import load_splits
from benchmark.arena.hessian import HutchinsonTrace
from benchmark.arena.presets import load_preset
from benchmark.arena.protocol import Budget, Task
from benchmark.arena.spaces.base import ElasticSearchSpace, SearchSpace
from methods.hawq import HAWQ


def where() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": "cpu",
    }


def fp_model(space: SearchSpace) -> torch.nn.Module:
    arch = space.reference_arch
    if isinstance(space, ElasticSearchSpace):
        return space.extract(space.build_supernet(), arch)
    return space.build(arch)


def time_products(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per Hessian-vector product, per target and per round."""
    space = get_space(args.space)
    model = fp_model(space)
    layers = space.searchable_layers(space.reference_arch)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (args.batch_size,), generator=g)
    start = time.perf_counter()
    probe = HessianProbe(
        model,
        layers,
        [(images, labels)],
        inputs=args.inputs,
        grouped_conv=not args.native_grouped_conv,
    )
    build = time.perf_counter() - start
    running = {
        t: HutchinsonTrace(probe.shapes(t), max_iter=args.vectors, tol=0.0, generator=g)
        for t in probe.targets
    }
    per_target: dict[str, list[float]] = {t.name: [] for t in probe.targets}
    rounds = []
    for _ in range(args.vectors):
        wall, cpu = time.perf_counter(), time.process_time()
        for target, estimate in running.items():
            t0 = time.perf_counter()
            estimate.step(lambda v, t=target: probe.hvp(t, v), probe.like())
            per_target[target.name].append(time.perf_counter() - t0)
        rounds.append({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu})
    medians = {name: statistics.median(times) for name, times in per_target.items()}
    return {
        "space": args.space,
        "layers": len(layers),
        "targets": len(probe.targets),
        "batch_size": args.batch_size,
        "inputs": args.inputs,
        "grouped_conv": "torch" if args.native_grouped_conv else "grouped_conv2d",
        "probe_build_s": build,
        "median_product_s": statistics.median(medians.values()),
        "max_product_s": max(medians.values()),
        "round_wall_s": [r["wall_s"] for r in rounds],
        "round_cpu_s": [r["cpu_s"] for r in rounds],
        "per_target_median_s": medians,
    }


def time_search(args: argparse.Namespace) -> dict[str, Any]:
    """One whole HAWQ search on digits (smoke preset), untrained FP weights."""
    preset = load_preset("smoke")
    splits = load_splits("digits", val_fraction=preset.data.val_fraction, seed=0)
    space = get_space(args.space, num_classes=splits.num_classes)
    if isinstance(space, ElasticSearchSpace):
        fp_state = space.build_supernet().state_dict()
    else:
        fp_state = space.build().state_dict()
    with tempfile.TemporaryDirectory() as workdir:
        ctx = Context.create(
            Task(space.name, "digits", preset.name, args.constraint, 0),
            space,
            preset,
            splits,
            fp_state,
            budget=Budget(10**6, 10**9),
            workdir=Path(workdir),
            log=logging.getLogger("bench_hawq"),
        )
        method = HAWQ(
            HAWQ.configure(preset),
            batches=1,
            batch_size=args.batch_size,
            max_iter=args.max_iter,
            activations="free" if args.inputs else "tied",
        )
        start = time.perf_counter()
        result = method.search(ctx)
        seconds = time.perf_counter() - start
    log = result.log
    return {
        "constraint": args.constraint,
        "search_s": seconds,
        "samples": ctx.budget.samples,
        "rounds": log["rounds"],
        "offers": log["offers"],
        "ilp_status": log["ilp"]["status"],
        "converged_targets": sum(t["converged"] for t in log["traces"].values()),
        "targets": len(log["traces"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--vectors", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--inputs", action="store_true", help="input-activation targets too")
    parser.add_argument("--native-grouped-conv", action="store_true")
    parser.add_argument("--search", action="store_true", help="also time one HAWQ search")
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--constraint", default="bitops<=0.4")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"where": where(), "load_before": os.getloadavg()[0]}
    out["products"] = time_products(args)
    if args.search:
        out["search"] = time_search(args)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
