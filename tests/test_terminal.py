"""The command line as a person meets it in a terminal or a pipe: no traceback when a pipe
closes early, help without markup, listings wrapped to the width, defaults that agree."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from benchmark.cli.parser import build_parser

CLI = [sys.executable, "-m", "benchmark"]
OUT = "o ut$(touch pwned)"  # an --out folder a pasted, unquoted hint would break or run


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
    assert "…" not in text  # long descriptions wrap, nothing is cut off
    assert "dataset-fashion-mnist" in text  # the install hint survives a narrow terminal
    assert "``" not in text


def test_cost_defaults_to_the_space_run_defaults_to() -> None:
    from benchmark.cli.parser import _default_space  # what a run without --space gets

    assert build_parser().parse_args(["cost"]).space == _default_space() == "mbv3-cifar"


def _run_until_first_trial_ends(
    tmp_path, cache_dir, pty_fds: tuple[int, int] | None, executor: str = "serial"
):
    """A serial run of two tiny trials, its output read until the first trial's summary
    (from its stderr, or from the master of the pseudo-terminal ``pty_fds`` it runs on);
    returns the process and what it printed so far."""
    import select

    argv = [*CLI, "run", "--methods", "uniform", "--space", "resnet20", "--preset", "tiny"]
    argv += ["--seeds", "0,1", "--executor", executor, "--out", str(tmp_path / OUT)]
    argv += ["--run-id", "r", "--cache-dir", str(cache_dir), "--no-leaderboard"]
    argv += ["--method-options", '{"uniform": {"bits": [4]}}']
    if executor == "ray":  # one trial at a time (2 CPUs): the second waits for the first
        argv += ["--cpus-per-trial", str(os.cpu_count() or 1)]
    if pty_fds is None:  # no terminal: read its stderr
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        fd = proc.stderr.fileno()
    else:  # a pseudo-terminal: the view runs live on it
        fd, slave = pty_fds
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                start_new_session=True)  # fmt: skip
    seen = b""
    while b"ok, 1 feasible" not in seen:  # an event, not a clock: the first trial's end
        ready, _, _ = select.select([fd], [], [], 300)
        assert ready, seen[-2000:]
        chunk = os.read(fd, 65536)
        assert chunk or proc.poll() is None, seen[-2000:]
        seen += chunk
    return proc, seen


@pytest.mark.parametrize("executor", ["serial", "ray"])
def test_sigterm_ends_a_run_like_ctrl_c(tmp_path, cache_dir, executor) -> None:
    """``timeout`` and job schedulers send SIGTERM: rows kept, exit 130, the resume hint
    (with Ray too, whose own handler would abort the driver)."""
    import signal

    proc, _ = _run_until_first_trial_ends(tmp_path, cache_dir, None, executor)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    text = err.decode()
    assert proc.returncode == 130 and "Traceback" not in text, text[-3000:]
    assert "--resume r" in text
    hint = text.split("finish with `", 1)[1].split("`", 1)[0]  # pasted as a shell sees it
    assert shlex.split(hint)[-2:] == ["--out", str(tmp_path / OUT)]
    if executor == "serial":  # a resume of a stopped run is the same for both executors
        _resume_finishes(tmp_path)
    else:
        _kept_the_finished_trial(tmp_path)


def test_a_closed_terminal_ends_a_run_like_ctrl_c(tmp_path, cache_dir) -> None:
    """The terminal closes under a live run (its pty goes away, SIGHUP): no I/O error, the
    finished trial's rows kept, exit 130, and ``--resume`` finishes the run."""
    import pty
    import signal

    master, slave = pty.openpty()
    try:
        proc, seen = _run_until_first_trial_ends(tmp_path, cache_dir, (master, slave))
    finally:
        os.close(slave)
    assert b"\x1b[" in seen  # it was the live (terminal) view
    os.close(master)  # the terminal window closes
    proc.send_signal(signal.SIGHUP)  # what the kernel sends its session
    assert proc.wait(timeout=300) == 130
    _resume_finishes(tmp_path)


def _kept_the_finished_trial(tmp_path) -> None:
    import pandas as pd

    kept = pd.read_parquet(tmp_path / OUT / "runs" / "r" / "records.parquet")
    assert set(kept["seed"]) == {0} and (kept["status"] == "ok").all()


def _resume_finishes(tmp_path) -> None:
    import pandas as pd

    run_dir = tmp_path / OUT / "runs" / "r"
    _kept_the_finished_trial(tmp_path)
    argv = [*CLI, "run", "--resume", "r", "--out", str(tmp_path / OUT), "--no-leaderboard"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_parquet(run_dir / "records.parquet")
    assert sorted(rows["seed"]) == [0, 1] and not rows.duplicated(["trial_key"]).any()
