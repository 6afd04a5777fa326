"""The command line's grammar: ``build_parser``, the argument types and the exit codes.

Bad input raises :class:`UsageError`, reported by :func:`benchmark.cli.main` as one line
on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, NoReturn

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_CONSTRAINT = "bitops<=0.3"
RUN_DEFAULTS = {
    "preset": "smoke",
    "constraint": [DEFAULT_CONSTRAINT],
    "seeds": [0],
    "download": False,
    "cpus_per_trial": 1.0,
    "gpus_per_trial": 0.0,
}
"""``run`` settings whose flags default to ``None`` (so that ``--resume`` can tell a flag
given from one left out) and the values they take when left out."""
DESCRIPTION = "mpqbench: run | leaderboard | list | cost (each has --help)."


class UsageError(Exception):
    """Bad user input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    repeated = [t for i, t in enumerate(items) if t in items[:i]]
    if repeated:  # two identical trials would race into one folder
        message = f"{repeated[0]!r} is given twice in {text!r}: list each once"
        raise argparse.ArgumentTypeError(message)
    return items


MIN_TRIAL_RESOURCE = 0.01
"""Smallest share of a CPU or GPU per trial (Ray's resources have 4 decimals; below a
hundredth a trial's device-hours say nothing)."""


def _trial_cpus(text: str) -> float:
    value = _positive_float(text)
    if value < MIN_TRIAL_RESOURCE:
        message = f"expected at least {MIN_TRIAL_RESOURCE} CPUs per trial, got {text!r}"
        raise argparse.ArgumentTypeError(message)
    return value


def _trial_gpus(text: str) -> float:
    value = _non_negative_float(text)
    if 0 < value < MIN_TRIAL_RESOURCE:
        message = f"expected 0 or at least {MIN_TRIAL_RESOURCE} GPUs per trial, got {text!r}"
        raise argparse.ArgumentTypeError(message)
    return value


MAX_NUM_CLASSES = 10_000
"""Largest ``cost --num-classes`` (the classifier is built in memory to count its MACs)."""


def _seeds(text: str) -> list[int]:
    from benchmark.harness.benchmark_run import MAX_SEED  # the rule a resumed run's seeds obey

    items = [t.strip() for t in text.split(",") if t.strip()]
    for item in items:
        if item.startswith("-") and item[1:].isascii() and item[1:].isdigit():
            message = f"seeds must be between 0 and {MAX_SEED}, got {item}: use e.g. 0,1,2"
            raise argparse.ArgumentTypeError(message)
    if not items or not all(t.isascii() and t.isdigit() for t in items):  # no "+1", "٣"
        raise argparse.ArgumentTypeError(f"seeds must be integers like 0,1,2, got {text!r}")
    seeds = [int(t) for t in items]
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        message = f"seeds must be between 0 and {MAX_SEED}, got {bad[0]}: use e.g. 0,1,2"
        raise argparse.ArgumentTypeError(message)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        message = f"seed {repeated[0]} is given twice in {text!r}: list each seed once"
        raise argparse.ArgumentTypeError(message)
    return seeds


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value


def _seconds(text: str) -> float:
    """A time limit in seconds: above 0 and at most a year (what every timer can hold)."""
    from benchmark.arena.presets import MAX_SECONDS

    value = _positive_float(text)
    if value > MAX_SECONDS:
        message = f"expected at most {MAX_SECONDS:.0f} seconds (a year), got {text!r}"
        raise argparse.ArgumentTypeError(message)
    return value


def _folder(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty path")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _num_classes(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_NUM_CLASSES:
        message = f"expected at most {MAX_NUM_CLASSES} classes, got {text!r}"
        raise argparse.ArgumentTypeError(message)
    return value


def _default_space() -> str:
    from benchmark.arena.spaces import list_spaces

    return "mbv3-cifar" if "mbv3-cifar" in list_spaces() else "resnet20"


def _preset_names() -> str:
    from benchmark.arena.presets import list_presets

    return " | ".join(list_presets())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m benchmark", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = _add_run(sub)
    _add_run_tasks(run)
    _add_run_placement(run)
    _add_run_limits(run)
    _add_leaderboard(sub)
    _add_list(sub)
    _add_cost(sub)
    return parser


def _add_run(sub: Any) -> argparse.ArgumentParser:
    run = sub.add_parser(
        "run",
        help="run methods on tasks and write results + leaderboard",
        description="Run methods on tasks and write results + leaderboard. On a terminal a "
        "live view shows each running trial (stage, steps, samples of the budget, last "
        "metrics, ETA) and the run's ETA; elsewhere (a file, CI) one plain line per stage "
        "change and at most one progress line per trial a minute. Each trial's progress and "
        "log lines are also in RESULTS/runs/RUN_ID/trials/TRIAL/log.txt (tail -f it).",
    )
    return run


def _add_run_tasks(run: argparse.ArgumentParser) -> None:
    """What runs: the methods, the tasks (spaces, datasets, preset, constraints, seeds)."""
    run.add_argument(
        "--methods",
        type=_csv,
        default=None,
        help="comma list of method names or module:Class paths (default: every registered "
        "method, as `python -m benchmark list methods` shows them)",
    )
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        default=None,
        help="finish run RUN_ID in --out: run only its trials without rows, same settings",
    )
    run.add_argument(
        "--space",
        type=_csv,
        default=None,
        help="comma list of spaces (default: mbv3-cifar; resnet20 = classic track)",
    )
    run.add_argument(
        "--dataset",
        type=_csv,
        default=None,
        help="comma list of datasets (default: the preset's, digits for smoke)",
    )
    run.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the dataset's files (CIFAR; Fashion-MNIST's default: "
        "/usr/share/datasets/fashion-mnist)",
    )
    run.add_argument(
        "--download",
        action="store_true",
        default=None,
        help="download CIFAR into --data-dir (needs internet)",
    )
    run.add_argument(
        "--preset",
        default=None,
        help=f"{_preset_names()}, or a .toml file (default smoke; `list presets` says what "
        "each is for)",
    )
    run.add_argument(
        "--constraint",
        type=_csv,
        default=None,
        help=f"comma list, e.g. bitops<=0.5,size<=0.25 (default {DEFAULT_CONSTRAINT})",
    )
    run.add_argument("--seeds", type=_seeds, default=None, help="comma list of seeds (default 0)")


