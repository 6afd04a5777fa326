"""Measure what sizes the ``fmnist`` preset (Fashion-MNIST on a CPU), one part at a time.

Each part writes ``<out>/<part>.json`` with its figures, the machine's load average before and
after, the thread count and the torch version; a part already written is skipped unless
``--force``, so an interrupted measurement resumes part by part.

- ``fp``: the FP starting points of ``--spaces`` at ``--seeds`` (trained and cached once, like a
  run does: ``$MPQBENCH_CACHE`` or ``--cache-dir``): test top-1 on the official 10,000 test
  images, the build's wall seconds.
- ``tau``: two scorings (``ctx.score``: BN recalibration on the preset's ``[recalibration]``
  train images, then validation top-1) of the same 30 random subnets of each space, the
  second on other recalibration batches; Kendall τ between them. The subnets are drawn as
  the ``random`` method draws them (a random architecture on ``mbv3-cifar`` and random W/A
  bits per layer), quantized from the FP start without training.
- ``pipeline``: the data pipeline's share of a ResNet-20 training step at the preset's batch
  size (FP and W4A4 LSQ): batches drawn from the loader alone vs. drawn and trained on,
  interleaved over ``--rounds`` rounds; the median share and its spread.
- ``trials``: each method's trial time on the preset: one run per (method, space) of
  ``--trials`` (seed 0, the default constraint, the serial executor on ``--threads`` CPUs),
  each its own run folder ``<out>/runs/<method>-<space>-seed0`` so that a finished one is
  kept and an interrupted one resumes (``--resume``); the trial's wall seconds (search,
  then every candidate's finetune and evaluation) read from its records, with the load.
- ``seeds``: from the records of ``uniform`` runs (``--runs``), each candidate's test top-1
  over seeds, its seed-to-seed std, and the minimum detectable paired difference at 3 and 5
  seeds (α 0.05, power 0.8) for two methods with that spread each (std of a difference
  √2 × the std when independent; the paired design can only lower it).

    python scripts/measure_fmnist.py fp tau pipeline --out results/fmnist-preset
    python scripts/measure_fmnist.py trials --out results/fmnist-preset
    python scripts/measure_fmnist.py seeds --runs results/fmnist-preset/runs --out ...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from benchmark.arena.context import Context
from benchmark.arena.data import load_preset_splits, make_loader
from benchmark.arena.policy import LayerBits
from benchmark.arena.presets import Preset, load_preset
from benchmark.arena.protocol import Budget, Task
from benchmark.arena.recipes.pretrain import fp_starting_point
from benchmark.arena.spaces import get_space
from benchmark.arena.spaces.base import ElasticSearchSpace
from benchmark.report.stats import min_detectable_difference

PARTS = ("fp", "tau", "pipeline", "trials", "seeds")
TRIALS = (
    "qfa/mbv3-cifar,oqat/mbv3-cifar,haq/resnet20,dnas/resnet20,dnas/mbv3-cifar,haq/mbv3-cifar,"
    "hawq/resnet20,hawq/mbv3-cifar,ompq/resnet20,ompq/mbv3-cifar,random/resnet20,"
    "random/mbv3-cifar,oqat/resnet20,qfa/resnet20"
)


def _machine() -> dict[str, Any]:
    return {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "device": "cpu",
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _splits(preset: Preset, seed: int):
    return load_preset_splits(preset, seed)


def part_fp(args: argparse.Namespace, preset: Preset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in args.spaces:
        for seed in args.seeds:
            splits = _splits(preset, seed)
            space = get_space(name, num_classes=splits.num_classes)
            wall = time.perf_counter()
            _, info = fp_starting_point(space, splits, preset, seed=seed, cache_dir=args.cache_dir)
            entry = {
                "test_top1": info["test_top1"],
                "val_top1": info["val_top1"],
                "build_seconds": info.get("build_seconds"),
                "steps": info.get("steps"),
                "cached": info["cached"],
                "seconds_now": time.perf_counter() - wall,
            }
            if "subnets" in info:
                entry["subnets"] = {
                    k: {"test_top1": v["test_top1"], "macs": v["macs"]}
                    for k, v in info["subnets"].items()
                }
            out[f"{name}/seed{seed}"] = entry
            print(name, seed, json.dumps(entry), flush=True)
    return out


def _context(preset: Preset, space_name: str, seed: int, cache_dir: str | None) -> Context:
    splits = _splits(preset, seed)
    space = get_space(space_name, num_classes=splits.num_classes)
    fp_state, _ = fp_starting_point(space, splits, preset, seed=seed, cache_dir=cache_dir)
    task = Task(
        space=space_name, dataset=preset.dataset, preset=preset.name, constraint="bitops<=1.0",
        seed=seed,
    )  # fmt: skip
    budget = Budget(1e6, 10**12)
    workdir = Path(tempfile.mkdtemp(prefix="mpqbench-measure-"))
    return Context.create(task, space, preset, splits, fp_state, budget=budget, workdir=workdir)


def _random_subnet(ctx: Context, rng: random.Random) -> tuple[Any, dict[str, LayerBits]]:
    """An architecture and per-layer bits drawn as the ``random`` method draws them."""
    space = ctx.space
    elastic = isinstance(space, ElasticSearchSpace) and space.searches != "bits"
    arch = space.sample_arch(rng) if elastic else space.reference_arch
    bits = space.bit_choices
    policy = {
        n: LayerBits(rng.choice(bits), rng.choice(bits)) for n in space.searchable_layers(arch)
    }
    return arch, space.full_policy(policy, arch)


def part_tau(args: argparse.Namespace, preset: Preset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in args.spaces:
        ctx = _context(preset, name, 0, args.cache_dir)
        rng = random.Random(1234)
        first, second, seconds = [], [], []
        for i in range(args.subnets):
            arch, policy = _random_subnet(ctx, rng)
            model = ctx.subnet(arch, policy)
            wall = time.perf_counter()
            first.append(ctx.score(model, seed=2 * i))
            second.append(ctx.score(ctx.subnet(arch, policy), seed=2 * i + 1))
            seconds.append((time.perf_counter() - wall) / 2)
            print(name, i, first[-1], second[-1], f"{seconds[-1]:.1f}s", flush=True)
        tau = stats.kendalltau(first, second)
        diffs = np.asarray(first) - np.asarray(second)
        out[name] = {
            "kendall_tau": float(tau.statistic),
            "p_value": float(tau.pvalue),
            "subnets": args.subnets,
            "first": first,
            "second": second,
            "score_spread_pp": float(np.std(first, ddof=1)),
            "rescore_abs_diff_mean_pp": float(np.abs(diffs).mean()),
            "seconds_per_score_median": statistics.median(seconds),
        }
        print(name, "tau", out[name]["kendall_tau"], flush=True)
    return out


def _interleaved_share(
    loader_only: Callable[[], float], with_step: Callable[[], float], rounds: int
) -> dict[str, float]:
    shares = []
    for _ in range(rounds):
        data, total = loader_only(), with_step()
        shares.append(data / total)
    return {
        "share_median": statistics.median(shares),
        "share_min": min(shares),
        "share_max": max(shares),
        "rounds": rounds,
    }


def part_pipeline(args: argparse.Namespace, preset: Preset) -> dict[str, Any]:
    splits = _splits(preset, 0)
    recipe = preset.finetune
    space = get_space("resnet20", num_classes=splits.num_classes)
    out: dict[str, Any] = {"batch_size": recipe.batch_size, "batches_per_side": args.batches}
    for label, policy in (("fp", None), ("w4a4", space.uniform_policy(4, 4))):
        model = space.build(space.reference_arch, policy=policy)
        optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()
        loader = make_loader(splits.train, recipe.batch_size, shuffle=True, seed=0)

        def draw(train: bool, model=model, optim=optim, loader=loader) -> float:
            wall = time.perf_counter()
            for done, (x, y) in enumerate(loader, 1):
                if train:
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    optim.zero_grad()
                    loss.backward()
                    optim.step()
                if done >= args.batches:
                    break
            return time.perf_counter() - wall

        draw(True)  # warm-up: quantizer initialisation, allocator
        out[label] = _interleaved_share(lambda: draw(False), lambda: draw(True), args.rounds)
        print(label, json.dumps(out[label]), flush=True)
    return out


def _trial_run(args: argparse.Namespace, preset: Preset, method: str, space: str) -> Path:
    """Run (or resume, or keep) the one-trial run of ``method`` on ``space``; its folder."""
    import subprocess
    import sys

    run_id = f"{method}-{space}-seed0"
    folder = Path(args.out) / "runs" / run_id
    if (folder / "records.parquet").exists():
        print(f"{run_id}: kept (its records exist)", flush=True)
        return folder
    command = [sys.executable, "-m", "benchmark", "run", "--methods", method, "--space", space]
    command += ["--preset", preset.name, "--executor", "serial", "--seeds", "0"]
    command += ["--cpus-per-trial", str(args.threads), "--out", str(args.out)]
    command += ["--resume", run_id] if (folder / "metadata.json").exists() else ["--run-id", run_id]
    before, wall = _machine(), time.perf_counter()
    print(f"{run_id}: running ({' '.join(command[1:])})", flush=True)
    done = subprocess.run(command, check=False)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{run_id}: the run exited with {done.returncode}")
    (folder / "measured.json").write_text(
        json.dumps(
            {
                "wall_seconds": time.perf_counter() - wall,
                "machine_before": before,
                "machine_after": _machine(),
            },
            indent=1,
        )
        + "\n"
    )
    return folder


def part_trials(args: argparse.Namespace, preset: Preset) -> dict[str, Any]:
    import pandas as pd

    out: dict[str, Any] = {}
    for pair in args.trials:
        method, space = pair.split("/")
        folder = _trial_run(args, preset, method, space)
        rows = pd.read_parquet(folder / "records.parquet")
        first = rows.iloc[0]
        retrain = rows[rows["track"] == "retrain"]
        evaluated = rows["finetune_wall_hours"].fillna(0) * 3600 + rows["eval_seconds"].fillna(0)
        trial_seconds = float(first["search_wall_hours"]) * 3600 + float(evaluated.sum())
        measured = folder / "measured.json"
        entry: dict[str, Any] = {
            "status": sorted(set(rows["status"])),
            "trial_seconds": trial_seconds,
            "search_seconds": float(first["search_wall_hours"]) * 3600,
            "rows": {str(k): int(v) for k, v in rows["track"].value_counts().items()},
            "stopped_by_budget": bool(rows["stopped_by_budget"].fillna(False).any()),
            "best_top1_test": float(retrain["top1_test"].max()) if len(retrain) else None,
        }
        if measured.exists():
            entry.update(json.loads(measured.read_text()))
        out[pair] = entry
        print(pair, json.dumps(entry), flush=True)
    return out


def part_seeds(args: argparse.Namespace, preset: Preset) -> dict[str, Any]:
    import pandas as pd

    frames = [pd.read_parquet(p) for p in Path(args.runs).rglob("records.parquet")]
    if not frames:
        raise SystemExit(f"no records.parquet under {args.runs}: run the uniform runs first")
    rows = pd.concat(frames)
    rows = rows[
        rows["method"].str.startswith("uniform")
        & (rows["track"] == "retrain")
        & (rows["status"] == "ok")
        & (rows["preset"] == preset.name)
    ]  # fmt: skip
    out: dict[str, Any] = {}
    for (space, candidate), group in rows.groupby(["space", "candidate"]):
        by_seed = group.sort_values("seed").drop_duplicates("seed", keep="last")
        values = by_seed["top1_test"].astype(float).tolist()
        entry: dict[str, Any] = {"seeds": by_seed["seed"].tolist(), "top1_test": values}
        if len(values) >= 2:
            sd = float(np.std(values, ddof=1))
            entry.update(
                mean=float(np.mean(values)),
                std=sd,
                mdd_3_seeds=min_detectable_difference(math.sqrt(2) * sd, 3),
                mdd_5_seeds=min_detectable_difference(math.sqrt(2) * sd, 5),
            )
        out[f"{space}/{candidate}"] = entry
        print(space, candidate, json.dumps(entry), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="+", choices=PARTS)
    parser.add_argument("--preset", default="fmnist")
    parser.add_argument("--spaces", default="resnet20,mbv3-cifar")
    parser.add_argument("--seeds", default="0", help="comma list (part fp)")
    parser.add_argument("--subnets", type=int, default=30, help="random subnets (part tau)")
    parser.add_argument("--batches", type=int, default=20, help="batches per side (pipeline)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (pipeline)")
    parser.add_argument("--trials", default=TRIALS, help="method/space comma list (trials)")
    parser.add_argument("--runs", default="results/fmnist-preset/runs", help="part seeds")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 cores here)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default="results/fmnist-preset")
    parser.add_argument("--force", action="store_true", help="measure parts already written")
    args = parser.parse_args()
    args.spaces = [s for s in args.spaces.split(",") if s]
    args.trials = [t for t in args.trials.split(",") if t]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    torch.set_num_threads(args.threads)
    preset = load_preset(args.preset)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = {
        "fp": part_fp,
        "tau": part_tau,
        "pipeline": part_pipeline,
        "trials": part_trials,
        "seeds": part_seeds,
    }
    for part in args.parts:
        path = out / f"{part}.json"
        if path.exists() and not args.force:
            print(f"{path} exists: skipped (--force measures it again)")
            continue
        before, wall = _machine(), time.perf_counter()
        figures = parts[part](args, preset)
        record = {
            "part": part,
            "preset": preset.name,
            "recipe_hash": preset.recipe_hash,
            "wall_seconds": time.perf_counter() - wall,
            "machine_before": before,
            "machine_after": _machine(),
            "figures": figures,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
        tmp.replace(path)
        print(f"wrote {path} ({record['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
