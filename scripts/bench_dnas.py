"""Speed and memory of one DNAS search epoch against one FP training epoch of the same net.

Usage: python scripts/bench_dnas.py [--space resnet20] [--threads 2] [--rounds 5]
                                    [--variants shared,separate] [--no-memory]
       python scripts/bench_dnas.py --smoke [--empty-cache]

Task: the space's reference architecture on digits, the smoke preset, ``bitops<=0.3``,
seed 0; the FP checkpoint from the cache (``$MPQBENCH_CACHE``; trained once if missing).

- ``fp``: one epoch of FP training (every layer at 32 bits) over the method's whole train
  split with the shared loop (``ctx.train``), the smoke ``[finetune]`` recipe (batch 64).
- ``shared`` / ``separate``: one DNAS search epoch, ``DNAS(weights=...)`` with
  ``[methods.dnas] epochs = 1``: ``DNAS.prepare`` (not timed) then ``DNAS.train_supernet``
  (timed): weights on 80% of the same split with θ fixed, θ on the other 20% with the
  weights fixed, the end-of-epoch record (and offer). ``shared``: one latent weight per
  layer, the factorised categorical (one convolution per layer); ``separate``: one weight
  per (w, a) branch, the pair categorical (one convolution per activation bit-width).

Timing rounds interleave the sides in one process (fp, shared, separate, fp, ...); each
round's ratio divides a variant's epoch by that round's FP epoch; the median and the
min–max over rounds are reported, for wall time and for this process's CPU time (less
moved by other jobs on a shared machine). Peak memory is measured apart, one fresh subprocess per
side (so allocator caches of other sides do not hide it): the resident set's peak above
its value at the epoch's start (MiB, ``/proc/self/statm`` polled every 2 ms), and on a GPU
``torch.cuda.max_memory_allocated`` (MiB). Prints one JSON object.

``--smoke``: instead, the wall time of ``python -m benchmark run --methods dnas`` on its
defaults (smoke preset, ``mbv3-cifar``, digits, Ray), a subprocess writing to a temporary
folder; ``--empty-cache`` points ``--cache-dir`` at an empty folder, so the FP supernet is
trained in the run too (else the user's cache is used). Prints one JSON object with the
wall seconds, the exit code, the machine's load average before and after, and the trial's
search / finetune / evaluation columns from the records.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from benchmark.arena import Budget, Context, Task, get_space
from benchmark.arena.data import load_splits
from benchmark.arena.presets import load_preset
from benchmark.arena.recipes.pretrain import fp_starting_point
from methods.dnas import DNAS

SIDES = ("fp", "shared", "separate")


def make_ctx(space_name: str, device: str) -> Context:
    preset = load_preset("smoke")
    splits = load_splits("digits", val_fraction=preset.data.val_fraction, seed=0)
    space = get_space(space_name, num_classes=splits.num_classes)
    fp_state, _ = fp_starting_point(space, splits, preset, seed=0)
    return Context.create(
        Task(space_name, "digits", preset.name, "bitops<=0.3", 0),
        space,
        preset,
        splits,
        fp_state,
        budget=Budget(10**7, 10**12),
        workdir=Path(tempfile.mkdtemp(prefix="bench-dnas-")),
        device=device,
        log=logging.getLogger("bench_dnas"),
    )


def _sync(ctx: Context) -> None:
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)


def run_side(ctx: Context, side: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process, all threads) of one epoch of ``side``."""
    if side == "fp":
        model = ctx.subnet(ctx.space.reference_arch, None)
        recipe = dataclasses.replace(ctx.preset.finetune, epochs=1, max_steps=None)

        def epoch() -> None:
            ctx.train(model, recipe=recipe, desc="fp-epoch")

    else:
        method = DNAS(DNAS.configure(ctx.preset), epochs=1, weights=side)
        run = method.prepare(ctx)

        def epoch() -> None:
            method.train_supernet(ctx, run)

    _sync(ctx)
    wall, cpu = time.perf_counter(), time.process_time()
    epoch()
    _sync(ctx)
    return time.perf_counter() - wall, time.process_time() - cpu


