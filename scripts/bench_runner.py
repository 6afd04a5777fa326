"""Speed: Ray executor vs serial executor on the same baseline trials.

Runs the same 4 trials (uniform and random on resnet20, seeds 0 and 1, smoke preset)
several ways and prints JSON with wall seconds and ratios. ``--trials short`` (default)
shortens them (uniform W3A3 only; random with 6 samples / 1 candidate: about 15 s each
on 2 cores), which shows Ray's fixed cost at its worst; ``--trials default`` runs the
baselines with their default options (all of W8A8..W2A2; 16 samples / 2 candidates):

- serial, trials at ``--cpus`` threads each, one after another;
- ray, same per-trial CPUs (one trial at a time on a 2-core machine): the overhead;
- ray, 1-thread trials, 2 concurrent (vs serial with 1 thread each).

The FP checkpoint is pre-built first so no variant pays for it. Targets (issue 4):
overhead ratio <= 1.15; concurrent ray no slower than serial.

Usage: python scripts/bench_runner.py [--cpus 2] [--trials short|default]
       [--no-concurrent] [--out /tmp/bench-runner]
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=float, default=2.0)
    parser.add_argument("--trials", choices=("short", "default"), default="short")
    parser.add_argument("--no-concurrent", action="store_true", help="skip the 1-thread runs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-runner-"))
    cache = out / "cache"
    options = SHORT if args.trials == "short" else "{}"
    timed_run(out, cache, "warm-cache", "serial", args.cpus, options)  # builds FP checkpoints
    serial = timed_run(out, cache, "serial", "serial", args.cpus, options)
    ray_same = timed_run(out, cache, "ray", "ray", args.cpus, options)
    result = {
        "device": "cpu",
        "trials": f"4 ({args.trials})",
        "serial_s": round(serial, 1),
        "ray_s": round(ray_same, 1),
        "overhead_ratio": round(ray_same / serial, 3),
        "targets": {"overhead_ratio": 1.15, "concurrent_ratio": 1.0},
    }
    if not args.no_concurrent:
        serial_1 = timed_run(out, cache, "serial-1t", "serial", 1, options)
        ray_conc = timed_run(out, cache, "ray-1t", "ray", 1, options)
        result["serial_1thread_s"] = round(serial_1, 1)
        result["ray_2x1thread_concurrent_s"] = round(ray_conc, 1)
        result["concurrent_ratio"] = round(ray_conc / serial_1, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
