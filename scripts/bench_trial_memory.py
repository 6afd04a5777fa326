"""Memory: a trial process's resident set (RSS) after each of many consecutive trials.

Runs ``--trials`` trials of one method one after another (seeds ``0..--seeds−1``, each at
as many BitOPs limits from 0.30× W8A8 up as it takes: an FP start a seed, so only the
seeds' FP starts are pretrained or read from the cache) and samples RSS (``/proc``,
Linux) twice a second; prints JSON with the RSS at each trial's end (MiB), the growth
from the first trial's end to the last and the peak. Issue 36 asks whether a reused
worker keeps its memory: no growth beyond 10% over 30 Fashion-MNIST trials.

- ``--executor serial``: every trial in the CLI's own process (sampled: that process);
- ``--executor ray``: Ray with one trial at a time (``--cpus-per-trial`` all the CPUs);
  sampled: the trial workers (processes titled ``ray::…``), so a reused worker shows as
  one process whose RSS runs over every trial; a fresh worker a trial as one process each.

``--short-fmnist`` runs the ``fmnist`` preset (all 48,000 training and 10,000 test images,
the FP start from its cache) with the retrain finetune cut to ``--finetune-steps`` steps, so
that 30 trials take minutes, not hours.

Usage: python scripts/bench_trial_memory.py [--trials 12] [--seeds 3] [--method uniform]
       [--preset smoke | --short-fmnist] [--space resnet20] [--method-options JSON]
       [--cpus 1] [--executor serial|ray]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PRESETS = Path(__file__).resolve().parents[1] / "benchmark" / "presets"


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


RAY_DAEMONS = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::Dashboard")


def ray_workers() -> list[int]:
    """The pids of the Ray trial workers (process title ``ray::<Actor>…``, e.g.
    ``ray::ImplicitFunc.train``), not Ray's own agents or idle workers."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                title = cmdline.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and not title.startswith(RAY_DAEMONS):
            pids.append(int(entry))
    return pids


def short_fmnist_preset(folder: Path, steps: int) -> Path:
    """The ``fmnist`` preset with its retrain finetune cut to ``steps`` steps."""
    text = (PRESETS / "fmnist.toml").read_text()
    text, n = re.subn(r"(\[finetune\]\n)", rf"\1max_steps = {steps}\n", text, count=1)
    if n != 1:
        raise SystemExit("bench_trial_memory: fmnist.toml has no [finetune] section")
    path = folder / "fmnist.toml"  # same name: the FP start is found in the cache
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--method", default="uniform")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--short-fmnist", action="store_true", help="the fmnist preset, short")
    parser.add_argument("--finetune-steps", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (cached FP starts)")
    parser.add_argument("--space", default="resnet20")
    parser.add_argument("--method-options", default='{"uniform": {"bits": [4]}}')
    parser.add_argument("--cpus", default="1")
    parser.add_argument("--executor", choices=("serial", "ray"), default="serial")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    preset = (
        str(short_fmnist_preset(out, args.finetune_steps)) if args.short_fmnist else args.preset
    )
    cmd = [sys.executable, "-m", "benchmark", "run", "--executor", args.executor]
    cmd += ["--methods", args.method, "--space", args.space, "--preset", preset]
    seeds = min(args.trials, args.seeds)  # trials beyond the seeds: more constraints
    limits = [f"bitops<={0.30 + 0.01 * i:.2f}" for i in range(-(-args.trials // seeds))]
    cmd += ["--seeds", ",".join(map(str, range(seeds))), "--constraint", ",".join(limits)]
    cmd += ["--out", str(out)]
    cmd += ["--run-id", "memory", "--no-leaderboard", "--cpus-per-trial", args.cpus]
    cmd += ["--method-options", args.method_options]
    run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ends: list[float] = []
    tail: list[str] = []

    def read_lines() -> None:  # each trial's summary line marks its end
        for line in run.stderr:
            tail[:] = [*tail[-20:], line]
            if re.search(r"seed \d+: (ok|failed|crashed|over_budget)", line):
                ends.append(time.time())

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    samples: list[tuple[float, int, float]] = []  # (time, pid, RSS MiB)
    while run.poll() is None:
        pids = ray_workers() if args.executor == "ray" else [run.pid]
        for pid in pids:
            value = rss_mib(pid)
            if value is not None:
                samples.append((time.time(), pid, value))
        time.sleep(0.5)
    reader.join(timeout=5)
    if run.returncode != 0 or not ends:
        raise SystemExit(f"bench_trial_memory: the run failed:\n{''.join(tail)}")
    at_ends, pids_at_ends = [], []
    for end in ends:
        before = [(t, pid, r) for t, pid, r in samples if t <= end]
        if before:
            last_t, pid, _ = before[-1]
            at_ends.append(max(r for t, p, r in before if p == pid and t > last_t - 1.0))
            pids_at_ends.append(pid)
    growth = (at_ends[-1] / at_ends[0] - 1) if len(at_ends) >= 2 else float("nan")
    print(json.dumps({
        "device": "cpu",
        "executor": args.executor,
        "trials": len(ends),
        "worker_processes": len(set(pids_at_ends)),
        "worker_pid_at_trial_ends": pids_at_ends,
        "command": " ".join(cmd[1:]),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rss_mib_at_trial_ends": [round(r, 1) for r in at_ends],
        "growth_first_to_last": round(growth, 3),
        "peak_mib": round(max((r for _, _, r in samples), default=float("nan")), 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
