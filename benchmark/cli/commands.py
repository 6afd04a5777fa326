"""The commands: ``run``, ``leaderboard``, ``list`` and ``cost`` (parsing and printing;
the work is the harness's and the reports')."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import textwrap
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.arena.files import loads_json_unique
from benchmark.cli.live import RunView
from benchmark.cli.parser import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RUN_DEFAULTS,
    UsageError,
    _default_space,
)


# --- commands ---------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from benchmark.arena.data import DATASETS
    from benchmark.arena.presets import list_presets, load_preset
    from benchmark.arena.spaces import get_space, list_spaces
    from methods import get_method, list_methods

    width = shutil.get_terminal_size((100, 24)).columns  # $COLUMNS, the terminal, or 100

    def line(text: str, hang: int = 4) -> None:
        """One entry of the listing, reST markup stripped, wrapped to the terminal's width.

        Continuation lines are indented by ``hang`` characters (the description's column),
        so nothing is cut off: an install hint at the end of a line stays readable.
        """
        text = text.replace("``", "")
        print(
            textwrap.fill(
                text,
                width=max(width, 40),
                subsequent_indent=" " * hang,
                break_on_hyphens=False,
                break_long_words=False,
            )
        )

    if args.what in ("all", "methods"):
        line("methods:")
        with warnings.catch_warnings(record=True) as caught:  # a broken plugin: one line
            warnings.simplefilter("always")
            names = list_methods()
        for warning in caught:
            print(f"warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
        for name in names:
            cls = get_method(name)
            doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
            line(f"  {name:12s} searches {cls.searches:18s} {doc.splitlines()[0]}", 43)
    if args.what in ("all", "spaces"):
        line("spaces:")
        for name in list_spaces():
            line(f"  {name:12s} searches {get_space(name).searches}")
    if args.what in ("all", "datasets"):
        line("datasets:")
        for name in sorted(DATASETS):
            line(f"  {name:14s} {DATASETS[name].description}", 17)
    if args.what in ("all", "presets"):
        line("presets:")
        for name in list_presets():
            line(f"  {name:12s} {load_preset(name).description}", 15)
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
        return loads_json_unique(raw)
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {option} file {text} ({err}): check the path") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, too many digits, nesting
        raise UsageError(
            f"{option} is neither a JSON file nor inline JSON ({err}): pass a .json file or "
            "a JSON text"
        ) from None


def cmd_cost(args: argparse.Namespace) -> int:
    from benchmark.arena.policy import load_policy_file
    from benchmark.arena.spaces import ElasticSearchSpace, get_space

    space = get_space(args.space, fixed_bits=args.fixed_bits, num_classes=args.num_classes)
    arch = None if args.arch is None else _read_json_arg(args.arch, "--arch")
    if arch is not None and not isinstance(space, ElasticSearchSpace):
        raise UsageError(
            f"{space.name} has one architecture: --arch is for an architecture space "
            "(e.g. --space mbv3-cifar); leave it out"
        )
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
    from benchmark.arena.presets import load_preset
    from benchmark.harness import validation

    preset = load_preset(args.preset)
    if not args.resume:
        args.preset_hash = preset.recipe_hash
    args.space = args.space or [_default_space()]
    args.dataset = args.dataset or [preset.dataset]
    spaces, configs = _check_methods(args, options, preset)
    _check_dataset_names(args)
    constraints = _check_constraints(args)
    _check_splits(args, preset)  # cheap: before the data files are hashed
    _check_environment(args, spaces, constraints)
    try:
        validation.check_methods_reachable(configs, spaces, constraints)
    except validation.InputError as err:
        raise UsageError(str(err)) from None


def _check_methods(
    args: argparse.Namespace, options: object, preset: Any
) -> tuple[list[Any], dict[str, Any]]:
    """Each method loaded once, its config (preset section + options) checked against each
    of the run's spaces; the spaces and each spec's prepared config. ``args.methods`` /
    ``args.method_options`` become what workers and --resume read."""
    from benchmark.arena.presets import PresetError
    from benchmark.arena.spaces import get_space
    from benchmark.harness import validation
    from methods import check_preset_sections, get_method

    try:  # each method loaded once; options keyed by name or spec, checked against each
        args.method_list, args.options_by_spec = validation.resolve_methods(
            args.method_list, options if args.method_options is not None else None
        )
    except validation.InputError as err:
        raise UsageError(str(err)) from None
    preset_file = args.preset if args.preset.endswith(".toml") else None
    try:
        check_preset_sections(preset, [get_method(m) for m in args.method_list])
    except PresetError as err:  # a preset file is named by its path, not its name
        text = str(err)
        if preset_file and text.startswith(f"preset {preset.name}:"):
            text = f"preset file {preset_file}:" + text.removeprefix(f"preset {preset.name}:")
        raise PresetError(text) from None
    spaces = [get_space(name) for name in args.space]
    try:
        args.options_by_spec, configs = validation.check_method_inputs(
            args.method_list,
            args.options_by_spec,
            spaces,
            preset,
            preset_file,
        )
    except validation.InputError as err:
        raise UsageError(str(err)) from None
    args.methods = args.method_list  # file specs absolute: what workers and --resume read
    if args.method_options is not None or args.options_by_spec:  # by those specs, for --resume
        args.method_options = json.dumps(args.options_by_spec, sort_keys=True)
    return spaces, configs


def _check_dataset_names(args: argparse.Namespace) -> None:
    from benchmark.arena.data import DATASETS, list_datasets

    for name in args.dataset:
        if name not in list_datasets():
            raise UsageError(
                f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}"
            )
        if DATASETS[name].needs_data_dir and args.data_dir is None and not args.download:
            raise UsageError(f"dataset {name} needs --data-dir (or --download with internet)")


def _check_constraints(args: argparse.Namespace) -> list[Any]:
    """The constraints parsed, each once (0.3 and 0.30 are one task); ``args.constraint``
    becomes their canonical texts."""
    from benchmark.arena.protocol import Constraint

    constraints = [Constraint.parse(c) for c in args.constraint]
    for i, c in enumerate(constraints):
        first = next(j for j, other in enumerate(constraints) if other.text == c.text)
        if first != i:
            raise UsageError(
                f"constraint {c.text} is given twice in --constraint ({args.constraint[first]}, "
                f"{args.constraint[i]}): list each constraint once"
            )
    args.constraint = [c.text for c in constraints]
    return constraints


def _check_splits(args: argparse.Namespace, preset: Any) -> None:
    """The preset's ``val_fraction`` and ``train_subset`` leave every dataset of the run a
    train and a validation split of at least one image a class (else one line, before
    anything starts)."""
    from benchmark.arena.data import DATASETS, DataError
    from benchmark.arena.data.splits import split_sizes

    data = preset.data
    for name in args.dataset:
        entry = DATASETS[name]
        try:
            split_sizes(
                entry.train_pool, data.val_fraction, data.train_subset, minimum=entry.num_classes
            )
        except DataError as err:
            raise UsageError(f"preset {args.preset} on {name}: {err}") from None


def _check_environment(
    args: argparse.Namespace, spaces: Sequence[Any], constraints: Sequence[Any]
) -> None:
    """The run id, resources, folders, data files, reachable limits and the cluster."""
    from benchmark.arena.cache import default_cache_dir
    from benchmark.arena.data import check_data_dir
    from benchmark.harness import validation

    try:
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
        else:  # the default, $MPQBENCH_CACHE or ~/.cache/mpqbench
            source = "MPQBENCH_CACHE" if os.environ.get("MPQBENCH_CACHE") else "the FP cache"
            validation.check_writable_dir(default_cache_dir(), source)
        for name in args.dataset:  # files present and their MD5 (~1 s)
            check_data_dir(name, args.data_dir, download=args.download)
        for space in spaces:  # profiles the space's smallest model once (~0.1 s)
            for constraint in constraints:
                validation.check_constraint_reachable(constraint, space)
        if args.executor == "ray" and args.address:
            validation.check_address(args.address)
            validation.check_cluster_auth(args.address)  # a token cluster needs a token
    except validation.InputError as err:
        raise UsageError(str(err)) from None


def _load_resumed(args: argparse.Namespace) -> None:
    """Fill ``args`` with the settings stored in the run to resume (refusing flags that
    would change them, damaged metadata and a preset whose recipe changed)."""
    from benchmark.harness.benchmark_run import (
        RESUMED_SETTINGS,
        check_resume_recipe,
        load_run_metadata,
    )
    from benchmark.harness.records import RunStateError, RunStore

    given = [name for name in RESUMED_SETTINGS if getattr(args, name) is not None]
    if given:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
        raise UsageError(
            f"--resume reruns the run's own settings: leave out {flags} (or start a new run "
            "with them)"
        )
    runs = _user_path(args.out, "--out") / "runs"
    try:
        meta = load_run_metadata(runs / args.resume)
        for name in RESUMED_SETTINGS:
            setattr(args, name, meta["settings"][name])
        args.preset_hash = check_resume_recipe(meta, args.preset)
        RunStore.check(runs / args.resume, args.resume)
    except FileNotFoundError:
        known = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
        hint = f"runs in {runs}: {', '.join(known[-5:])}" if known else f"no runs in {runs}"
        raise UsageError(f"no run {args.resume!r} to resume ({hint}); check --out") from None
    except (KeyError, RunStateError) as err:
        raise UsageError(f"cannot resume {args.resume}: {str(err).strip(chr(39))}") from None
    args.run_id = args.resume


def _registered_methods() -> list[str]:
    """Every registered method's name (built-ins and entry points): what ``run`` runs
    without ``--methods``; a plugin that fails to load is left out with one warning line."""
    from methods import list_methods

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = list_methods()
    for warning in caught:
        print(f"warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
    return names


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.harness.benchmark_run import RunLockedError, execute_run
    from benchmark.harness.records import RunStateError, new_run_id

    _settle_run_args(args)
    run_id = args.run_id or new_run_id()
    run_dir = _user_path(args.out, "--out") / "runs" / run_id
    if not args.resume and (run_dir / "metadata.json").exists():
        raise UsageError(
            f"run {run_id} already exists in {run_dir.parent}; "
            f"finish it with --resume {run_id} or choose another --run-id"
        )
    request = _run_request(args)
    write = None
    if not args.no_leaderboard:
        write = lambda path: _write_leaderboard([path], path, show=not args.quiet)  # noqa: E731
    view = RunView(quiet=args.quiet, verbose=args.verbose)
    root = logging.getLogger()
    handler = view.log_handler(logging.WARNING)  # the trials' own lines come as events
    root.addHandler(handler)
    stops = _stop_like_ctrl_c(view)
    try:
        with view:
            outcome = execute_run(
                request, run_id, run_dir, write_leaderboard=write, progress=view.line, events=view
            )
    except (RunLockedError, RunStateError) as err:
        raise UsageError(str(err)) from None
    except OSError as err:  # before any row was stored (a full disk, a read-only folder)
        raise UsageError(_unwritable(run_id, run_dir, err)) from None
    finally:
        root.removeHandler(handler)
        for sig, previous in stops.items():
            signal.signal(sig, previous)
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if outcome.n_not_ok or outcome.missing else EXIT_OK


def _unwritable(run_id: str, run_dir: Path, err: OSError) -> str:
    """One line for a run that could not write before any row was stored: what failed, and
    how to go on (resume the run if its folder was kept, else run it again)."""
    from benchmark.harness.benchmark_run import resume_command

    what = f"cannot write to {run_dir}: {err.strerror or err}"
    full = err.errno in (errno.ENOSPC, errno.EDQUOT) or "full disk" in str(err)
    fix = "free some space" if full else "make it writable"
    if (run_dir / "metadata.json").is_file():
        return f"{what}; {fix}, then finish with `{resume_command(run_id, run_dir)}`"
    return f"{what}; nothing of the run was kept: {fix} and run it again"


def _user_path(text: str, option: str) -> Path:
    """``text`` with ``~`` expanded, made absolute; one line for a ``~user`` that does not
    exist or a link that loops."""
    try:
        return Path(text).expanduser().resolve()
    except RuntimeError as err:  # ~nouser, or a symlink loop (older Pythons)
        raise UsageError(f"{option} {text}: {err} (check the path)") from None
    except OSError as err:  # a symlink loop on resolve(strict) or a name too long
        raise UsageError(f"{option} {text}: {err.strerror or err} (check the path)") from None


def _stop_like_ctrl_c(view: RunView) -> dict[int, Any]:
    """SIGHUP (the terminal closed) and SIGTERM (``timeout``, a job scheduler) end the run as
    Ctrl-C does: finished rows kept, the leaderboard written, exit 130, ``--resume``. After
    a hang-up the view writes nowhere (the terminal is gone). Returns the handlers replaced
    (the Ray executor sets its own for the grid's time)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            view.detach()
        raise KeyboardInterrupt

    return {sig: signal.signal(sig, stop) for sig in (signal.SIGHUP, signal.SIGTERM)}


def _settle_run_args(args: argparse.Namespace) -> None:
    """A resumed run's stored settings or the defaults, the options parsed, every input
    validated, and paths made absolute (trials may run in other processes, e.g. Ray
    workers, with another working directory)."""
    if args.resume:
        _load_resumed(args)
    else:
        if args.methods is None:
            args.methods = _registered_methods()
        for name, value in RUN_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    args.method_list = args.methods
    options: dict[str, dict] = {}
    if args.method_options is not None:
        try:
            options = loads_json_unique(args.method_options)
        except (ValueError, RecursionError) as err:
            raise UsageError(f"--method-options is not valid JSON ({err})") from None
    _validate_run(args, options)
    if args.preset.endswith(".toml"):
        args.preset = str(Path(args.preset).resolve())
    for name in ("data_dir", "cache_dir"):
        if getattr(args, name):
            option = "--" + name.replace("_", "-")
            setattr(args, name, str(_user_path(getattr(args, name), option)))


def _run_request(args: argparse.Namespace) -> Any:
    """The harness's :class:`RunRequest` of settled ``args``."""
    from benchmark.harness.benchmark_run import RESUMED_SETTINGS, RunRequest
    from benchmark.harness.executors import Grid

    grid = Grid(
        args.method_list, args.space, args.dataset, args.constraint, args.seeds, args.preset
    )
    return RunRequest(
        grid=grid,
        settings={name: getattr(args, name) for name in RESUMED_SETTINGS},
        options=args.options_by_spec,
        executor=args.executor,
        address=args.address,
        resume=bool(args.resume),
        command=shlex.join(["python", "-m", "benchmark", *getattr(args, "argv", sys.argv[1:])]),
        preset_hash=args.preset_hash,
    )


def _write_leaderboard(
    run_dirs: Sequence[Path],
    out_dir: Path,
    *,
    all_repeats: bool = False,
    allow_mixed: bool = False,
    show: bool = True,
) -> list[Path]:
    try:
        from benchmark.report.cards import plot_method_cards
        from benchmark.report.figures import svg_path
        from benchmark.report.leaderboard import build_leaderboard
        from benchmark.report.load import load_runs
        from benchmark.report.plot_anytime import plot_anytime
        from benchmark.report.plot_cd import plot_critical_difference
        from benchmark.report.plots import write_plots
        from benchmark.report.render import write_leaderboard
    except ImportError:  # the leaderboard module is optional until it lands
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load_runs(list(run_dirs))
        board = build_leaderboard(frame, all_repeats=all_repeats, allow_mixed=allow_mixed)
    for warning in caught:  # e.g. an unreadable records file: one line each, then go on
        print(f"warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".leaderboard-", dir=out_dir))
    try:  # the set is written whole or not at all: staged, then renamed into place
        figures = write_plots(board.frame, staging)  # first: the HTML page embeds them
        figures += plot_anytime(run_dirs, staging, board.frame)
        figures += plot_critical_difference(board.aggregate, staging)
        figures += plot_method_cards(board.frame, staging)
        staged = [*write_leaderboard(board, staging, figures), *figures]
        vectors = [svg_path(path) for path in figures]  # each figure's SVG, beside its PNG
        paths = [out_dir / path.name for path in staged]
        for path in [*staged, *vectors]:
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for path in paths if show else ():  # the SVGs beside the PNGs go unlisted
        print(path)
    return paths


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmark.harness.validation import InputError, check_writable_dir
    from benchmark.report.load import LeaderboardError

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
        _write_leaderboard(dirs, out, all_repeats=args.all_repeats, allow_mixed=args.allow_mixed)
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
