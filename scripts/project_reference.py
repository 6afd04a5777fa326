"""Project a Fashion-MNIST reference run's wall time on this machine from recorded trial times.

The inputs are the ``fmnist`` preset's measured figures, not guesses:

- each (method, space) trial's wall seconds at 2 threads, seed 0, one limit
  (``results/fmnist-preset/trials.json``, ``measure_fmnist.py trials``); ``uniform``'s from
  its run's records (``--uniform-run``): the finetune and evaluation of each bit-width that
  meets the limit (a bit-width over it gets a row and no finetune);
- the FP starting points' build seconds at 2 threads (``--fp-seconds``; seed 0's were
  measured in ``measure_fmnist.py fp``: ResNet-20 836 s, the mbv3 FP supernet 840 s);
  seed 0 counts as built when ``--fp-cached 0``;
- the thread plan's gain (``--thread-gain``): one 2-thread worker's time over two
  1-thread workers' time on the same work (``bench_thread_plan.py``: 1.07-1.28 over five
  kinds of work; 1.12 for the LSQ step that every finetune is made of).

A trial at 1 thread is taken to last ``2 / gain`` times its 2-thread time; the trials (and
the FP builds, first) are placed longest first on ``cpus / cpus_per_trial`` slots, and the
makespan is the projection. The recorded trials ran under loads of 0.6-4, so the
projection is an upper bound for an idle machine; a variant (``dnas[paper]``) costs what
its method costs.

    python scripts/project_reference.py --seeds 0,1,2 --limits "bitops<=0.2,bitops<=0.3"
    python scripts/project_reference.py --methods oqat,qfa --json
"""

from __future__ import annotations

import argparse
import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRIALS = "results/fmnist-preset/trials.json"
UNIFORM_RUN = "results/fmnist-preset/runs/uniform-seed0"
SPACES = ("mbv3-cifar", "resnet20")
METHODS = ("dnas", "haq", "hawq", "ompq", "oqat", "qfa", "random", "uniform")
FP_SECONDS = {"resnet20": 836.0, "mbv3-cifar": 840.0}
"""Seed 0's FP builds at 2 threads (docs/benchmarks.md, the fmnist preset's table)."""
THREAD_GAIN = 1.12
"""LSQ W4A4 step, 1x2-thread / 2x1-thread seconds (``bench_thread_plan.py``)."""


@dataclass(frozen=True)
class Job:
    """One unit of the run: a trial or an FP build, with its 2-thread wall seconds."""

    kind: str
    method: str
    space: str
    seed: int
    seconds_2threads: float


def base_method(entry: str) -> str:
    """``dnas[paper]`` -> ``dnas``."""
    return entry.split("[", 1)[0]


def trial_seconds(
    trials_json: Path, uniform: dict[str, list[tuple[float, float]]]
) -> dict[tuple[str, str], float]:
    """Recorded 2-thread wall seconds per (method, space); ``uniform``'s are every bit-width
    of its run (``uniform``: :func:`uniform_candidates`; :func:`seconds_at_limit` takes one
    limit's share)."""
    figures = json.loads(trials_json.read_text())["figures"]
    out = {tuple(k.split("/")): float(v["trial_seconds"]) for k, v in figures.items()}
    for space, candidates in uniform.items():
        out[("uniform", space)] = sum(seconds for _, seconds in candidates)
    return out


def uniform_candidates(uniform_run: Path | None) -> dict[str, list[tuple[float, float]]]:
    """Per space, ``uniform``'s bit-widths as (BitOPs / W8A8, retrain seconds): the
    finetune and evaluation of each, from its run's records (none if it has none)."""
    if uniform_run is None or not (uniform_run / "records.parquet").exists():
        return {}
    import pandas as pd

    rows = pd.read_parquet(uniform_run / "records.parquet")
    rows = rows[rows["track"] == "retrain"]
    seconds = rows["finetune_wall_hours"].fillna(0) * 3600 + rows["eval_seconds"].fillna(0)
    out: dict[str, list[tuple[float, float]]] = {}
    for space, ratio, spent in zip(rows["space"], rows["bitops_ratio_w8a8"], seconds, strict=True):
        out.setdefault(str(space), []).append((float(ratio), float(spent)))
    return out


def limit_ratio(limit: str) -> float | None:
    """``bitops<=0.2`` -> 0.2; ``None`` for a limit on another metric."""
    metric, _, value = limit.partition("<=")
    return float(value) if metric.strip() == "bitops" and value else None


def seconds_at_limit(
    method: str,
    space: str,
    limit: str,
    seconds: dict[tuple[str, str], float],
    uniform: dict[str, list[tuple[float, float]]],
) -> float:
    """A trial's 2-thread seconds at ``limit``: its recorded time, but ``uniform`` retrains
    only the bit-widths that meet the limit (the others get a row and no finetune)."""
    ratio = limit_ratio(limit)
    if base_method(method) == "uniform" and space in uniform and ratio is not None:
        return sum(spent for r, spent in uniform[space] if r <= ratio)
    return seconds[(base_method(method), space)]


