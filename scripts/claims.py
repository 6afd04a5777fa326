"""Each method's central claim, measured on Fashion-MNIST with the ``fmnist`` preset.

Usage: python scripts/claims.py CLAIM [CLAIM ...] [--seeds 0,1,2] [--out results/claims]
       [--threads 2] [--uniform-runs results/fmnist-preset/runs] [--preset fmnist]
       [--oqat-stages 0.4,0.27,0.2]

Each claim but ``oqat`` is one or two runs of the harness (``python -m benchmark run``,
the serial executor, ``--cpus-per-trial --threads``) in ``<out>/runs/claim-<name>``: a
finished run is kept, an interrupted one resumes (``--resume``). From its rows (the
``retrain`` track unless said otherwise, test top-1 on the 10,000 test images) the
claim's figures, paired over seeds (``scipy``'s paired t-test, the 95% interval of the
mean difference) and a one-line verdict go to ``<out>/<name>.json``, with the run's wall
seconds and the machine's load before and after.

Claims:

- ``hawq``: HAWQ-V3's ILP policy against uniform W4A4 at the same BitOPs, and against
  ``random`` at the same limit. The limit is uniform W4A4's own BitOPs ratio on
  ``resnet20``; HAWQ-V3 chooses from the space's bits (``{"bits": "space"}``, label
  ``space-bits``): with the paper's {4, 8} every layer at 4 bits already fills that
  limit, so the ILP could only return uniform W4A4. The W4A4 rows are the ``uniform`` runs
  of ``--uniform-runs`` at the same seeds and preset (its recipe hash must match).
- ``haq``: HAQ's agent against the same search with random actions throughout (``warmup``
  = ``episodes − 1``, label ``random-actions``: as many policies, finetuned and scored
  alike): the best reward by episode (median and band over seeds, from each trial's
  ``search_log.json``) and the retrained top-1.
- ``dnas``: DNAS's sampled candidates (each side's retrained candidate best on
  validation: DNAS offers its samples unranked) against ``random`` at ``bitops<=0.3`` on
  ``resnet20`` (with its default 16 scored policies, and again given at most DNAS's search
  samples: as many whole scorings as fit, label ``matched``), the share of 1,000
  architectures drawn from ``P_θ`` that meet the limit (each trial's ``search_log.json``),
  and the paper's fixed-coefficient loss (``beta`` 0.2, ``gamma`` 0.6, label ``paper``)
  against ``gamma="auto"``.
- ``oqat``: OQAT's 2-bit supernet by inheritance (4→3→2, stages ``--oqat-stages``, default
  0.4, 0.27 and 0.2 epochs) against a 2-bit supernet trained straight from the FP supernet
  (a) for as many steps as the 2-bit stage and (b) for as many as the whole chain, and the
  chain that inherits the weights but re-initialises the steps (``inherit_steps="reinit"``):
  ``scripts/bench_oqat.py --fidelity --all-steps --reinit`` per seed on ``mbv3-cifar``
  (``<out>/runs/claim-oqat/seed-<s>.json``), test top-1 of five subnets (inherit track).
- ``qfa``: QFA with BatchQuant activations against the same supernet, schedule and seeds
  with LSQ activations (``act_quantizer="lsq"``, label ``lsq-act``) on ``mbv3-cifar``: each
  stage's loss curve, any divergence, the trained min / max subnets' val top-1 (QFA's
  search log) and the retrained top-1.
- ``qfa-predictor``: QFA with 100 predictor samples (80 fitted, 20 held out), the held-out
  ones scored twice: held-out Kendall τ beside the noise ceiling (the two scorings' τ).
- ``tracks``: Kendall τ between the ``inherit`` and ``retrain`` tracks over the candidates
  of an ``oqat`` run on ``mbv3-cifar`` and of the ``qfa-predictor`` run.
- ``ompq``: OMPQ with the orthogonality metric against the paper's own ablation without it
  (``orm_off``: the same trial retrains both policies), at ``bitops<=0.3`` on ``resnet20``,
  and its search seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from benchmark.arena.presets import load_preset
from benchmark.arena.spaces import get_space
from benchmark.report.stats import paired_difference

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fp_starts  # noqa: E402 - the scripts folder is not a package

PRESET = "fmnist"
SPACE = "resnet20"
ELASTIC = "mbv3-cifar"  # OQAT's and QFA's claims: the architecture + bits space
OQAT_STAGES = "0.4,0.27,0.2"  # epochs of the 4-, 3- and 2-bit stages (--oqat-stages)


def machine() -> dict[str, Any]:
    """Where and under what load a figure was measured."""
    return {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "device": "cpu",
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def harness_command(
    args: argparse.Namespace, run_id: str, extra: list[str], space: str = SPACE
) -> list[str]:
    """The ``benchmark run`` command of the claim's run ``run_id``: a new run with the
    claim's settings, or, where the run folder has its metadata, ``--resume`` alone (a
    resumed run takes its settings from its metadata and refuses them on the line)."""
    out = Path(args.out)
    command = [sys.executable, "-m", "benchmark", "run", "--executor", "serial"]
    command += ["--out", str(out)]
    if (out / "runs" / run_id / "metadata.json").exists():
        return [*command, "--resume", run_id]
    command += ["--preset", args.preset, "--space", space, "--seeds", args.seeds]
    command += ["--cpus-per-trial", str(args.threads), *extra]
    return [*command, "--run-id", run_id]


def run_harness(
    args: argparse.Namespace, name: str, extra: list[str], space: str = SPACE
) -> tuple[pd.DataFrame, dict]:
    """Run (or resume, or keep) the claim's harness run on ``space``; its rows and how it
    was run."""
    run_id = f"claim-{name}"
    out = Path(args.out)  # the harness writes <out>/runs/<run id>
    folder = out / "runs" / run_id
    measured = folder / "measured.json"
    if not (folder / "records.parquet").exists() or not measured.exists():
        command = harness_command(args, run_id, extra, space)
        before, wall = machine(), time.perf_counter()
        print(f"{run_id}: {' '.join(command[1:])}", flush=True)
        done = subprocess.run(command, check=False)
        attempt = {
            "command": " ".join(["python", *command[1:]]),
            "wall_seconds": time.perf_counter() - wall,
            "machine_before": before,
            "machine_after": machine(),
            "exit_code": done.returncode,
        }
        attempts = record_attempt(folder, attempt)
        if done.returncode not in (0, 1):
            raise SystemExit(f"{run_id}: the run exited with {done.returncode}")
        info = {
            **attempts[0],
            "wall_seconds": sum(a["wall_seconds"] for a in attempts),
            "machine_after": attempt["machine_after"],
            "attempts": attempts,
        }
        measured.write_text(json.dumps(info, indent=1) + "\n")
    rows = pd.read_parquet(folder / "records.parquet")
    info = json.loads(measured.read_text())
    info["stopped_by_budget"] = budget_stops(rows)  # a search cut short: say so beside it
    if info["stopped_by_budget"]:
        print(f"{run_id}: searches stopped by their budget: "
              f"{', '.join(info['stopped_by_budget'])}", flush=True)  # fmt: skip
    return rows, info


def record_attempt(folder: Path, attempt: dict[str, Any]) -> list[dict[str, Any]]:
    """Append one call of the harness (a new run, or a resume of an interrupted one) to
    ``<folder>/attempts.json``; every attempt so far. A run's wall time is their sum."""
    path = folder / "attempts.json"
    attempts = json.loads(path.read_text()) if path.exists() else []
    attempts.append(attempt)
    if folder.exists():
        path.write_text(json.dumps(attempts, indent=1) + "\n")
    return attempts


