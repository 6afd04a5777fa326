"""The reference run on Fashion-MNIST (``results/reference/``), in pieces that resume.

Every registered method on ``mbv3-cifar`` and ``resnet20`` at ``bitops<=0.2`` and
``bitops<=0.3`` with the ``fmnist`` preset, seeds 0, 1 and 2, and the variants that the
fidelity issues measured as entries of their own: ``dnas[paper]`` (the paper's fixed
coefficients, β 0.2 and γ 0.6, where ``dnas`` adjusts γ) and ``oqat[reinit]`` (the
inherited weights with the step sizes re-initialised at each lower bit-width, where
``oqat`` doubles them as the paper does).

The limits sit just past a uniform step (``python -m benchmark cost --space S --policy
w4a4``): ``bitops<=0.3`` is just above uniform W4A4 (0.291x W8A8 on ``mbv3-cifar``, 0.258x
on ``resnet20``); ``bitops<=0.2`` is just above W3A3 (0.187x, 0.150x) and below W4A4, so
uniform must drop to 3 bits while a mixed policy can spend the slack. HAWQ-V3's {4, 8} bits
cannot go below W4A4, nor OMPQ with 8-bit activations below W2A8 (the same cost), so HAWQ-V3
chooses from the space's bits (``hawq[bits=space]``) and OMPQ quantizes activations to 4
bits (``ompq[a_bits=4]``; W2A4 costs 0.173x and 0.135x), as in the smoke reference.

A piece is one (space, limit, seed): two harness runs under ``results/reference/runs/``,
``ref-<space>-<limit>-s<seed>`` (the eight methods) and ``...-variants``, with Ray, one CPU
a trial (two trials side by side on 2 cores). Before its runs, the FP starting point of the
piece's (space, seed) is built at 2 threads if it is not cached, so that no trial waits on
another's build and every session builds the same weights (a cached one built at another
thread count is refused). The file is kept in ``results/reference/fp-starts/`` (commit it
with the piece) and restored from there into an empty cache, so that a piece run on another
machine starts from the same weights without a rebuild (``scripts/fp_starts.py``). A
finished piece's wall seconds, the machine's load before and after and the commit go to
``piece.json`` in its first run's folder. The pooled leaderboard and
plots are written to ``results/reference/`` at the end (``--no-leaderboard`` skips them).

    bash scripts/reference.sh --list             # the pieces, their state, the projection
    bash scripts/reference.sh                    # every piece not started, in order
    bash scripts/reference.sh --pieces resnet20-bitops0.2-s0,resnet20-bitops0.3-s0
    bash scripts/reference.sh --resume           # finish interrupted pieces, then the rest
    bash scripts/reference.sh --seeds 3,4 --spaces resnet20   # more seeds where needed

Before it starts, it prints the projected wall time of the pieces it will run
(``scripts/project_reference.py``'s figures). It commits nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from fp_starts import keep_file, restore  # noqa: E402 - the scripts folder is not a package
from project_reference import (  # noqa: E402
    FP_SECONDS,
    THREAD_GAIN,
    TRIALS,
    UNIFORM_RUN,
    Job,
    project,
    seconds_at_limit,
    trial_seconds,
    uniform_candidates,
)

OUT = "results/reference"
PRESET = "fmnist"
SPACES = ("mbv3-cifar", "resnet20")
LIMITS = ("bitops<=0.2", "bitops<=0.3")
METHODS = ("dnas", "haq", "hawq", "ompq", "oqat", "qfa", "random", "uniform")
OPTIONS: dict[str, dict[str, Any]] = {"hawq": {"bits": "space"}, "ompq": {"a_bits": 4}}
FP_THREADS = 2
"""torch threads of every FP start the reference builds: on a CPU, two builds at one thread
count are bit-identical and builds at different counts are not, so pieces built in different
sessions share their (space, seed)'s FP start only at a fixed count."""
VARIANTS: dict[str, dict[str, Any]] = {
    "dnas": {"beta": 0.2, "gamma": 0.6, "label": "paper"},
    "oqat": {"inherit_steps": "reinit", "label": "reinit"},
}