def plan_jobs(
    methods: list[str],
    spaces: list[str],
    seeds: list[int],
    limits: list[str],
    seconds: dict[tuple[str, str], float],
    fp_seconds: dict[str, float],
    fp_cached: set[int],
    uniform: dict[str, list[tuple[float, float]]] | None = None,
) -> list[Job]:
    """Every FP build and trial of the run; an unknown (method, space) is an error."""
    missing = sorted(
        {
            f"{base_method(m)}/{s}"
            for m in methods
            for s in spaces
            if (base_method(m), s) not in seconds
        }
    )
    if missing:
        raise ValueError(
            f"no recorded trial time for {', '.join(missing)}: measure it with "
            "`python scripts/measure_fmnist.py trials --trials METHOD/SPACE`"
        )
    jobs = [
        Job("fp", "fp", space, seed, fp_seconds[space])
        for space in spaces
        for seed in seeds
        if seed not in fp_cached
    ]
    for method in methods:
        for space in spaces:
            for seed in seeds:
                for limit in limits:
                    spent = seconds_at_limit(method, space, limit, seconds, uniform or {})
                    jobs.append(Job("trial", method, space, seed, spent))
    return jobs


def makespan(durations: list[float], slots: int) -> float:
    """Longest-first list scheduling on ``slots`` equal workers: the last one's finish."""
    if slots < 1:
        raise ValueError("slots must be at least 1")
    finish = [0.0] * slots  # a heap: the earliest free worker first
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(finish, finish[0] + duration)
    return max(finish)


def project(jobs: list[Job], cpus: int, cpus_per_trial: int, thread_gain: float) -> dict[str, Any]:
    """The projected wall hours and where they go (device-hours per method)."""
    if cpus_per_trial not in (1, 2) or cpus % cpus_per_trial:
        raise ValueError("--cpus-per-trial must be 1 or 2 and divide --cpus")
    slots = cpus // cpus_per_trial
    scale = 2.0 / thread_gain if cpus_per_trial == 1 else 1.0
    fp = [j.seconds_2threads * scale for j in jobs if j.kind == "fp"]
    trials = [j.seconds_2threads * scale for j in jobs if j.kind == "trial"]
    by_method: dict[str, float] = {}
    for job in jobs:
        by_method[job.method] = by_method.get(job.method, 0.0) + job.seconds_2threads * scale
    busy = sum(by_method.values())
    wall = makespan(fp, slots) + makespan(trials, slots)
    return {
        "trials": len(trials),
        "fp_builds": len(fp),
        "slots": slots,
        "wall_hours": round(wall / 3600, 2),
        "slot_hours": round(busy / 3600, 2),
        "share_by_method": {
            m: round(s / busy, 3) for m, s in sorted(by_method.items(), key=lambda kv: -kv[1])
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list (variants ok)")
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--limits", default="bitops<=0.2,bitops<=0.3", help="comma list")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--cpus-per-trial", type=int, default=1)
    parser.add_argument("--thread-gain", type=float, default=THREAD_GAIN)
    parser.add_argument("--trials", default=TRIALS, help="recorded trial times (JSON)")
    parser.add_argument("--uniform-run", default=UNIFORM_RUN, help="uniform's run folder")
    parser.add_argument(
        "--fp-cached", default="0", help="seeds whose FP starting points are built (comma list)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    trials_json = Path(args.trials)
    if not trials_json.exists():
        parser.exit(2, f"error: {trials_json} not found: run from the repository root\n")
    spaces = [s for s in args.spaces.split(",") if s]
    unknown = sorted(set(spaces) - set(FP_SECONDS))
    if unknown:
        parser.exit(2, f"error: no FP build time for {', '.join(unknown)}: use {SPACES}\n")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    cached = {int(s) for s in args.fp_cached.split(",") if s}
    uniform = uniform_candidates(Path(args.uniform_run))
    seconds = trial_seconds(trials_json, uniform)
    methods = [m for m in args.methods.split(",") if m]
    limits = [x for x in args.limits.split(",") if x]
    try:
        jobs = plan_jobs(methods, spaces, seeds, limits, seconds, FP_SECONDS, cached, uniform)
        result = project(jobs, args.cpus, args.cpus_per_trial, args.thread_gain)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    result["inputs"] = {
        "trials": str(trials_json),
        "thread_gain": args.thread_gain,
        "cpus": args.cpus,
        "cpus_per_trial": args.cpus_per_trial,
        "note": "recorded under loads 0.6-4 at 2 threads: an upper bound for an idle machine",
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"projected: {result['wall_hours']} h on {args.cpus} CPUs "
        f"({result['trials']} trials, {result['fp_builds']} FP builds, "
        f"{result['slots']} at a time; {result['slot_hours']} slot-hours)"
    )
    for method, share in result["share_by_method"].items():
        print(f"  {method:<14} {share:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
