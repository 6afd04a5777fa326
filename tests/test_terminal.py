"""The command line as a person meets it in a terminal or a pipe: no traceback when a pipe
closes early, help without markup, listings that fit the width, defaults that agree."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmark.cli.parser import build_parser

CLI = [sys.executable, "-m", "benchmark"]


def test_a_pipe_closed_early_ends_quietly() -> None:
    """``cost --json | head -1``: the reader leaves after one line; no traceback, exit 0."""
    producer = subprocess.Popen(
        [*CLI, "cost", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert producer.stdout.readline().strip() == b"{"
    producer.stdout.close()  # as `head -1` does after its line
    _, err = producer.communicate(timeout=120)
    assert producer.returncode == 0 and b"Traceback" not in err and not err.strip(), err


def test_help_shows_no_raw_markup() -> None:
    for argv in ([], ["run"], ["leaderboard"], ["list"], ["cost"]):
        text = subprocess.run(
            [*CLI, *argv, "--help"], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        assert "``" not in text and ":func:" not in text and ":class:" not in text, argv


def test_list_fits_the_terminal_width() -> None:
    env = {**os.environ, "COLUMNS": "60"}
    text = subprocess.run(
        [*CLI, "list"], capture_output=True, text=True, timeout=120, check=True, env=env
    ).stdout
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= 60
    assert any(line.endswith("…") for line in lines)  # long descriptions are cut, marked
    assert "``" not in text


def test_cost_defaults_to_the_space_run_defaults_to() -> None:
    from benchmark.cli.parser import _default_space  # what a run without --space gets

    assert build_parser().parse_args(["cost"]).space == _default_space() == "mbv3-cifar"
