"""QFA fidelity and speed on ``mbv3-cifar``.

Usage: python scripts/bench_qfa.py [--threads 2] [--ratio | --search | --run] [--rounds 7]
       [--batch 64] [--preset smoke] [--constraint bitops<=0.3] [--profile]

With none of ``--ratio``, ``--search``, ``--run`` all three run, in that order.

Prints JSON with:

- ``step_ratio``: one QFA supernet step (BatchQuant activations + full-weight LSQ, the max,
  the min and 4 random subnets, forward + backward each, one SGD step) against the FP step
  of the same six subnets on the FP supernet. The two sides alternate A, B, A, B in one
  process on the same batch and subnets; the median of the per-round ratios and their
  min / max are reported (target <= 1.6);
- ``search``: the method's search on digits with the preset (default ``smoke``; the FP
  supernet from the cache, built first if missing and not timed): the predictor's held-out
  Kendall τ and RMSE, the spread of the sampled subnets' top-1 it had to rank, the held-out
  subnets' two scorings' τ (``rescore_kendall_tau``: each scored again with other
  recalibration images; a predictor fitted to one noisy scoring cannot rank the other far
  better than the scorings agree with each other), the scored
  front's BitOPs range (max / min, target >= 2) and each phase's wall seconds and share;
- ``run``: ``python -m benchmark run --methods qfa --preset <preset> --executor serial``
  (the task's defaults; the FP supernet cached by ``search`` or a first run) timed as a
  subprocess, with the shares of its search, finetune (``retrain`` track) and evaluation
  time from its records (target <= 300 s wall);
- ``--profile``: the torch profiler's top operators (self CPU time) of one QFA step and of
  one FP step of the same subnets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn import functional as F

from benchmark.arena import Budget, Context, Task, get_space
from benchmark.arena.data import load_splits
from benchmark.arena.presets import load_preset
from benchmark.arena.recipes.pretrain import pretrain_supernet
from methods.qfa import QFA, STAGE_BITS
from methods.qfa.sampler import QFASampler


def supernet_step(space, supernet, subnets, x, y, opt) -> float:
    """Wall seconds of one accumulated step over ``subnets``: forward + backward each, then
    one optimizer step."""
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    for arch, policy in subnets:
        space.set_active(supernet, arch, policy)
        F.cross_entropy(supernet(x), y).backward()
    opt.step()
    return time.perf_counter() - start


def step_ratio(rounds: int, batch: int) -> dict[str, float]:
    base = get_space("mbv3-cifar")
    space = base.with_fixed(QFA.qfa_fixed(base))
    torch.manual_seed(0)
    fp = base.build_supernet().train()
    quant = space.build_supernet(QFA.quant(), fp.state_dict()).train()
    opts = {id(m): torch.optim.SGD(m.parameters(), lr=1e-4) for m in (fp, quant)}
    sampler = QFASampler(space, num_random=4, bits=STAGE_BITS[1])
    rng = random.Random(0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    ratios, fp_s, q_s = [], [], []
    for r in range(rounds + 1):
        subnets = [sampler.largest(rng), *sampler.others(rng)]
        fp_sub = [(arch, None) for arch, _ in subnets]
        a = supernet_step(base, fp, fp_sub, x, y, opts[id(fp)])
        b = supernet_step(space, quant, subnets, x, y, opts[id(quant)])
        if r:  # round 0 warms up (quantizer init, allocator)
            fp_s.append(a), q_s.append(b), ratios.append(b / a)
    return {
        "subnets": 6,
        "batch": batch,
        "rounds": rounds,
        "fp_step_s_median": round(statistics.median(fp_s), 3),
        "qfa_step_s_median": round(statistics.median(q_s), 3),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
    }


def search(preset_name: str, constraint: str) -> dict:
    preset = load_preset(preset_name)
    splits = load_splits("digits", val_fraction=preset.data.val_fraction, seed=0)
    space = get_space("mbv3-cifar")
    state, _ = pretrain_supernet(space, splits, preset, seed=0)  # cached; not timed
    task = Task("mbv3-cifar", "digits", preset.name, constraint, 0)
    # the samples budget as the preset's, no wall-clock cap: every phase is measured in full
    # (the CLI run below keeps the preset's cap)
    budget = Budget(1e9, preset.budget.max_search_samples)
    start = time.perf_counter()
    space.profiles(space.max_arch())  # the cost model's profile table (the harness warm-up)
    profile_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as work:
        ctx = Context.create(
            task,
            space,
            preset,
            splits,
            state,
            budget=budget,
            workdir=Path(work),
        )
        # the held-out subnets scored a second time: the ceiling of the predictor's τ
        config = replace(QFA.configure(preset), rescore_held_out=True)
        result = QFA(config).search(ctx)
    wall = time.perf_counter() - start
    log = result.log
    phases = {"cost_profiles_s": profile_s, **log["phases"]}
    bitops = [f["bitops"] for f in log["front"]]
    return {
        "preset": preset.name,
        "constraint": constraint,
        "fixed": log["fixed_why"],
        "wall_s": round(wall, 1),
        "samples": ctx.budget.spent()["samples"],
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "phase_share": {k: round(v / wall, 3) for k, v in phases.items()},
        "teacher_val_top1": log.get("teacher_val_top1"),
        "predictor": log["predictor"],
        "front": {
            "scored": len(bitops),
            "bitops_min": min(bitops),
            "bitops_max": max(bitops),
            "bitops_range_x": round(max(bitops) / min(bitops), 2),
            "val_top1": [round(f["val_top1"], 2) for f in log["front"]],
            "predicted_top1": [round(f["predicted_top1"], 2) for f in log["front"]],
        },
        "best": {"label": result.candidates[0].label, **result.candidates[0].meta},
    }


def cli_run(preset_name: str, threads: int) -> dict:
    """Wall time of a serial ``benchmark run --methods qfa`` and its records' time shares."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "benchmark", "run", "--methods", "qfa", "--preset"]
        cmd += [preset_name, "--executor", "serial", "--cpus-per-trial", str(threads)]
        cmd += ["--out", out]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        files = list(Path(out).glob("runs/*/records.csv"))
        if done.returncode != 0 or not files:
            return {"rc": done.returncode, "wall_s": round(wall, 1), "tail": done.stderr[-2000:]}
        rows = pd.read_csv(files[0])
    search_s = float(rows["search_wall_hours"].iloc[0]) * 3600
    finetune_s = float(rows["finetune_wall_hours"].fillna(0).sum()) * 3600
    eval_s = float(rows["eval_seconds"].fillna(0).sum())
    parts = {"search_s": search_s, "finetune_s": finetune_s, "eval_s": eval_s}
    parts["other_s"] = wall - sum(parts.values())
    return {
        "command": " ".join(cmd[1:-2]),
        "rc": done.returncode,
        "wall_s": round(wall, 1),
        "status": sorted(set(rows["status"])),
        "rows": len(rows),
        "candidates": int(rows["candidate"].nunique()) if "candidate" in rows else None,
        "fixed": sorted(set(rows["fixed"].astype(str))) if "fixed" in rows else None,
        "best_top1_test": {
            track: round(float(g["top1_test"].max()), 2) for track, g in rows.groupby("track")
        },
        "parts_s": {k: round(v, 1) for k, v in parts.items()},
        "share": {k: round(v / wall, 3) for k, v in parts.items()},
    }