def _add_run_placement(run: argparse.ArgumentParser) -> None:
    """Where it runs and writes: folders, the executor, each trial's resources."""
    run.add_argument(
        "--out",
        type=_folder,
        default="results",
        help="output folder: the run is written to OUT/runs/RUN_ID/ (default results/)",
    )
    run.add_argument("--run-id", default=None, help="name of the run folder (default: time-pid)")
    run.add_argument(
        "--cache-dir",
        type=_folder,
        default=None,
        help="FP checkpoint cache (default $MPQBENCH_CACHE or ~/.cache/mpqbench)",
    )
    run.add_argument(
        "--executor",
        choices=("ray", "serial"),
        default="ray",
        help="ray (default) or serial (in-process, for debugging)",
    )
    run.add_argument(
        "--address", default=None, help="join a running Ray cluster (e.g. auto or HOST:6379)"
    )
    run.add_argument(
        "--cpus-per-trial",
        type=_trial_cpus,
        default=None,
        help="CPUs per trial (default 1); on a CPU, device-hours are wall hours × these CPUs",
    )
    run.add_argument(
        "--gpus-per-trial",
        type=_trial_gpus,
        default=None,
        help="GPUs per trial, fractions allowed (default 0); on a GPU, device-hours are wall "
        "hours × this fraction",
    )


def _add_run_limits(run: argparse.ArgumentParser) -> None:
    """Budgets, the methods' options, the leaderboard and how much is printed."""
    run.add_argument(
        "--max-search-seconds",
        type=_seconds,
        default=None,
        help="override the preset's search budget (seconds)",
    )
    run.add_argument(
        "--max-search-samples",
        type=_positive_int,
        default=None,
        help="override the preset's search budget (training samples)",
    )
    run.add_argument(
        "--method-options",
        default=None,
        help='JSON {"method": {"key": value}}: keys of the method\'s config, over its preset '
        "section's values",
    )
    run.add_argument(
        "--max-trial-seconds",
        type=_seconds,
        default=None,
        help="stop a trial (search + evaluation) after this many seconds: status timeout "
        "(default: the preset's)",
    )
    run.add_argument("--no-leaderboard", action="store_true", help="skip the leaderboard")
    talk = run.add_mutually_exclusive_group()
    talk.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only the run's final summary (and its warnings and errors)",
    )
    talk.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the methods' and recipes' log lines (they are always in each "
        "trial's log.txt)",
    )


def _add_leaderboard(sub: Any) -> None:
    lb = sub.add_parser("leaderboard", help="aggregate runs into leaderboard.md/.csv/.html")
    lb.add_argument(
        "run_dirs",
        nargs="*",
        default=["results"],
        help="run folders or --out folders (default results/)",
    )
    lb.add_argument(
        "--out",
        type=_folder,
        default=None,
        help="where to write (default: the single run dir, else results/)",
    )
    lb.add_argument(
        "--all-repeats",
        action="store_true",
        help="show every repeat of a (method, task, seed) as its own entry, named "
        "'method (run ID)' (default: only its most recent finished trial counts)",
    )
    lb.add_argument(
        "--allow-mixed",
        action="store_true",
        help="pool records of different mpqbench versions / git SHAs and older records "
        "formats (default: each is kept in its own task groups, with a warning)",
    )


def _add_list(sub: Any) -> None:
    ls = sub.add_parser("list", help="list methods, spaces, datasets, presets")
    ls.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=("all", "methods", "spaces", "datasets", "presets"),
    )


def _add_cost(sub: Any) -> None:
    cost = sub.add_parser("cost", help="MACs, BitOPs, MFLOPs/64 and size of a policy")
    cost.add_argument(
        "--space", default=_default_space(), help="the space (default: run's, mbv3-cifar)"
    )
    cost.add_argument(
        "--policy", default="w8a8", help="uniform (w4a4) or a JSON file of per-layer bits"
    )
    cost.add_argument("--arch", default=None, help="architecture JSON (file or inline)")
    cost.add_argument(
        "--fixed-bits",
        type=int,
        default=8,
        help="bits of the convention-fixed layers (first conv, classifier)",
    )
    cost.add_argument("--num-classes", type=_num_classes, default=10)
    cost.add_argument("--json", action="store_true", help="print one JSON object")
