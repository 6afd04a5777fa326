"""``python -m benchmark``: run | leaderboard | list | cost.

Bad input exits with code 2 and one line on stderr; a run exits 0 when every trial
is ok and 1 when some failed (results are written either way).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmark.cli.commands import cmd_cost, cmd_leaderboard, cmd_list, cmd_run
from benchmark.cli.parser import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    build_parser,
)

COMMANDS = {"run": cmd_run, "leaderboard": cmd_leaderboard, "list": cmd_list, "cost": cmd_cost}


def _shadowing_folder() -> str | None:
    """A ``methods`` folder that hides mpqbench's own (e.g. in the working directory)."""
    import benchmark

    home = Path(benchmark.__file__).resolve().parent.parent
    try:
        import methods
    except Exception:  # noqa: BLE001 - whatever that folder's __init__ raises
        return str(Path.cwd() / "methods")
    where = getattr(methods, "__file__", None)
    if where is None or Path(where).resolve().parent.parent != home:
        return str(next(iter(getattr(methods, "__path__", [])), where))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    shadow = _shadowing_folder()
    if shadow is not None:
        print(
            f"error: the folder {shadow} shadows mpqbench's 'methods' package: run from "
            "another folder or rename it",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from benchmark.arena.data import DataError
    from benchmark.arena.policy import PolicyError
    from benchmark.arena.presets import PresetError
    from benchmark.arena.protocol import ProtocolError
    from benchmark.arena.spaces import SpaceError
    from benchmark.harness.executors import RunnerError
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
        args.argv = list(sys.argv[1:] if argv is None else argv)  # what `run` records
        return COMMANDS[args.command](args)
    except user_errors as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)  # always one line
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`... | head`): end quietly
        _silence_stdout()
        return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit after a broken pipe raises
    nothing (Python's own advice for a closed pipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