def profile_steps(batch: int, top: int = 12) -> dict[str, str]:
    """The profiler's top operators by self CPU time of one QFA and one FP step."""
    from torch.profiler import ProfilerActivity, profile

    base = get_space("mbv3-cifar")
    space = base.with_fixed(QFA.qfa_fixed(base))
    torch.manual_seed(0)
    fp = base.build_supernet().train()
    quant = space.build_supernet(QFA.quant(), fp.state_dict()).train()
    sampler = QFASampler(space, num_random=4, bits=STAGE_BITS[1])
    rng = random.Random(0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    subnets = [sampler.largest(rng), *sampler.others(rng)]
    out = {}
    for key, sp, model, subs in (
        ("qfa", space, quant, subnets),
        ("fp", base, fp, [(a, None) for a, _ in subnets]),
    ):
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        supernet_step(sp, model, subs, x, y, opt)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            supernet_step(sp, model, subs, x, y, opt)
        out[key] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--constraint", default="bitops<=0.3")
    parser.add_argument("--ratio", action="store_true")
    parser.add_argument("--search", action="store_true")
    parser.add_argument("--run", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    every = not (args.ratio or args.search or args.run or args.profile)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    out: dict = {"threads": args.threads}

    def show(key: str, value: object) -> None:
        out[key] = value
        out[f"{key}_loadavg"] = [round(v, 2) for v in os.getloadavg()]
        print(json.dumps({key: value, f"{key}_loadavg": out[f"{key}_loadavg"]}, indent=1))
        sys.stdout.flush()

    if args.ratio or every:
        show("step_ratio", step_ratio(args.rounds, args.batch))
    if args.profile:
        for key, table in profile_steps(args.batch).items():
            print(f"--- {key} step, top operators by self CPU time ---\n{table}", flush=True)
    if args.search or every:
        show("search", search(args.preset, args.constraint))
    if args.run or every:
        show("run", cli_run(args.preset, args.threads))


if __name__ == "__main__":
    main()
