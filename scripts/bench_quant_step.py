"""Speed: ResNet-20 W4A4 LSQ training step vs the FP32 step (same batch, CPU threads).

Usage: python scripts/bench_quant_step.py [--threads 2] [--batch 128] [--steps 10] [--rounds 5]
The two sides alternate (FP, W4A4, FP, W4A4, ...) over ``--rounds`` rounds of ``--steps``
steps; prints each side's median step seconds, the median of the rounds' ratios with their
min and max (target: W4A4/FP32 <= 1.10, issue 36; 1.3 in issue 2), the load, and which
LSQ implementation ran (``lsq_path``: ``fused`` C++ kernel or ``python``). To time the PyTorch
implementation instead: ``MPQBENCH_LSQ_KERNEL=python python scripts/bench_quant_step.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from benchmark.arena.quant import lsq_kernel
from benchmark.arena.quant.lsq import lsq_path
from benchmark.arena.spaces import get_space


def time_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        if i >= 3:  # warm-up (LSQ step-size initialisation, allocator)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = get_space("resnet20")
    x = torch.randn(args.batch, 3, 32, 32, device=args.device)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    fp = space.build().to(args.device).train()
    q = space.build(policy=space.uniform_policy(4)).to(args.device).train()
    q.load_state_dict(fp.state_dict())
    # which LSQ implementation the activations (and weights) use; builds the kernel if needed
    path = lsq_path(x, torch.ones(1, device=args.device))
    load_s = lsq_kernel.load_seconds()  # build or cache load, seconds (None: not tried)
    # interleave to share machine noise
    fp_t, q_t = [], []
    for _ in range(args.rounds):
        fp_t.append(time_steps(fp, x, y, args.steps))
        q_t.append(time_steps(q, x, y, args.steps))
    fp_s, q_s = statistics.median(fp_t), statistics.median(q_t)
    ratios = [b / a for a, b in zip(fp_t, q_t, strict=True)]
    print(
        json.dumps(
            {
                "device": args.device,
                "threads": args.threads,
                "batch": args.batch,
                "fp32_step_s": round(fp_s, 4),
                "w4a4_step_s": round(q_s, 4),
                "ratio": round(statistics.median(ratios), 3),
                "ratio_min": round(min(ratios), 3),
                "ratio_max": round(max(ratios), 3),
                "rounds": args.rounds,
                "target_ratio": 1.10,
                "load_average": [round(v, 2) for v in os.getloadavg()],
                "lsq_path": path,
                "lsq_kernel_load_s": None if load_s is None else round(load_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
