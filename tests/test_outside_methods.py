"""A user's own method, as the README says: the README's method file and command run as
written; the registry refuses a taken name; a broken plugin does not break ``list``; a
``methods/`` folder that shadows the package gets one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pandas as pd
import pytest

import methods
from benchmark.arena import Method
from benchmark.cli import main
from methods import MethodError, register_method

ROOT = Path(__file__).resolve().parents[1]


def readme_block(marker: str) -> str:
    """The fenced block right after ``<!-- marker -->`` in the README."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\n```\w*\n(.*?)```", text, re.S)
    assert match, f"README has no block marked {marker}"
    return match.group(1)


def test_the_readme_method_runs_as_written(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "my_method.py").write_text(readme_block("readme-method-file"))
    (command,) = readme_block("readme-method-command").strip().splitlines()
    argv = command.split()
    assert argv[:3] == ["python", "-m", "benchmark"]
    env = {**os.environ, "MPQBENCH_CACHE": str(cache_dir)}
    proc = subprocess.run(
        [sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (records,) = (tmp_path / "results" / "runs").glob("*/records.parquet")
    rows = pd.read_parquet(records)
    assert list(rows["method"]) == ["all4"] and list(rows["status"]) == ["ok"]
    assert rows["samples_processed"].iloc[0] > 0  # ctx.score charged its images
    assert not (tmp_path / "__pycache__").exists()  # loading the file wrote nothing there


def test_a_second_class_under_a_taken_name_is_refused() -> None:
    class Impostor(Method):
        name = "uniform"
        searches = "bits"

        def search(self, ctx):
            raise AssertionError

    methods.list_methods()  # the built-ins are registered
    with pytest.raises(MethodError, match="name 'uniform' is taken by methods.uniform.Uniform"):
        register_method(Impostor)
    assert methods.get_method("uniform").__module__ == "methods.uniform"


def test_a_broken_entry_point_gives_one_warning_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    broken = EntryPoint(name="broken", value="no_such_plugin:Thing", group="mpqbench.methods")
    monkeypatch.setattr(methods, "entry_points", lambda group: [broken])
    assert main(["list", "methods"]) == 0
    captured = capsys.readouterr()
    assert "uniform" in captured.out and "broken" not in captured.out
    (line,) = captured.err.splitlines()
    assert line.startswith("warning: entry point 'broken'") and "cannot import" in line


def test_a_methods_folder_that_shadows_the_package_gets_one_line(tmp_path: Path) -> None:
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "__init__.py").write_text("# the user's own package\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark", "list"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert "shadows mpqbench's 'methods' package" in line and str(tmp_path) in line