def budget_stops(rows: pd.DataFrame) -> list[str]:
    """``"method seed N"`` for each trial whose search its budget ended (its answer is what
    it had offered by then, not what it would have returned): under load a wall-clock
    budget can cut a claim's trial short, and its verdict must say so."""
    if "stopped_by_budget" not in rows.columns:
        return []
    stopped = rows[rows["stopped_by_budget"].fillna(False).astype(bool)]
    pairs = stopped[["method", "seed"]].drop_duplicates().sort_values(["method", "seed"])
    return [f"{m} seed {int(s)}" for m, s in pairs.itertuples(index=False)]


def by_seed(
    rows: pd.DataFrame, method: str, candidate: str | None = None, best_val: bool = False
) -> pd.Series:
    """Test top-1 (percent) of ``method``'s retrained candidate per seed (its first
    candidate, the one labelled ``candidate``, or with ``best_val`` the feasible ``ok`` one
    best on validation: the harness's answer for a method that offers its candidates
    unranked); NaN where not ``ok``."""
    keep = (rows["method"] == method) & (rows["track"] == "retrain")
    if candidate is not None:
        keep &= rows["candidate"] == candidate
    if best_val:
        keep &= (rows["status"] == "ok") & rows["feasible"].fillna(False).astype(bool)
        order = rows[keep].sort_values(["seed", "top1_val", "candidate_index"],
                                       ascending=[True, False, True])  # fmt: skip
        chosen = order.drop_duplicates("seed")
    else:
        chosen = rows[keep].sort_values(["seed", "candidate_index"]).drop_duplicates("seed")
    top1 = chosen["top1_test"].where(chosen["status"] == "ok")
    return pd.Series(top1.to_numpy(dtype=float), index=chosen["seed"].to_numpy())


