"""``python -m benchmark``: run | leaderboard | list | cost.

Bad input exits with code 2 and one line on stderr; a run exits 0 when every trial
is ok and 1 when some failed (results are written either way).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from benchmark.cli.commands import cmd_cost, cmd_leaderboard, cmd_list, cmd_run
from benchmark.cli.parser import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, build_parser

COMMANDS = {"run": cmd_run, "leaderboard": cmd_leaderboard, "list": cmd_list, "cost": cmd_cost}


def main(argv: Sequence[str] | None = None) -> int:
    from benchmark.arena.data import DataError
    from benchmark.arena.policy import PolicyError
    from benchmark.arena.presets import PresetError
    from benchmark.arena.protocol import ProtocolError
    from benchmark.arena.spaces import SpaceError
    from benchmark.harness.runner import RunnerError
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
