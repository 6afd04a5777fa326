"""``python -m benchmark``: run | leaderboard | list | cost.

Bad input exits with code 2 and one line on stderr; a run exits 0 when every trial
is ok and 1 when some failed (results are written either way).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from benchmark.records import RunStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_CONSTRAINT = "bitops<=0.3"


class UsageError(Exception):
    """Bad user input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


MAX_SEED = 2**32 - 1
"""Largest seed every RNG in the harness accepts (numpy's legacy seeding is 32-bit)."""

MAX_NUM_CLASSES = 10_000
"""Largest ``cost --num-classes`` (the classifier is built in memory to count its MACs)."""


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in _csv(text)]
    except (ValueError, argparse.ArgumentTypeError):
        message = f"seeds must be integers like 0,1,2, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
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
    from benchmark.spaces import list_spaces

    return "mbv3-cifar" if "mbv3-cifar" in list_spaces() else "resnet20"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m benchmark", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run methods on tasks and write results + leaderboard")
    run.add_argument(
        "--methods",
        type=_csv,
        default=None,
        help="comma list of method names or module:Class paths (required unless --resume)",
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
    run.add_argument("--data-dir", default=None, help="folder holding the CIFAR files")
    run.add_argument(
        "--download", action="store_true", help="download CIFAR into --data-dir (needs internet)"
    )
    run.add_argument("--preset", default="smoke", help="smoke | small | paper (default smoke)")
    run.add_argument(
        "--constraint",
        type=_csv,
        default=[DEFAULT_CONSTRAINT],
        help=f"comma list, e.g. bitops<=0.5,size<=0.25 (default {DEFAULT_CONSTRAINT})",
    )
    run.add_argument("--seeds", type=_seeds, default=[0], help="comma list of seeds (default 0)")
    run.add_argument("--out", default="results", help="output folder (default results/)")
    run.add_argument("--run-id", default=None, help="name of the run folder (default: time-pid)")
    run.add_argument(
        "--cache-dir",
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
    run.add_argument("--cpus-per-trial", type=_positive_float, default=1.0)
    run.add_argument("--gpus-per-trial", type=_non_negative_float, default=0.0)
    run.add_argument(
        "--max-search-seconds",
        type=_positive_float,
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
        help='JSON {"method": {"option": value}} passed to method constructors',
    )
    run.add_argument(
        "--max-trial-seconds",
        type=_positive_float,
        default=None,
        help="stop a trial (search + evaluation) after this many seconds: status timeout "
        "(default: the preset's)",
    )
    run.add_argument("--no-leaderboard", action="store_true", help="skip the leaderboard")
    run.add_argument("-v", "--verbose", action="store_true", help="log training progress")

    lb = sub.add_parser("leaderboard", help="aggregate runs into leaderboard.md/.csv/.html")
    lb.add_argument(
        "run_dirs",
        nargs="*",
        default=["results"],
        help="run folders or --out folders (default results/)",
    )
    lb.add_argument(
        "--out", default=None, help="where to write (default: the single run dir, else results/)"
    )

    ls = sub.add_parser("list", help="list methods, spaces, datasets, presets")
    ls.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=("all", "methods", "spaces", "datasets", "presets"),
    )

    cost = sub.add_parser("cost", help="MACs, BitOPs, MFLOPs/64 and size of a policy")
    cost.add_argument("--space", default="resnet20")
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
    return parser


# --- commands ---------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from benchmark.data import list_datasets
    from benchmark.presets import list_presets, load_preset
    from benchmark.spaces import get_space, list_spaces
    from methods import get_method, list_methods

    if args.what in ("all", "methods"):
        print("methods:")
        for name in list_methods():
            cls = get_method(name)
            doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
            print(f"  {name:12s} searches {cls.searches:18s} {doc.splitlines()[0][:70]}")
    if args.what in ("all", "spaces"):
        print("spaces:")
        for name in list_spaces():
            print(f"  {name:12s} searches {get_space(name).searches}")
    if args.what in ("all", "datasets"):
        print("datasets:\n  " + "\n  ".join(list_datasets()))
    if args.what in ("all", "presets"):
        print("presets:")
        for name in list_presets():
            print(f"  {name:12s} {load_preset(name).description}")
    return EXIT_OK


def _is_file(text: str) -> bool:
    """Whether ``text`` names an existing file (``False`` for paths the OS refuses)."""
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _read_json_arg(text: str, option: str) -> Any:
    """``text`` as JSON, read from the file it names or else inline."""
    try:
        raw = Path(text).read_text() if _is_file(text) else text
        return json.loads(raw)
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {option} file {text} ({err}): check the path") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, too many digits, nesting
        raise UsageError(
            f"{option} is neither a JSON file nor inline JSON ({err}): pass a .json file or "
            "a JSON text"
        ) from None


def cmd_cost(args: argparse.Namespace) -> int:
    from benchmark.policy import load_policy_file
    from benchmark.spaces import get_space

    space = get_space(args.space, fixed_bits=args.fixed_bits, num_classes=args.num_classes)
    arch = None if args.arch is None else _read_json_arg(args.arch, "--arch")
    arch = space.validate_arch(arch)
    if args.policy.endswith(".json") or _is_file(args.policy):
        policy = space.full_policy(load_policy_file(args.policy), arch)
    else:
        policy = space.parse_policy(args.policy, arch)
    report = space.cost(policy, arch)
    reference = space.reference()
    data = {
        "space": space.name,
        "arch": None if arch is None else getattr(arch, "to_dict", lambda: arch)(),
        **report.to_dict(),
        "space_bitops_w8a8": reference.bitops_w8a8,
        "space_bitops_ratio": report.bitops / reference.bitops_w8a8,
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    print(f"{space.name}: {len(report.layers)} layers, {report.macs:,} MACs per image")
    print(f"{'layer':28s} {'kind':7s} {'MACs':>12s} {'params':>9s}  W  A")
    for c in report.layers:
        print(f"{c.name:28s} {c.kind:7s} {c.macs:12,d} {c.params:9,d} {c.w_bits:2d} {c.a_bits:2d}")
    print(
        f"BitOPs {report.bitops:,} ({report.bitops_ratio_w8a8:.4f}× W8A8), "
        f"MFLOPs/64 {report.mflops64:.3f}, size {report.size_bits:,} bits "
        f"({report.size_bits / 8 / 1024:.1f} KiB, {report.size_ratio_w8a8:.4f}× 8-bit)"
    )
    return EXIT_OK


def _validate_run(args: argparse.Namespace, options: object) -> None:
    """Check every input before anything starts or is written: names, constraints, method
    options, resources, folders, data files, the cluster address (cheapest checks first)."""
    from benchmark import validation
    from benchmark.data import check_data_dir, list_datasets
    from benchmark.presets import load_preset
    from benchmark.protocol import Constraint
    from benchmark.spaces import get_space
    from methods import get_method

    preset = load_preset(args.preset)
    args.space = args.space or [_default_space()]
    args.dataset = args.dataset or [preset.dataset]
    for name in args.method_list:
        get_method(name)
    spaces = [get_space(name) for name in args.space]
    for name in args.dataset:
        if name not in list_datasets():
            raise UsageError(
                f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}"
            )
        if name != "digits" and args.data_dir is None and not args.download:
            raise UsageError(f"dataset {name} needs --data-dir (or --download with internet)")
    constraints = [Constraint.parse(c) for c in args.constraint]
    args.constraint = [c.text for c in constraints]
    try:
        if args.method_options is not None:
            validation.check_method_options(options, args.method_list)
        if args.run_id is not None:
            validation.check_run_id(args.run_id)
        if args.executor == "ray" and args.address:
            validation.parse_address(args.address)  # its syntax now, the connection last
        validation.check_resources(
            args.cpus_per_trial,
            args.gpus_per_trial,
            executor=args.executor,
            address=args.address if args.executor == "ray" else None,
        )
        validation.check_writable_dir(args.out, "--out")
        if args.cache_dir is not None:
            validation.check_writable_dir(args.cache_dir, "--cache-dir")
        for name in args.dataset:  # CIFAR: files present and their MD5 (~1 s)
            check_data_dir(name, args.data_dir, download=args.download)
        for space in spaces:  # profiles the space's smallest model once (~0.1 s)
            for constraint in constraints:
                validation.check_constraint_reachable(constraint, space)
        if args.executor == "ray" and args.address:
            validation.check_address(args.address)
    except validation.InputError as err:
        raise UsageError(str(err)) from None


RESUMED_SETTINGS = (
    "methods",
    "space",
    "dataset",
    "data_dir",
    "download",
    "preset",
    "constraint",
    "seeds",
    "cache_dir",
    "cpus_per_trial",
    "gpus_per_trial",
    "max_search_seconds",
    "max_search_samples",
    "max_trial_seconds",
    "method_options",
)


def _load_resumed(args: argparse.Namespace) -> None:
    """Fill ``args`` with the settings stored in the run to resume."""
    runs = Path(args.out).expanduser().resolve() / "runs"
    meta_path = runs / args.resume / "metadata.json"
    if args.methods is not None:
        raise UsageError("--resume reruns the run's own grid: leave out --methods")
    try:
        meta = json.loads(meta_path.read_text())
        settings = meta["settings"]
    except FileNotFoundError:
        known = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
        hint = f"runs in {runs}: {', '.join(known[-5:])}" if known else f"no runs in {runs}"
        raise UsageError(f"no run {args.resume!r} to resume ({hint}); check --out") from None
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(
            f"cannot resume {args.resume}: {meta_path} is unreadable ({err})"
        ) from None
    for name in RESUMED_SETTINGS:
        setattr(args, name, settings[name])
    args.run_id = args.resume


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.checkpoints import LockedError, file_lock
    from benchmark.records import RunStore, new_run_id

    if args.resume:
        _load_resumed(args)
    elif args.methods is None:
        raise UsageError("--methods is required (or --resume RUN_ID to finish a run)")
    args.method_list = args.methods
    options: dict[str, dict] = {}
    if args.method_options is not None:
        try:
            options = json.loads(args.method_options)
        except (ValueError, RecursionError) as err:
            raise UsageError(f"--method-options is not valid JSON ({err})") from None
    _validate_run(args, options)
    # trials may run in other processes (Ray workers) with another working directory
    if args.preset.endswith(".toml"):
        args.preset = str(Path(args.preset).resolve())
    for name in ("data_dir", "cache_dir"):
        if getattr(args, name):
            setattr(args, name, str(Path(getattr(args, name)).expanduser().resolve()))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    run_id = args.run_id or new_run_id()
    run_dir = Path(args.out).expanduser().resolve() / "runs" / run_id
    if not args.resume and (run_dir / "metadata.json").exists():
        raise UsageError(
            f"run {run_id} already exists in {run_dir.parent}; "
            f"finish it with --resume {run_id} or choose another --run-id"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(run_dir / ".lock", blocking=False):
            return _run_locked(args, run_id, run_dir, options, RunStore.open(run_dir))
    except LockedError:
        raise UsageError(
            f"run {run_id} is being written by another process; wait for it to end"
        ) from None
    except OSError as err:
        raise UsageError(f"cannot write to {run_dir}: {err.strerror or err}") from None


def _run_locked(
    args: argparse.Namespace, run_id: str, run_dir: Path, options: dict, store: RunStore
) -> int:
    from benchmark.presets import load_preset
    from benchmark.records import hardware, versions
    from benchmark.runner import Grid, make_specs, run_ray, run_serial, stderr_progress
    from benchmark.trial import read_outbox

    grid = Grid(
        args.method_list, args.space, args.dataset, args.constraint, args.seeds, args.preset
    )
    specs = make_specs(
        grid,
        run_id,
        run_dir,
        options,
        data_dir=args.data_dir,
        download=args.download,
        cache_dir=args.cache_dir,
        max_search_seconds=args.max_search_seconds,
        max_search_samples=args.max_search_samples,
        max_trial_seconds=args.max_trial_seconds,
        cpus=args.cpus_per_trial,
        gpus=args.gpus_per_trial,
    )
    if not args.resume:
        store.write_metadata(
            {
                "run_id": run_id,
                "command": " ".join(sys.argv),
                "settings": {name: getattr(args, name) for name in RESUMED_SETTINGS},
                "grid": {
                    k: list(v) if isinstance(v, list | tuple) else v for k, v in vars(grid).items()
                },
                "executor": args.executor,
                "preset": load_preset(args.preset).to_dict(),
                "versions": versions(),
                "hardware": hardware(),
                "trials": [s.key for s in specs],
            }
        )
    finished = store.finished_trials()
    pending = [s for s in specs if s.key not in finished]
    recovered = 0
    for spec in list(pending):  # finished in a worker, but the driver died before storing
        rows = read_outbox(spec)
        if rows is not None:
            recovered += store.add(rows) > 0
            pending.remove(spec)
    what = f"{len(specs)} trial(s)"
    if args.resume:
        what = f"resuming, {len(pending)} of {what} to run"
    extra = f" ({recovered} recovered from worker outboxes)" if recovered else ""
    stderr_progress(f"run {run_id}: {what}{extra} → {run_dir}")
    interrupted = False
    try:
        if args.executor == "serial":
            run_serial(pending, store, stderr_progress)
        elif pending:
            run_ray(
                pending,
                store,
                stderr_progress,
                address=args.address,
                cpus_per_trial=args.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial,
            )
    except KeyboardInterrupt:
        interrupted = True
    frame = store.frame()
    if not args.no_leaderboard and len(frame):
        try:
            _write_leaderboard([run_dir], run_dir)
        except Exception as err:  # noqa: BLE001 - the rows are safe; say so and go on
            stderr_progress(
                f"warning: leaderboard not written ({type(err).__name__}: {err}); "
                f"rerun `python -m benchmark leaderboard {run_dir}`"
            )
    missing = {s.key for s in specs} - store.finished_trials()
    failed = frame[frame["status"] != "ok"]
    stderr_progress(
        f"run {run_id}: {len(frame)} rows, {len(failed)} not ok, {len(missing)} trial(s) "
        f"without rows; results in {run_dir}"
    )
    if interrupted:
        stderr_progress(
            f"interrupted: {len(specs) - len(missing)} of {len(specs)} trial(s) done; "
            f"finish with `python -m benchmark run --resume {run_id} --out {run_dir.parents[1]}`"
        )
        return EXIT_INTERRUPTED
    return EXIT_FAILED if len(failed) or missing else EXIT_OK


def _write_leaderboard(run_dirs: Sequence[Path], out_dir: Path) -> list[Path]:
    try:
        from benchmark.leaderboard import build_leaderboard, load_runs, write_leaderboard
        from benchmark.plots import write_plots
    except ImportError:  # the leaderboard module is optional until it lands
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load_runs(list(run_dirs))
    for warning in caught:  # e.g. an unreadable records file: one line each, then go on
        print(f"warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
    paths = write_leaderboard(build_leaderboard(frame), out_dir)
    paths += write_plots(frame, out_dir)
    for path in paths:
        print(path)
    return paths


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmark.leaderboard import LeaderboardError
    from benchmark.validation import InputError, check_writable_dir

    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:
        if not _exists(d):
            raise UsageError(f"{d} does not exist: pass run folders or an --out folder")
    out = Path(args.out) if args.out else (dirs[0] if len(dirs) == 1 else Path("results"))
    if not args.out and out.is_file():  # a records file as the only argument
        out = out.parent
    try:
        check_writable_dir(out, "--out")
    except InputError as err:
        raise UsageError(str(err)) from None
    try:
        _write_leaderboard(dirs, out)
    except LeaderboardError as err:
        raise UsageError(f"{err}: pass run folders written by `python -m benchmark run`") from None
    except OSError as err:
        raise UsageError(f"cannot write the leaderboard to {out}: {err}") from None
    return EXIT_OK


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


COMMANDS = {"run": cmd_run, "leaderboard": cmd_leaderboard, "list": cmd_list, "cost": cmd_cost}


def main(argv: Sequence[str] | None = None) -> int:
    from benchmark.data import DataError
    from benchmark.policy import PolicyError
    from benchmark.presets import PresetError
    from benchmark.protocol import ProtocolError
    from benchmark.runner import RunnerError
    from benchmark.spaces import SpaceError
    from methods import MethodError

    user_errors = (
        UsageError,
        DataError,
        PolicyError,
        PresetError,
        ProtocolError,
        RunnerError,
        SpaceError,
        MethodError,
    )
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except user_errors as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)  # always one line
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