class PeakRSS:
    """The resident set's peak (bytes) while running, polled from ``/proc/self/statm``."""

    def __init__(self, every: float = 0.002) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every)

    def __enter__(self) -> PeakRSS:
        self.start = self.rss()
        self.peak = self.start
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def memory_of(side: str, args: argparse.Namespace) -> dict[str, float]:
    """Run ``side`` once in a fresh subprocess and return its peak memory (MiB)."""
    cmd = [sys.executable, __file__, "--memory-side", side, "--space", args.space,
           "--threads", str(args.threads), "--device", args.device]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_memory(side: str, args: argparse.Namespace) -> dict[str, float]:
    ctx = make_ctx(args.space, args.device)
    if side != "fp":  # build the space's tables first: the epoch is what is measured
        ctx.space.cost_table(ctx.space.reference_arch)
    cuda = ctx.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    with PeakRSS() as rss:
        seconds, _ = run_side(ctx, side)
    result = {"seconds": seconds, "peak_rss_above_start_mib": (rss.peak - rss.start) / 2**20}
    if cuda:
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(ctx.device) / 2**20
    return result


def smoke_run(empty_cache: bool) -> dict[str, object]:
    """Wall seconds of the default ``run --methods dnas`` (see the module docstring)."""
    import pandas as pd

    out = Path(tempfile.mkdtemp(prefix="bench-dnas-smoke-"))
    cmd = [sys.executable, "-m", "benchmark", "run", "--methods", "dnas",
           "--out", str(out), "--run-id", "smoke"]  # fmt: skip
    if empty_cache:
        cmd += ["--cache-dir", str(out / "cache")]
    load_before = os.getloadavg()
    start = time.perf_counter()
    code = subprocess.run(cmd, check=False, stdout=sys.stderr).returncode  # JSON alone on stdout
    seconds = time.perf_counter() - start
    report: dict[str, object] = {
        "command": " ".join(cmd[1:]),
        "exit_code": code,
        "wall_seconds": seconds,
        "empty_cache": empty_cache,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    records = out / "runs" / "smoke" / "records.parquet"
    if records.exists():
        rows = pd.read_parquet(records)
        keep = ["candidate", "track", "status", "feasible", "top1_test", "bitops_ratio_w8a8",
                "search_device_hours", "finetune_device_hours", "eval_seconds"]  # fmt: skip
        report["records"] = rows[[k for k in keep if k in rows]].to_dict("records")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="resnet20")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default="shared,separate")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="time the default CLI run")
    parser.add_argument("--empty-cache", action="store_true", help="with --smoke: no FP cache")
    parser.add_argument("--memory-side", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        print(json.dumps(smoke_run(args.empty_cache), indent=2, default=str))
        return
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if args.memory_side:
        print(json.dumps(measure_memory(args.memory_side, args)))
        return
    variants = [v for v in args.variants.split(",") if v]
    ctx = make_ctx(args.space, args.device)
    run_side(ctx, "shared")  # warm-up: tables, kernels, allocator (not counted)
    wall: dict[str, list[float]] = {side: [] for side in ("fp", *variants)}
    cpu: dict[str, list[float]] = {side: [] for side in wall}
    for round_ in range(args.rounds):
        for side in wall:
            w, c = run_side(ctx, side)
            wall[side].append(w)
            cpu[side].append(c)
            print(f"round {round_}: {side} {w:.2f} s wall, {c:.2f} s cpu", file=sys.stderr)
    report: dict[str, object] = {
        "space": args.space,
        "device": str(ctx.device),
        "threads": args.threads,
        "rounds": args.rounds,
        "train_images": len(ctx.train_set),
        "epoch_seconds_median": {k: statistics.median(v) for k, v in wall.items()},
        "epoch_seconds": wall,
        "epoch_cpu_seconds": cpu,
    }
    for variant in variants:
        for name, clock in (("", wall), ("_cpu", cpu)):
            ratios = [b / a for a, b in zip(clock["fp"], clock[variant], strict=True)]
            report[f"ratio{name}_{variant}_to_fp"] = {
                "median": statistics.median(ratios),
                "min": min(ratios),
                "max": max(ratios),
            }
    if not args.no_memory:
        report["memory"] = {side: memory_of(side, args) for side in ("fp", *variants)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