@dataclass(frozen=True)
class HarnessRun:
    """One ``benchmark run`` of a piece: its run id, methods and method options."""

    run_id: str
    methods: tuple[str, ...]
    options: dict[str, dict[str, Any]]

    def entries(self) -> list[str]:
        """The leaderboard entries it adds (``dnas[paper]`` for a labelled variant)."""
        return [
            f"{m}[{self.options[m]['label']}]" if "label" in self.options.get(m, {}) else m
            for m in self.methods
        ]


@dataclass(frozen=True)
class Piece:
    """One (space, limit, seed) of the reference run."""

    space: str
    limit: str
    seed: int
    runs: tuple[HarnessRun, ...]

    @property
    def name(self) -> str:
        """``resnet20-bitops0.2-s0``: the first run's id without its ``ref-``."""
        return self.runs[0].run_id.removeprefix("ref-")


def plan_pieces(
    spaces: list[str], limits: list[str], seeds: list[int], methods: list[str]
) -> list[Piece]:
    """Every piece, seed-major (a seed's pieces are done before the next seed starts)."""
    main = tuple(m for m in METHODS if m in methods) + tuple(m for m in methods if m not in METHODS)
    variants = tuple(m for m in VARIANTS if m in methods)
    pieces = []
    for seed in seeds:
        for space in spaces:
            for limit in limits:
                stem = f"ref-{space}-{limit.replace('<=', '')}-s{seed}"
                runs = [HarnessRun(stem, main, {m: OPTIONS[m] for m in main if m in OPTIONS})]
                if variants:
                    runs.append(
                        HarnessRun(f"{stem}-variants", variants, {m: VARIANTS[m] for m in variants})
                    )
                pieces.append(Piece(space, limit, seed, tuple(r for r in runs if r.methods)))
    return pieces


def run_state(folder: Path) -> str:
    """``"to run"`` (no folder), ``"done"`` (every planned trial has rows) or
    ``"interrupted"``."""
    meta = folder / "metadata.json"
    if not meta.exists():
        return "to run"
    planned = set(json.loads(meta.read_text()).get("trials", []))
    records = folder / "records.parquet"
    if not planned or not records.exists():
        return "interrupted"
    import pandas as pd

    done = set(pd.read_parquet(records, columns=["trial_key"])["trial_key"])
    return "done" if planned <= done else "interrupted"


def piece_state(piece: Piece, out: Path) -> str:
    """A piece is done when both runs are, to run when neither started, else interrupted."""
    states = {run_state(out / "runs" / run.run_id) for run in piece.runs}
    if states == {"done"}:
        return "done"
    if states == {"to run"}:
        return "to run"
    return "interrupted"


def harness_command(piece: Piece, run: HarnessRun, args: argparse.Namespace) -> list[str]:
    """The ``benchmark run`` of one of a piece's runs: new, or ``--resume`` where its folder
    has metadata (a resumed run takes its settings from it)."""
    command = [sys.executable, "-m", "benchmark", "run", "--out", str(args.out)]
    if (Path(args.out) / "runs" / run.run_id / "metadata.json").exists():
        return [*command, "--resume", run.run_id]
    command += ["--preset", args.preset, "--space", piece.space, "--constraint", piece.limit]
    command += ["--seeds", str(piece.seed), "--methods", ",".join(run.methods)]
    if run.options:
        command += ["--method-options", json.dumps(run.options)]
    command += ["--cpus-per-trial", "1", "--executor", args.executor]
    return [*command, "--run-id", run.run_id, "--no-leaderboard"]


def fp_cached(space_name: str, seed: int, preset_name: str) -> bool:
    """Whether this machine's cache holds the FP start of (space, seed) for the preset,
    built at :data:`FP_THREADS` threads (one built at another count will be refused)."""
    from benchmark.arena.cache import load_verified
    from benchmark.arena.presets import load_preset
    from benchmark.arena.recipes.pretrain import fp_cache_file

    preset = load_preset(preset_name)
    splits, space = _task_data(space_name, seed, preset)
    payload = load_verified(fp_cache_file(space, splits, preset, seed=seed))
    return payload is not None and payload["info"].get("threads") == FP_THREADS


def _task_data(space_name: str, seed: int, preset: Any) -> tuple[Any, Any]:
    from benchmark.arena.data import load_preset_splits
    from benchmark.arena.spaces import get_space

    splits = load_preset_splits(preset, seed)
    return splits, get_space(space_name, num_classes=splits.num_classes)


