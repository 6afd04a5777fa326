"""Memory: a process's resident set (RSS) after each of many consecutive trials.

Runs ``--trials`` seeds of one method serially in one process (the serial executor: every
trial in the same interpreter, as a reused Ray worker would run them) and samples that
process's RSS (``/proc/<pid>/status``, Linux) twice a second; prints JSON with the RSS at
each trial's end (MiB), the growth from the first trial's end to the last and the peak.
Issue 36 asks whether a reused worker keeps its memory: no growth beyond 10% over 30
Fashion-MNIST trials.

Usage: python scripts/bench_trial_memory.py [--trials 12] [--method uniform]
       [--preset smoke] [--space resnet20] [--method-options JSON] [--cpus 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time


def rss_mib(pid: int) -> float | None:
    """The process's resident set in MiB, or ``None`` once it has ended."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--method", default="uniform")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--space", default="resnet20")
    parser.add_argument("--method-options", default='{"uniform": {"bits": [4]}}')
    parser.add_argument("--cpus", default="1")
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="bench-memory-")
    cmd = [sys.executable, "-m", "benchmark", "run", "--executor", "serial"]
    cmd += ["--methods", args.method, "--space", args.space, "--preset", args.preset]
    cmd += ["--seeds", ",".join(map(str, range(args.trials))), "--out", out]
    cmd += ["--run-id", "memory", "--no-leaderboard", "--cpus-per-trial", args.cpus]
    cmd += ["--method-options", args.method_options]
    run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ends: list[float] = []

    def read_lines() -> None:  # each trial's summary line marks its end
        for line in run.stderr:
            if ": ok" in line or ": failed" in line:
                ends.append(time.time())

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    samples: list[tuple[float, float]] = []
    while run.poll() is None:
        value = rss_mib(run.pid)
        if value is not None:
            samples.append((time.time(), value))
        time.sleep(0.5)
    reader.join(timeout=5)
    at_ends = [[r for t, r in samples if t <= end][-1] for end in ends if samples]
    growth = (at_ends[-1] / at_ends[0] - 1) if len(at_ends) >= 2 else float("nan")
    print(json.dumps({
        "device": "cpu",
        "trials": len(ends),
        "command": " ".join(cmd[1:]),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rss_mib_at_trial_ends": [round(r, 1) for r in at_ends],
        "growth_first_to_last": round(growth, 3),
        "peak_mib": round(max((r for _, r in samples), default=float("nan")), 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
