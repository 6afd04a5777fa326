"""Speed: Ray executor vs serial executor on the same baseline trials.

Runs the same 4 trials (uniform and random on resnet20, seeds 0 and 1, smoke preset)
several ways and prints JSON with wall seconds and ratios. ``--trials short`` (default)
shortens them (uniform W3A3 only; random with 6 samples / 1 candidate: about 15 s each
on 2 cores), which shows Ray's fixed cost at its worst; ``--trials default`` runs the
baselines with their default options (all of W8A8..W2A2; 16 samples / 2 candidates):

- serial, trials at ``--cpus`` threads each, one after another;
- ray, same per-trial CPUs (one trial at a time on a 2-core machine): the overhead;
- ray, 1-thread trials, 2 concurrent (vs serial with 1 thread each).

The FP checkpoint is pre-built first so no variant pays for it. The sides are interleaved
(serial, ray, serial, ray, ... over ``--rounds``), so machine noise falls on both alike; a
ratio is the median of the rounds' ratios, with their min and max beside it. Targets:
overhead ratio <= 1.05 (issue 36; 1.15 in issue 4); concurrent ray no slower than serial.

Usage: python scripts/bench_runner.py [--cpus 2] [--trials short|default] [--rounds 3]
       [--no-concurrent] [--out /tmp/bench-runner]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHORT = '{"uniform": {"bits": [3]}, "random": {"num_samples": 6, "top_k": 1}}'


def timed_run(
    out: Path, cache: Path, run_id: str, executor: str, cpus: float, options: str
) -> float:
    cmd = [
        sys.executable,
        "-m",
        "benchmark",
        "run",
        "--methods",
        "uniform,random",
        "--space",
        "resnet20",
        "--seeds",
        "0,1",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--run-id",
        run_id,
        "--cache-dir",
        str(cache),
        "--executor",
        executor,
        "--cpus-per-trial",
        str(cpus),
        "--no-leaderboard",
        "--method-options",
        options,
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def ratio_summary(numerators: list[float], denominators: list[float]) -> dict[str, float]:
    """The median of the rounds' ratios (each round's pair measured side by side), their
    min and max, and how many rounds."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    return {
        "median": round(statistics.median(ratios), 3),
        "min": round(min(ratios), 3),
        "max": round(max(ratios), 3),
        "rounds": len(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=float, default=2.0)
    parser.add_argument("--trials", choices=("short", "default"), default="short")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--no-concurrent", action="store_true", help="skip the 1-thread runs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.cpus * 2 <= (os.cpu_count() or 1):  # Ray would run trials side by side
        parser.error(
            f"--cpus {args.cpus:g} lets Ray run {int((os.cpu_count() or 1) // args.cpus)} "
            f"trials at once where serial runs one: the overhead needs --cpus {os.cpu_count()}"
        )
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-runner-"))
    cache = out / "cache"
    options = SHORT if args.trials == "short" else "{}"
    timed_run(out, cache, "warm-cache", "serial", args.cpus, options)  # builds FP checkpoints
    times: dict[str, list[float]] = {"serial": [], "ray": [], "serial-1t": [], "ray-1t": []}
    sides = [("serial", "serial", args.cpus), ("ray", "ray", args.cpus)]
    if not args.no_concurrent:
        sides += [("serial-1t", "serial", 1), ("ray-1t", "ray", 1)]
    for round_ in range(args.rounds):  # A, B, A, B, ...: noise falls on both sides
        for name, executor, cpus in sides:
            times[name].append(timed_run(out, cache, f"{name}-{round_}", executor, cpus, options))
    result = {
        "device": "cpu",
        "trials": f"4 ({args.trials})",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "serial_s": round(statistics.median(times["serial"]), 1),
        "ray_s": round(statistics.median(times["ray"]), 1),
        "overhead_ratio": ratio_summary(times["ray"], times["serial"]),
        "targets": {"overhead_ratio": 1.05, "concurrent_ratio": 1.0},
    }
    if not args.no_concurrent:
        result["serial_1thread_s"] = round(statistics.median(times["serial-1t"]), 1)
        result["ray_2x1thread_concurrent_s"] = round(statistics.median(times["ray-1t"]), 1)
        result["concurrent_ratio"] = ratio_summary(times["ray-1t"], times["serial-1t"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