def build_fp(space_name: str, seed: int, preset_name: str, kept: Path) -> dict[str, Any]:
    """Build (or find, in the cache or kept in ``kept``) the FP start of (space, seed) at
    :data:`FP_THREADS` threads, as a trial would, and keep it in ``kept``. Raises
    ``ValueError`` if the cache holds one built at another count, or another build."""
    import torch

    from benchmark.arena.presets import load_preset
    from benchmark.arena.recipes.pretrain import fp_cache_file, fp_starting_point

    restore(kept)
    torch.set_num_threads(FP_THREADS)
    preset = load_preset(preset_name)
    splits, space = _task_data(space_name, seed, preset)
    built_by = {"device": "cpu", "device_share": float(FP_THREADS)}
    _, info = fp_starting_point(space, splits, preset, seed=seed, built_by=built_by)
    path = fp_cache_file(space, splits, preset, seed=seed)
    threads = info.get("threads")
    if threads != FP_THREADS:
        built = "an unrecorded number of threads" if threads is None else f"{threads} thread"
        built += "s" if threads not in (None, 1) else ""
        raise ValueError(
            f"the cached FP start of {space_name} seed {seed} was built at {built}, the "
            f"reference's at {FP_THREADS} (the weights' last bits depend on it): remove "
            f"{path} or point $MPQBENCH_CACHE at another folder"
        )
    keep_file(path, kept)
    return {"cached": info["cached"], "val_top1": info["val_top1"], "threads": FP_THREADS}


def projection(pieces: list[Piece], cpus: int, cached: set[tuple[str, int]]) -> dict[str, Any]:
    """The projected wall hours of ``pieces`` from the recorded trial times."""
    uniform = uniform_candidates(ROOT / UNIFORM_RUN)
    seconds = trial_seconds(ROOT / TRIALS, uniform)
    jobs: list[Job] = []
    for space, seed in sorted({(p.space, p.seed) for p in pieces} - cached):
        jobs.append(Job("fp", "fp", space, seed, FP_SECONDS[space]))
    for piece in pieces:
        for run in piece.runs:
            for method, entry in zip(run.methods, run.entries(), strict=True):
                if (method, piece.space) not in seconds:
                    raise ValueError(f"no recorded trial time for {method}/{piece.space}")
                spent = seconds_at_limit(method, piece.space, piece.limit, seconds, uniform)
                jobs.append(Job("trial", entry, piece.space, piece.seed, spent))
    return project(jobs, cpus, 1, THREAD_GAIN)


