"""Speed: one forward + backward of DNAS's PACT activation mixture, fused CPU kernel vs PyTorch.

Usage: python scripts/bench_pact_mixture.py [--threads 1 2] [--bits 2 3 4 8] [--rounds 7]
           [--reps 5] [--shapes 128x16x32x32 128x64x8x8]

For each shape (float32, N×C×H×W) and thread count, times ``mix(PACTQuantizer, x, bits,
softmax(logits))`` forward plus ``backward`` (gradients to ``x``, the logits and the clips
``α``, per-bit slots) through the ``python`` path (``MPQBENCH_PACT_KERNEL=python``: one PACT
autograd function per bit-width, then multiplied and summed) and the ``fused`` one (the C++
kernel), interleaved in one process (A, B, A, B, …) so that both see the same machine noise.
A round times ``--reps`` calls of each path and keeps the median (seconds per call).
Prints one JSON line per (shape, threads): median and min–max of the per-round ratio
python/fused (unitless; > 1: the kernel is faster) and the median seconds per call of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from benchmark.arena.quant import PACTQuantizer, pact_mixture_kernel
from benchmark.arena.quant.mixture import mix
from benchmark.arena.quant.pact import KERNEL_ENV, pact_mixture_path


def step_seconds(
    q: PACTQuantizer, x: torch.Tensor, logits: torch.Tensor, bits: tuple[int, ...], path: str,
    upstream: torch.Tensor, reps: int,
) -> float:  # fmt: skip
    """Median seconds of ``reps`` forward + backward calls through ``path``."""
    os.environ[KERNEL_ENV] = path
    times = []
    for _ in range(reps):
        x.grad = logits.grad = q.alpha.grad = None
        t0 = time.perf_counter()
        out = mix(q, x, bits, logits.softmax(0))
        out.backward(upstream)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(shape: tuple[int, ...], threads: int, bits: tuple[int, ...], rounds: int, reps: int):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(shape).relu_().requires_grad_()  # post-ReLU activations: unsigned PACT
    upstream = torch.randn(shape)
    logits = torch.zeros(len(bits), requires_grad=True)
    q = PACTQuantizer(signed=False, per_bit=True)
    for path in ("python", "auto"):  # warm-up: α initialisation, allocator, kernel build
        step_seconds(q, x, logits, bits, path, upstream, 2)
    assert pact_mixture_path(x, q.alpha) == "fused", pact_mixture_kernel.KERNEL.error
    ratios, py_t, fu_t = [], [], []
    for _ in range(rounds):
        py = step_seconds(q, x, logits, bits, "python", upstream, reps)
        fu = step_seconds(q, x, logits, bits, "auto", upstream, reps)
        py_t.append(py)
        fu_t.append(fu)
        ratios.append(py / fu)
    os.environ.pop(KERNEL_ENV, None)
    return {
        "shape": "x".join(map(str, shape)),
        "threads": threads,
        "bits": list(bits),
        "rounds": rounds,
        "python_s": round(statistics.median(py_t), 5),
        "fused_s": round(statistics.median(fu_t), 5),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 8])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--shapes", nargs="+", default=["128x16x32x32", "128x64x8x8"])
    args = parser.parse_args()
    for spec in args.shapes:
        shape = tuple(int(v) for v in spec.split("x"))
        for threads in args.threads:
            print(json.dumps(bench(shape, threads, tuple(args.bits), args.rounds, args.reps)))
    print(json.dumps({"kernel_load_s": pact_mixture_kernel.load_seconds()}))


if __name__ == "__main__":
    main()
