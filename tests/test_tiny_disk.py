"""A run whose --out lies on a 60-KB file system (a real tmpfs, not a simulated write
error): under Ray and serially it ends in one line, exit 2, no traceback, and says how to
go on. Needs permission to mount a tmpfs (root, as in CI); skipped otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TINY = HERE / "tiny.toml"
PLUGINS = HERE / "plugins"


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 60-KB tmpfs mounted at a folder of ``tmp_path`` (unmounted afterwards)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=60k", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("executor", ["ray", "serial"])
def test_a_run_on_a_60kb_disk_ends_in_one_line(
    tiny_disk: Path, cache_dir: Path, executor: str
) -> None:
    out = tiny_disk / "out"
    argv = ["run", "--space", "resnet20", "--preset", str(TINY), "--constraint", "bitops<=0.3"]
    argv += ["--methods", "mpqbench_fake:AllW4,uniform", "--out", str(out), "--run-id", "full"]
    argv += ["--executor", executor, "--cache-dir", str(cache_dir), "--cpus-per-trial", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(HERE.parent)])}
    done = subprocess.run(
        [sys.executable, "-m", "benchmark", *argv],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    text = done.stdout + done.stderr
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    (error,) = errors
    assert "cannot write to" in error and "space" in error, error
    if (out / "runs" / "full" / "metadata.json").exists():  # rows may fit: resume it
        assert done.returncode in (1, 2) and "--resume full" in done.stderr, done.stderr
    else:  # nothing fitted: nothing kept, and the line says to run again
        assert done.returncode == 2 and "run it again" in error, error
