"""``python -m benchmark run`` without ``--methods`` runs every registered method."""

from __future__ import annotations

import argparse

import pytest

import benchmark.cli.commands
from benchmark.cli import main
from benchmark.cli.parser import UsageError, build_parser
from methods import list_methods


def test_run_without_methods_takes_every_registered_method(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    seen: list[list[str]] = []

    def validate(args: argparse.Namespace, options: object) -> None:
        seen.append(list(args.method_list))  # what the run would check, then run
        raise UsageError("stop here")

    monkeypatch.setattr(benchmark.cli.commands, "_validate_run", validate)
    assert main(["run", "--quiet"]) == 2
    assert "stop here" in capsys.readouterr().err
    assert seen == [list_methods()]
    assert {"uniform", "random", "ompq", "hawq", "haq", "dnas", "oqat", "qfa"} <= set(seen[0])


def test_run_help_says_the_default_is_every_method() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    help_text = " ".join(sub.choices["run"].format_help().split())
    assert "default: every registered method" in help_text