def machine_state() -> dict[str, Any]:
    """The load and the commit, recorded beside a piece's wall time."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "git_sha": sha or None,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run_piece(piece: Piece, args: argparse.Namespace) -> int:
    """Build the piece's FP start, run (or resume) its harness runs, record its wall time.
    Returns the worst harness exit code (0 ok, 1 a trial not ok, 130 interrupted)."""
    before, wall = machine_state(), time.perf_counter()
    print(f"== piece {piece.name}", flush=True)
    fp = build_fp(piece.space, piece.seed, args.preset, Path(args.out) / "fp-starts")
    print(f"   FP start of {piece.space} seed {piece.seed}: {fp}", flush=True)
    worst = 0
    for run in piece.runs:
        if run_state(Path(args.out) / "runs" / run.run_id) == "done":
            continue
        command = harness_command(piece, run, args)
        print("   python " + " ".join(command[1:]), flush=True)
        code = subprocess.run(command, cwd=ROOT, check=False).returncode
        if code not in (0, 1):  # 2: refused, 130: interrupted
            return code
        worst = max(worst, code)
    record = {
        "piece": piece.name,
        "runs": [run.run_id for run in piece.runs],
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "machine_before": before,
        "machine_after": machine_state(),
        "resumed": args.resume,
    }
    path = Path(args.out) / "runs" / piece.runs[0].run_id / "piece.json"
    history = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*history, record], indent=1) + "\n")
    print(f"   piece {piece.name}: {record['wall_seconds'] / 3600:.2f} h", flush=True)
    return worst


def comma_list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bash scripts/reference.sh",
        description=__doc__.split("\n\n")[0],
        epilog="A piece is one (space, limit, seed); --list names them. Exit 0: every trial "
        "ok; 1: a trial not ok (counted against its method); 2: bad input or a refused "
        "FP start; 130: interrupted (--resume finishes it).",
    )
    parser.add_argument("--list", action="store_true", help="list the pieces; run nothing")
    parser.add_argument("--resume", action="store_true", help="finish interrupted pieces first")
    parser.add_argument("--pieces", default="", help="comma list of piece names (default: all)")
    parser.add_argument("--spaces", default=",".join(SPACES), help="comma list (default: both)")
    parser.add_argument("--limits", default=",".join(LIMITS), help="comma list of constraints")
    parser.add_argument("--seeds", default="0,1,2", help="comma list (default: 0,1,2)")
    parser.add_argument("--methods", default=",".join(METHODS), help="a subset (default: all)")
    parser.add_argument("--preset", default=PRESET, help=argparse.SUPPRESS)  # tests: tiny
    parser.add_argument("--executor", default="ray", choices=("ray", "serial"))
    parser.add_argument("--out", default=OUT, help=f"results folder (default: {OUT})")
    parser.add_argument("--no-leaderboard", action="store_true", help="skip the pooled board")
    return parser.parse_args(argv)


def select(args: argparse.Namespace) -> list[Piece]:
    """The pieces the arguments name; a bad name or value raises ``ValueError``."""
    unknown = sorted(set(comma_list(args.spaces)) - set(SPACES))
    if unknown:
        raise ValueError(f"unknown space {', '.join(unknown)}: use {', '.join(SPACES)}")
    methods = comma_list(args.methods)
    if not methods or not set(methods) <= set(METHODS):
        raise ValueError(f"--methods takes a subset of {', '.join(METHODS)}")
    try:
        seeds = [int(s) for s in comma_list(args.seeds)]
    except ValueError:
        raise ValueError(f"--seeds takes integers, got {args.seeds!r}") from None
    from benchmark.arena.protocol import Constraint, ProtocolError

    limits = comma_list(args.limits)
    for limit in limits:
        try:
            Constraint.parse(limit)
        except ProtocolError as error:
            raise ValueError(str(error)) from None
    pieces = plan_pieces(comma_list(args.spaces), limits, seeds, methods)
    wanted = comma_list(args.pieces)
    missing = sorted(set(wanted) - {p.name for p in pieces})
    if missing:
        raise ValueError(f"no piece {', '.join(missing)}: `bash scripts/reference.sh --list`")
    return [p for p in pieces if not wanted or p.name in wanted]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        pieces = select(args)
        out = Path(args.out)
        states = {p.name: piece_state(p, out) for p in pieces}
        todo = [p for p in pieces if states[p.name] != "done"]
        pairs = {(p.space, p.seed) for p in todo}  # a (space, seed)'s pieces share one start
        cached = {(space, seed) for space, seed in pairs if fp_cached(space, seed, args.preset)}
        plan = projection(todo, os.cpu_count() or 1, cached) if args.preset == PRESET else None
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for piece in pieces:
        print(
            f"{piece.name:<28} {states[piece.name]:<12} "
            + ", ".join(e for run in piece.runs for e in run.entries())
        )
    if plan is not None:
        print(
            f"projected: {plan['wall_hours']} h for {len(todo)} pieces ({plan['trials']} trials, "
            f"{plan['fp_builds']} FP builds, {plan['slots']} at a time), an upper bound "
            "(scripts/project_reference.py)",
            flush=True,
        )
    if args.list:
        return 0
    interrupted = [p.name for p in todo if states[p.name] == "interrupted"]
    if interrupted and not args.resume:
        print(
            f"error: piece {interrupted[0]} was interrupted: finish it with "
            "`bash scripts/reference.sh --resume`",
            file=sys.stderr,
        )
        return 2
    order = [p for p in todo if states[p.name] == "interrupted"]
    order += [p for p in todo if states[p.name] == "to run"]
    worst = 0
    for piece in order:
        try:
            code = run_piece(piece, args)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if code not in (0, 1):
            print(f"stopped in piece {piece.name}: `bash scripts/reference.sh --resume`")
            return code
        worst = max(worst, code)
    if not args.no_leaderboard and order:
        board = [sys.executable, "-m", "benchmark", "leaderboard", str(out), "--allow-mixed"]
        subprocess.run([*board, "--out", str(out)], cwd=ROOT, check=False)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
