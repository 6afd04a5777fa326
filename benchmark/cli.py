"""``python -m benchmark``: run | leaderboard | list | cost.

Bad input exits with code 2 and one line on stderr; a run exits 0 when every trial
is ok and 1 when some failed (results are written either way).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
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


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in _csv(text)]
    except ValueError:
        message = f"seeds must be integers like 0,1,2, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError("seeds must be non-negative")
    return seeds


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
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
        required=True,
        help="comma list of method names or module:Class paths",
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
    run.add_argument("--gpus-per-trial", type=_positive_float, default=0.0)
    run.add_argument(
        "--max-search-seconds",
        type=_positive_float,
        default=None,
        help="override the preset's search budget (seconds)",
    )
    run.add_argument(
        "--max-search-samples",
        type=int,
        default=None,
        help="override the preset's search budget (training samples)",
    )
    run.add_argument(
        "--method-options",
        default=None,
        help='JSON {"method": {"option": value}} passed to method constructors',
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
    cost.add_argument("--num-classes", type=int, default=10)
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


def _read_json_arg(text: str) -> Any:
    path = Path(text)
    raw = path.read_text() if path.exists() else text
    return json.loads(raw)


def cmd_cost(args: argparse.Namespace) -> int:
    from benchmark.policy import load_policy_file
    from benchmark.spaces import get_space

    space = get_space(args.space, fixed_bits=args.fixed_bits, num_classes=args.num_classes)
    arch = None
    if args.arch is not None:
        try:
            arch = space.validate_arch(_read_json_arg(args.arch))
        except json.JSONDecodeError as err:
            raise UsageError(f"--arch is neither a JSON file nor inline JSON ({err})") from None
    arch = space.validate_arch(arch)
    if Path(args.policy).suffix == ".json" or Path(args.policy).exists():
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


def _validate_run(args: argparse.Namespace) -> None:
    """Check every name and constraint before anything starts or is written."""
    from benchmark.data import list_datasets
    from benchmark.presets import load_preset
    from benchmark.protocol import Constraint
    from benchmark.spaces import get_space
    from methods import get_method

    preset = load_preset(args.preset)
    args.space = args.space or [_default_space()]
    args.dataset = args.dataset or [preset.dataset]
    for name in args.method_list:
        get_method(name)
    for name in args.space:
        get_space(name)
    for name in args.dataset:
        if name not in list_datasets():
            raise UsageError(
                f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}"
            )
        if name != "digits" and args.data_dir is None and not args.download:
            raise UsageError(f"dataset {name} needs --data-dir (or --download with internet)")
    args.constraint = [Constraint.parse(c).text for c in args.constraint]


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.records import RunStore, hardware, new_run_id, versions
    from benchmark.runner import Grid, make_specs, run_ray, run_serial, stderr_progress

    args.method_list = args.methods
    options: dict[str, dict] = {}
    if args.method_options:
        try:
            options = json.loads(args.method_options)
        except json.JSONDecodeError as err:
            raise UsageError(f"--method-options is not valid JSON ({err})") from None
    _validate_run(args)
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
    out = Path(args.out).expanduser().resolve()
    run_dir = out / "runs" / run_id
    try:
        store = RunStore.open(run_dir)
    except OSError as err:
        raise UsageError(f"cannot write to {run_dir}: {err.strerror}") from None
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
        cpus=args.cpus_per_trial,
        gpus=args.gpus_per_trial,
    )
    from benchmark.presets import load_preset

    store.write_metadata(
        {
            "run_id": run_id,
            "command": " ".join(sys.argv),
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
    stderr_progress(f"run {run_id}: {len(specs)} trial(s) → {run_dir}")
    if args.executor == "serial":
        run_serial(specs, store, stderr_progress)
    else:
        run_ray(
            specs,
            store,
            stderr_progress,
            address=args.address,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
        )
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
    return EXIT_FAILED if len(failed) or missing else EXIT_OK


def _write_leaderboard(run_dirs: Sequence[Path], out_dir: Path) -> list[Path]:
    try:
        from benchmark.leaderboard import build_leaderboard, load_runs, write_leaderboard
        from benchmark.plots import write_plots
    except ImportError:  # the leaderboard module is optional until it lands
        return []
    frame = load_runs(list(run_dirs))
    paths = write_leaderboard(build_leaderboard(frame), out_dir)
    paths += write_plots(frame, out_dir)
    for path in paths:
        print(path)
    return paths


def cmd_leaderboard(args: argparse.Namespace) -> int:
    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:
        if not d.exists():
            raise UsageError(f"{d} does not exist: pass run folders or an --out folder")
    out = Path(args.out) if args.out else (dirs[0] if len(dirs) == 1 else Path("results"))
    _write_leaderboard(dirs, out)
    return EXIT_OK


COMMANDS = {"run": cmd_run, "leaderboard": cmd_leaderboard, "list": cmd_list, "cost": cmd_cost}


def main(argv: Sequence[str] | None = None) -> int:
    from benchmark.data import DataError
    from benchmark.policy import PolicyError
    from benchmark.presets import PresetError
    from benchmark.protocol import ProtocolError
    from benchmark.spaces import SpaceError
    from methods import MethodError

    user_errors = (
        UsageError,
        DataError,
        PolicyError,
        PresetError,
        ProtocolError,
        SpaceError,
        MethodError,
    )
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except user_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