def compare(a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """``a`` against ``b`` over the seeds both have: means, paired difference, p-value."""
    seeds = sorted(set(a.index) & set(b.index))
    x, y = a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy()
    diff = paired_difference(x, y)
    return {
        "seeds": [int(s) for s in seeds],
        "a": x.tolist(),
        "b": y.tolist(),
        "mean_a": float(np.nanmean(x)),
        "mean_b": float(np.nanmean(y)),
        "difference": diff.mean,
        "ci95": diff.ci95,
        "p_value": diff.p_value,
    }


def verdict(result: dict[str, Any], a: str, b: str) -> str:
    """One line: which side is ahead and whether the seeds can tell (p < 0.05)."""
    d, ci, p = result["difference"], result["ci95"], result["p_value"]
    if result["a"] == result["b"]:
        return f"identical on every seed ({len(result['seeds'])} seeds): nothing to tell apart"
    told = np.isfinite(p) and p < 0.05
    ahead = a if d > 0 else b
    return (
        f"{ahead} ahead by {abs(d):.2f} points (95% interval ±{ci:.2f}, p {p:.3g}, "
        f"{len(result['seeds'])} seeds): {'a difference' if told else 'not told apart'}"
    )


def w4a4_ratio() -> float:
    space = get_space(SPACE)
    return space.cost(space.uniform_policy(4, 4)).bitops / space.reference().bitops_w8a8


def claim_hawq(args: argparse.Namespace) -> dict[str, Any]:
    ratio = w4a4_ratio()
    limit = f"bitops<={ratio * (1 + 1e-6):.6f}"
    options = json.dumps({"hawq": {"bits": "space", "label": "space-bits"}})
    rows, info = run_harness(
        args,
        "hawq",
        ["--methods", "hawq,random", "--constraint", limit, "--method-options", options],
    )
    uniform = load_uniform_w4a4(args, Path(args.out) / "runs" / "claim-hawq")
    hawq, random = by_seed(rows, "hawq[space-bits]"), by_seed(rows, "random")
    against_uniform, against_random = compare(hawq, uniform), compare(hawq, random)
    policy = rows[rows["method"] == "hawq[space-bits]"]
    space = get_space(SPACE)
    w4a4 = json.dumps(
        {n: {"w_bits": 4, "a_bits": 4} for n in space.searchable_layers()}, sort_keys=True
    )
    searched = [
        json.dumps({n: b for n, b in json.loads(p).items() if n in space.searchable_layers()},
                   sort_keys=True)
        for p in policy["policy"]
    ]  # fmt: skip
    return {
        "hawq_policy_is_uniform_w4a4": [text == w4a4 for text in searched],
        "claim": "HAWQ-V3's ILP policy beats uniform W4A4 at the same BitOPs, and random at "
        "the same limit",
        "limit": limit,
        "w4a4_ratio": ratio,
        "hawq_ratios": policy["bitops_ratio_w8a8"].round(4).tolist(),
        "hawq_avg_w_bits": policy["avg_w_bits"].round(3).tolist(),
        "hawq_avg_a_bits": policy["avg_a_bits"].round(3).tolist(),
        "against_uniform_w4a4": {
            **against_uniform,
            "verdict": verdict(against_uniform, "hawq", "W4A4"),
        },
        "against_random": {**against_random, "verdict": verdict(against_random, "hawq", "random")},
        "run": info,
    }


def load_uniform_w4a4(args: argparse.Namespace, claim_run: Path) -> pd.Series:
    """Uniform W4A4's test top-1 per seed from the runs under ``--uniform-runs``, each
    refused unless its preset is the claim run's in all but the methods' sections (those
    do not touch ``uniform``: its data, FP start, retrain and evaluation are the same)."""
    claimed = _shared_recipe(claim_run)
    frames = []
    for path in sorted(Path(args.uniform_runs).rglob("records.parquet")):
        rows = pd.read_parquet(path)
        rows = rows[rows["method"].str.startswith("uniform") & (rows["candidate"] == "W4A4")]
        rows = rows[(rows["preset"] == args.preset) & (rows["space"] == SPACE)]
        if len(rows) and _shared_recipe(path.parent) != claimed:
            raise SystemExit(f"{path.parent}: its preset's recipe differs from the claim run's")
        frames.append(rows)
    if not frames or not sum(len(f) for f in frames):
        raise SystemExit(f"no uniform W4A4 rows of {SPACE} under {args.uniform_runs}")
    rows = pd.concat(frames)
    return by_seed(rows.assign(method="uniform"), "uniform", "W4A4")


def _shared_recipe(run: Path) -> dict[str, Any]:
    """A run's preset (its ``metadata.json``) less its name, description and methods."""
    preset = json.loads((run / "metadata.json").read_text())["preset"]
    return {k: v for k, v in preset.items() if k not in ("name", "description", "methods")}


def claim_ompq(args: argparse.Namespace) -> dict[str, Any]:
    options = json.dumps({"ompq": {"orm_off": True}})
    rows, info = run_harness(
        args,
        "ompq",
        ["--methods", "ompq", "--constraint", "bitops<=0.3", "--method-options", options],
    )
    method = rows["method"].iloc[0]
    with_orm, without = by_seed(rows, method, "ompq"), by_seed(rows, method, "ompq-orm-off")
    result = compare(with_orm, without)
    search = rows.drop_duplicates("seed")["search_wall_hours"].astype(float) * 3600
    return {
        "claim": "OMPQ's orthogonality metric chooses better bits than the same search "
        "without it (the paper's ablation)",
        "limit": "bitops<=0.3",
        "with_against_without": {**result, "verdict": verdict(result, "with ORM", "without")},
        "search_seconds": search.round(2).tolist(),
        "run": info,
    }


def search_trials(args: argparse.Namespace, name: str) -> dict[tuple[str, int], Path]:
    """Each trial folder (with a ``search_log.json``) of the claim's run, by (method, seed)."""
    folder = Path(args.out) / "runs" / f"claim-{name}" / "trials"
    trials = {}
    for trial in sorted(p for p in folder.iterdir() if (p / "search_log.json").exists()):
        row = json.loads((trial / "rows.json").read_text())[0]  # the trial's own rows
        trials[(str(row["method"]), int(row["seed"]))] = trial
    return trials


def search_logs(args: argparse.Namespace, name: str) -> dict[tuple[str, int], dict]:
    """Each trial's ``search_log.json`` of the claim's run, by (method, seed)."""
    return {
        key: json.loads((trial / "search_log.json").read_text())
        for key, trial in search_trials(args, name).items()
    }


def haq_episodes(trial: Path) -> list[dict[str, Any]]:
    """A HAQ trial's finished episodes: its search log's, or, for a search its budget
    ended before the harness kept the log offered with each answer (before commit
    cb658f7 that log held only why it stopped), ``episodes_from_checkpoint.json``: the
    history read from the search checkpoint the trial left (HAQ saves it after every
    episode; the file says how it was read)."""
    log = json.loads((trial / "search_log.json").read_text())
    if "episodes" in log:
        return log["episodes"]
    recovered = trial / "episodes_from_checkpoint.json"
    if not recovered.exists():
        raise SystemExit(f"{trial}: no episodes in its search log (stopped: "
                         f"{log.get('stopped_by_budget', '?')})")  # fmt: skip
    return json.loads(recovered.read_text())["episodes"]


def best_so_far(episodes: list[dict[str, Any]]) -> list[float]:
    """The best reward after each episode (HAQ's log, episode order)."""
    rewards = [float(e["reward"]) for e in sorted(episodes, key=lambda e: e["episode"])]
    return np.maximum.accumulate(rewards).tolist()


def claim_haq(args: argparse.Namespace) -> dict[str, Any]:
    """HAQ's agent against the same search with random actions throughout (``warmup`` =
    ``episodes − 1``: as many policies, each finetuned and scored alike)."""
    episodes = 24  # the fmnist preset's
    random_actions = {"haq": {"warmup": episodes - 1, "label": "random-actions"}}
    rows_agent, info_agent = run_harness(args, "haq", ["--methods", "haq"])
    rows_random, info_random = run_harness(
        args, "haq-random", ["--methods", "haq", "--method-options", json.dumps(random_actions)]
    )
    curves: dict[str, dict[int, list[float]]] = {}
    for name in ("haq", "haq-random"):
        for (method, seed), trial in search_trials(args, name).items():
            curves.setdefault(method, {})[seed] = best_so_far(haq_episodes(trial))
    lengths = {f"{m} seed {s}": len(c) for m, by_seed in curves.items() for s, c in by_seed.items()}
    common = min(lengths.values())  # a search its budget ended ran fewer episodes
    curves = {m: {s: c[:common] for s, c in by_seed.items()} for m, by_seed in curves.items()}
    bands = {
        method: {
            "median": np.median(list(by_seed.values()), axis=0).round(3).tolist(),
            "min": np.min(list(by_seed.values()), axis=0).round(3).tolist(),
            "max": np.max(list(by_seed.values()), axis=0).round(3).tolist(),
            "seeds": sorted(by_seed),
        }
        for method, by_seed in curves.items()
    }
    final = {m: pd.Series({s: c[-1] for s, c in by_seed.items()}) for m, by_seed in curves.items()}
    reward = compare(final.get("haq", pd.Series()), final.get("haq[random-actions]", pd.Series()))
    top1 = compare(by_seed(rows_agent, "haq"), by_seed(rows_random, "haq[random-actions]"))
    return {
        "claim": "HAQ's agent finds better policies than random actions given the same "
        "number of scored policies",
        "episodes": episodes,
        "episodes_run": lengths,
        "episodes_compared": common,
        "best_reward_by_episode": bands,
        "final_best_reward": {**reward, "verdict": verdict(reward, "agent", "random actions")},
        "retrained_top1": {**top1, "verdict": verdict(top1, "agent", "random actions")},
        "runs": [info_agent, info_random],
    }


def claim_dnas(args: argparse.Namespace) -> dict[str, Any]:
    """DNAS (``gamma="auto"``, the sampled candidates) against ``random`` at the same limit,
    the share of feasible draws from P_θ, and the paper's fixed-coefficient loss (β 0.2,
    γ 0.6 as FBNet states them) against ``auto``."""
    paper = {"dnas": {"beta": 0.2, "gamma": 0.6, "label": "paper"}}
    rows, info = run_harness(args, "dnas", ["--methods", "dnas,random"])
    rows_paper, info_paper = run_harness(
        args, "dnas-paper", ["--methods", "dnas", "--method-options", json.dumps(paper)]
    )
    shares = {
        f"{method} seed {seed}": log.get("feasible_share")
        for name in ("dnas", "dnas-paper")
        for (method, seed), log in search_logs(args, name).items()
        if method.startswith("dnas")
    }
    # DNAS offers its sampled architectures unranked: each side's answer is its retrained
    # candidate best on validation, as the harness picks it
    dnas, random = by_seed(rows, "dnas", best_val=True), by_seed(rows, "random", best_val=True)
    against_random = compare(dnas, random)
    against_paper = compare(dnas, by_seed(rows_paper, "dnas[paper]", best_val=True))
    # random again, given at most DNAS's search samples: as many whole scorings as fit
    matched_samples = matched_random_samples(rows)
    matched = {"random": {"num_samples": matched_samples, "label": "matched"}}
    rows_matched, info_matched = run_harness(
        args,
        "dnas-random-matched",
        ["--methods", "random", "--method-options", json.dumps(matched)],
    )
    against_matched = compare(dnas, by_seed(rows_matched, "random[matched]", best_val=True))
    return {
        "claim": "DNAS's candidates beat random search at the same limit; >= 90% of the "
        "architectures drawn from P_theta meet the limit; the paper's fixed coefficients",
        "limit": "bitops<=0.3",
        "feasible_share": shares,
        "against_random": {**against_random, "verdict": verdict(against_random, "dnas", "random")},
        "search_samples": {
            "dnas": search_samples(rows, "dnas"),
            "random": search_samples(rows, "random"),
            "random[matched]": search_samples(rows_matched, "random[matched]"),
        },
        "against_random_matched": {
            **against_matched,
            "num_samples": matched_samples,
            "verdict": verdict(against_matched, "dnas", "random[matched]"),
        },
        "auto_against_paper": {
            **against_paper,
            "verdict": verdict(against_paper, "auto", "paper"),
        },
        "runs": [info, info_paper, info_matched],
    }


def search_samples(rows: pd.DataFrame, method: str) -> dict[str, int]:
    """Search samples (images forwarded by the search) of ``method``'s trial per seed."""
    mine = rows[rows["method"] == method].drop_duplicates("seed").sort_values("seed")
    pairs = zip(mine["seed"], mine["samples_processed"], strict=True)
    return {str(int(seed)): int(samples) for seed, samples in pairs}


def matched_random_samples(rows: pd.DataFrame) -> int:
    """How many policies ``random`` may score within DNAS's search samples: DNAS's fewest
    samples over seeds over what one of ``random``'s scorings costs (its samples over its
    ``num_samples``, the default 16: validation plus recalibration images)."""
    from methods.random_search import RandomConfig

    per_score = min(search_samples(rows, "random").values()) / RandomConfig().num_samples
    return max(1, int(min(search_samples(rows, "dnas").values()) // per_score))


def seeds_of(args: argparse.Namespace) -> list[int]:
    return [int(s) for s in args.seeds.split(",")]


OQAT_ARMS = {
    "inherited": "w2_inherited",
    "reinit": "w2_reinit_inherited",
    "direct_same_stage": "w2_direct_same_stage",
    "direct_all_steps": "w2_direct_all_steps",
}
"""The 2-bit supernets of the OQAT claim and their keys in ``bench_oqat.py``'s JSON."""


def claim_oqat(args: argparse.Namespace) -> dict[str, Any]:
    """OQAT's 2-bit supernet by inheritance (4→3→2) against one trained straight from the
    FP supernet for as many 2-bit steps (``direct_same_stage``) and for as many steps as the
    whole chain (``direct_all_steps``), and the chain that re-initialises the steps
    (``reinit``): ``scripts/bench_oqat.py --fidelity`` once per seed (a finished seed is
    kept), test top-1 of five subnets on the ``inherit`` track."""
    folder = Path(args.out) / "runs" / "claim-oqat"
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in seeds_of(args):
        path = folder / f"seed-{seed}.json"
        if not path.exists():
            partial = path.with_suffix(".part")
            command = [sys.executable, str(Path(__file__).with_name("bench_oqat.py"))]
            command += ["--fidelity", "--all-steps", "--reinit", "--seeds", str(seed)]
            command += ["--preset", args.preset, "--stage-epochs", args.oqat_stages]
            command += ["--clip", "5", "--threads", str(args.threads), "--out", str(partial)]
            print(f"claim-oqat seed {seed}: {' '.join(command[1:])}", flush=True)
            if subprocess.run(command, check=False, stdout=subprocess.DEVNULL).returncode:
                raise SystemExit(f"claim-oqat seed {seed}: bench_oqat.py failed")
            partial.replace(path)  # whole or absent: a killed seed runs again
        runs.append(json.loads(path.read_text()))
    firsts = [r["fidelity_runs"][0] for r in runs]  # one seed each
    by_arm = {
        arm: pd.Series({f["seed"]: float(np.mean(list(f[key].values()))) for f in firsts})
        for arm, key in OQAT_ARMS.items()
    }
    subnets = {
        arm: {
            name: round(float(np.mean([r["fidelity_runs"][0][key][name] for r in runs])), 2)
            for name in runs[0]["fidelity_runs"][0][key]
        }
        for arm, key in OQAT_ARMS.items()
    }
    zeros = {arm: runs[0]["fidelity_runs"][0].get(f"{key}_zeros") for arm, key in OQAT_ARMS.items()}
    pairs = {
        "inherited_vs_direct_same_stage": ("inherited", "direct_same_stage"),
        "inherited_vs_direct_all_steps": ("inherited", "direct_all_steps"),
        "reinit_vs_direct_same_stage": ("reinit", "direct_same_stage"),
        "reinit_vs_direct_all_steps": ("reinit", "direct_all_steps"),
        "reinit_vs_inherited": ("reinit", "inherited"),
    }
    comparisons = {}
    for key, (a, b) in pairs.items():
        result = compare(by_arm[a], by_arm[b])
        comparisons[key] = {**result, "verdict": verdict(result, a, b)}
    first = runs[0]["fidelity_runs"][0]
    return {
        "claim": "OQAT's 2-bit supernet by bit inheritance (4->3->2) beats one trained from "
        "the FP supernet",
        "stage_epochs": args.oqat_stages,
        "chain_steps": first["chain_steps"],
        "score": "mean test top-1 of the largest, smallest, reference and 2 random subnets "
        "(inherit track: BN recalibrated, no retraining)",
        "mean_by_subnet": subnets,
        "fp_largest": [r["fidelity_runs"][0]["fp"]["largest"] for r in runs],
        "w4_largest": [r["fidelity_runs"][0]["w4_inherit"]["largest"] for r in runs],
        "diverged": {
            str(r["fidelity_runs"][0]["seed"]): sorted(
                k for k in r["fidelity_runs"][0] if k.endswith("_diverged")
            )
            for r in runs
        },
        "zero_shares_seed_first": zeros,
        **comparisons,
        "runs": [
            {k: r[k] for k in ("wall_seconds", "load_average", "threads", "device")} for r in runs
        ],
    }


def stage_losses(log: dict[str, Any]) -> dict[str, Any]:
    """A QFA search log's stages: final loss, largest loss seen and whether any was not
    finite (from each stage's loss curve)."""
    out = {}
    for stage in log.get("stages", []):
        losses = [loss for _, loss in stage.get("loss_curve", [])]
        out[f"stage{stage['stage']}"] = {
            "steps": stage.get("steps"),
            "final_loss": stage.get("final_loss"),
            "max_loss": max(losses) if losses else None,
            "non_finite": any(not np.isfinite(v) for v in losses),
            "curve": stage.get("loss_curve", []),
        }
    return out


def extremes_by_seed(logs: dict[tuple[str, int], dict], method: str) -> dict[str, pd.Series]:
    """Val top-1 of the trained min and max subnets (mean over the uniform bit-widths) per
    seed, from QFA's search logs."""
    found: dict[str, dict[int, float]] = {"min": {}, "max": {}}
    for (m, seed), log in logs.items():
        if m != method:
            continue
        extremes = log.get("extremes_val_top1", {})
        for end in found:
            values = [v for k, v in extremes.items() if k.startswith(end)]
            if values:
                found[end][seed] = float(np.mean(values))
    return {end: pd.Series(values, dtype=float) for end, values in found.items()}


def claim_qfa(args: argparse.Namespace) -> dict[str, Any]:
    """QFA's supernet with BatchQuant activations against the same supernet, schedule and
    seeds with LSQ activations (``act_quantizer="lsq"``, label ``lsq-act``): each stage's
    loss curve, any divergence, the trained min / max subnets' val top-1 and the retrained
    top-1 of the candidates, on ``mbv3-cifar`` at ``bitops<=0.3``."""
    lsq = {"qfa": {"act_quantizer": "lsq", "label": "lsq-act"}}
    rows_bq, info_bq = run_harness(args, "qfa", ["--methods", "qfa"], space=ELASTIC)
    rows_lsq, info_lsq = run_harness(
        args, "qfa-lsq", ["--methods", "qfa", "--method-options", json.dumps(lsq)], space=ELASTIC
    )
    logs = {**search_logs(args, "qfa"), **search_logs(args, "qfa-lsq")}
    sides = {"batchquant": "qfa", "lsq": "qfa[lsq-act]"}
    result: dict[str, Any] = {
        "claim": "BatchQuant makes the mixed-precision supernet trainable where a learned-range "
        "(LSQ) activation quantizer does not",
        "space": ELASTIC,
        "limit": "bitops<=0.3",
    }
    for side, method in sides.items():
        rows = rows_bq if side == "batchquant" else rows_lsq
        result[side] = {
            "status": rows[rows["method"] == method].drop_duplicates("seed")
            .set_index("seed")["status"].astype(str).to_dict(),
            "stages": {
                str(seed): stage_losses(log) for (m, seed), log in logs.items() if m == method
            },
        }  # fmt: skip
    for end in ("min", "max"):
        a = extremes_by_seed(logs, sides["batchquant"])[end]
        b = extremes_by_seed(logs, sides["lsq"])[end]
        found = compare(a, b)
        result[f"{end}_subnets_val_top1"] = {
            **found,
            "verdict": verdict(found, "batchquant", "lsq"),
        }
    top1 = compare(by_seed(rows_bq, sides["batchquant"]), by_seed(rows_lsq, sides["lsq"]))
    result["retrained_top1"] = {**top1, "verdict": verdict(top1, "batchquant", "lsq")}
    result["runs"] = [info_bq, info_lsq]
    return result


PREDICTOR_OPTIONS = {
    "qfa": {
        "predictor_samples": 100,
        "rescore_held_out": True,
        "max_front": 2,
        "label": "predictor",
    }
}
"""QFA as the preset sets it but with 100 predictor samples (80 fitted, 20 held out), the
held-out ones scored twice (the noise ceiling) and 2 front members retrained."""


def claim_qfa_predictor(args: argparse.Namespace) -> dict[str, Any]:
    """QFA's predictor ranks held-out subnets: held-out Kendall τ on 20 subnets per seed,
    beside the agreement of two scorings of the same 20 (the ceiling any predictor of one
    scoring can reach)."""
    rows, info = qfa_predictor_run(args)
    logs = search_logs(args, "qfa-predictor")
    per_seed = {}
    for (_, seed), log in sorted(logs.items()):
        fit = log.get("predictor", {})
        per_seed[str(seed)] = {
            key: fit.get(key)
            for key in (
                "train", "held_out", "kendall_tau", "rmse", "train_rmse", "top1_min",
                "top1_max", "top1_std", "rescore_kendall_tau", "predictor_vs_rescore_kendall_tau",
            )
        }  # fmt: skip
    taus = [v["kendall_tau"] for v in per_seed.values() if v["kendall_tau"] is not None]
    ceiling = [v["rescore_kendall_tau"] for v in per_seed.values() if v["rescore_kendall_tau"]]
    mean_tau = float(np.mean(taus)) if taus else float("nan")
    mean_ceiling = float(np.mean(ceiling)) if ceiling else float("nan")
    return {
        "claim": "QFA's accuracy predictor ranks held-out subnets (Kendall tau >= 0.5 on 20)",
        "space": ELASTIC,
        "options": PREDICTOR_OPTIONS["qfa"],
        "per_seed": per_seed,
        "mean_kendall_tau": mean_tau,
        "mean_noise_ceiling": mean_ceiling,
        "verdict": (
            f"held-out tau {mean_tau:.2f} (goal 0.5: {'met' if mean_tau >= 0.5 else 'missed'})"
            f" against a noise ceiling of {mean_ceiling:.2f}, {len(taus)} seeds"
            if taus
            else "no seed fitted its predictor (a budget ended the search first: see the "
            "trials' log.txt)"
        ),
        "run": info,
    }


def qfa_predictor_run(args: argparse.Namespace) -> tuple[pd.DataFrame, dict]:
    """The QFA run with 100 predictor samples (2 h of search allowed, 3 h a trial)."""
    extra = ["--methods", "qfa", "--method-options", json.dumps(PREDICTOR_OPTIONS)]
    extra += ["--max-search-seconds", "7200", "--max-trial-seconds", "10800"]
    return run_harness(args, "qfa-predictor", extra, space=ELASTIC)


def tracks_tau(rows: pd.DataFrame) -> dict[str, Any]:
    """Kendall τ between the ``inherit`` and ``retrain`` test top-1 over a run's candidates
    (pooled over seeds; ``ok`` rows only)."""
    ok = rows[rows["status"] == "ok"]
    keys = ["method", "seed", "candidate"]
    inherit = ok[ok["track"] == "inherit"][[*keys, "top1_test"]]
    retrain = ok[ok["track"] == "retrain"][[*keys, "top1_test"]]
    pairs = inherit.merge(retrain, on=keys, suffixes=("_inherit", "_retrain"))
    tau = (
        float(stats.kendalltau(pairs["top1_test_inherit"], pairs["top1_test_retrain"]).statistic)
        if len(pairs) >= 3
        else float("nan")
    )
    return {
        "pairs": len(pairs),
        "kendall_tau": tau,
        "inherit": pairs["top1_test_inherit"].round(2).tolist(),
        "retrain": pairs["top1_test_retrain"].round(2).tolist(),
        "candidates": (pairs["seed"].astype(str) + ":" + pairs["candidate"]).tolist(),
    }


def claim_tracks(args: argparse.Namespace) -> dict[str, Any]:
    """Does a candidate's score with the supernet's own weights (``inherit``: BN
    recalibrated) rank the candidates as their retrained score does? OQAT (its three
    bit-widths' candidates per seed, a run of the preset's ``oqat``) and QFA (the
    predictor run's two front members per seed) on ``mbv3-cifar``."""
    rows_oqat, info_oqat = run_harness(args, "oqat-run", ["--methods", "oqat"], space=ELASTIC)
    rows_qfa, info_qfa = qfa_predictor_run(args)
    out: dict[str, Any] = {
        "claim": "the inherit track ranks OQAT's and QFA's candidates as the retrain track does",
        "space": ELASTIC,
    }
    for name, rows in (("oqat", rows_oqat), ("qfa", rows_qfa)):
        found = tracks_tau(rows)
        found["verdict"] = (
            f"Kendall tau {found['kendall_tau']:.2f} over {found['pairs']} candidates"
        )
        out[name] = found
    out["runs"] = [info_oqat, info_qfa]
    return out


CLAIMS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "dnas": claim_dnas,
    "haq": claim_haq,
    "hawq": claim_hawq,
    "ompq": claim_ompq,
    "oqat": claim_oqat,
    "qfa": claim_qfa,
    "qfa-predictor": claim_qfa_predictor,
    "tracks": claim_tracks,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("claims", nargs="+", choices=sorted(CLAIMS), help="claims to measure")
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds (default 0,1,2)")
    parser.add_argument("--out", default="results/claims", help="output folder")
    parser.add_argument("--threads", type=int, default=2, help="CPUs per trial (default 2)")
    parser.add_argument(
        "--preset", default=PRESET, help="the runs' preset (default fmnist; tiny: a dry run)"
    )
    parser.add_argument(
        "--oqat-stages", default=OQAT_STAGES, help=f"oqat: stage epochs (default {OQAT_STAGES})"
    )
    parser.add_argument(
        "--uniform-runs", default="results/fmnist-preset/runs", help="uniform W4A4 rows (hawq)"
    )
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    kept = Path(args.out) / "fp-starts"  # the FP starts the claims' runs used
    try:
        restored = fp_starts.restore(kept)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if restored:
        print(f"restored {len(restored)} FP start(s) from {kept} into the cache", flush=True)
    dataset = load_preset(args.preset).dataset
    for name in args.claims:
        result = CLAIMS[name](args)
        fp_starts.keep(kept, dataset)
        path = Path(args.out) / f"{name}.json"
        path.write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(json.dumps(result, indent=1, default=float), flush=True)
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
