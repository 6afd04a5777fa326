"""Speed: Ray executor vs serial executor on the same baseline trials.

Runs the same 4 trials (uniform W3A3 and random with 6 samples / 1 candidate on
resnet20, seeds 0 and 1, smoke preset: about 15-30 s each on 2 cores) several ways and
prints JSON with wall seconds and ratios:

- serial, trials at ``--cpus`` threads each, one after another;
- ray, same per-trial CPUs (one trial at a time on a 2-core machine): the overhead;
- ray, 1-thread trials, 2 concurrent (vs serial with 1 thread each).

The FP checkpoint is pre-built first so no variant pays for it. Targets (issue 4):
overhead ratio <= 1.15; concurrent ray no slower than serial.

Usage: python scripts/bench_runner.py [--cpus 2] [--out /tmp/bench-runner]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_run(out: Path, cache: Path, run_id: str, executor: str, cpus: float) -> float:
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
        '{"uniform": {"bits": [3]}, "random": {"num_samples": 6, "top_k": 1}}',
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=float, default=2.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-runner-"))
    cache = out / "cache"
    timed_run(out, cache, "warm-cache", "serial", args.cpus)  # builds the FP checkpoints
    serial = timed_run(out, cache, "serial", "serial", args.cpus)
    ray_same = timed_run(out, cache, "ray", "ray", args.cpus)
    serial_1 = timed_run(out, cache, "serial-1t", "serial", 1)
    ray_conc = timed_run(out, cache, "ray-1t", "ray", 1)
    print(
        json.dumps(
            {
                "device": "cpu",
                "trials": 4,
                "serial_s": round(serial, 1),
                "ray_s": round(ray_same, 1),
                "overhead_ratio": round(ray_same / serial, 3),
                "serial_1thread_s": round(serial_1, 1),
                "ray_2x1thread_concurrent_s": round(ray_conc, 1),
                "concurrent_ratio": round(ray_conc / serial_1, 3),
                "targets": {"overhead_ratio": 1.15, "concurrent_ratio": 1.0},
            }
        )
    )


if __name__ == "__main__":
    main()
