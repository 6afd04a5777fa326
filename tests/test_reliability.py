"""Faults inside trials, Ctrl-C, kill -9 and --resume, concurrent runs, determinism.

Each misbehaving method comes from tests/plugins/mpqbench_fake.py. Runs that must be
interrupted or killed run as a subprocess of `python -m benchmark`, as a user runs it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark.arena.protocol import TrialTimeout
from benchmark.arena.recipes.pretrain import fp_starting_point
from benchmark.cli import main
from benchmark.harness.watchdog import time_limit

HERE = Path(__file__).parent
ROOT = HERE.parent
TINY = str(HERE / "tiny.toml")
PLUGINS = str(HERE / "plugins")
TIMING = [
    *("search_device_hours", "search_wall_hours", "search_cpu_seconds"),
    *("finetune_device_hours", "finetune_wall_hours", "finetune_cpu_seconds"),
    *("eval_seconds", "finished_at"),
    "fp_source",  # the first trial to need the FP start builds it, the others load it
]


@pytest.fixture()
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(PLUGINS)


def _argv(out: Path, cache_dir: Path, run_id: str, *extra: str) -> list[str]:
    return [
        "run",
        "--space",
        "resnet20",
        "--preset",
        TINY,
        "--constraint",
        "bitops<=0.2",
        "--out",
        str(out),
        "--run-id",
        run_id,
        "--cache-dir",
        str(cache_dir),
        *extra,
    ]


def _records(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "records.parquet")


def _spawn(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PLUGINS, str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_rows(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()[1][-2000:]}")
        try:
            if len(_records(run_dir)) >= n:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no {n} rows in {run_dir} after {timeout} s")


def _wait_for_stage(
    run_dir: Path, method: str, stage: str, proc: subprocess.Popen, timeout: float = 300
) -> None:
    """Until the trial of ``method`` (the end of its folder's slug, e.g. ``Hanging`` of
    ``mpqbench_fake_Hanging-<hash>``) writes ``stage`` into its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()[1][-2000:]}")
        for log in run_dir.glob(f"trials/*{method}-*/log.txt"):
            if re.search(rf"^\S+ \S+ {re.escape(stage)}( ·|$)", log.read_text(), re.M):
                return
        time.sleep(0.2)
    raise AssertionError(f"no {stage!r} in {method}'s log under {run_dir} after {timeout} s")


# --- the watchdog --------------------------------------------------------------------
def test_time_limit_stops_a_sleeping_main_thread() -> None:
    t0 = time.perf_counter()
    with pytest.raises(TrialTimeout), time_limit(0.3):
        time.sleep(30)
    assert time.perf_counter() - t0 < 5
    with time_limit(5):  # a block that ends in time is left alone, and so is what follows
        time.sleep(0.01)
    time.sleep(0.4)


def test_time_limit_in_a_worker_thread_and_hard_timeout() -> None:
    seen: dict[str, object] = {}

    def spin() -> None:
        try:
            with time_limit(0.3):
                while True:
                    pass
        except TrialTimeout:
            seen["spin"] = "timeout"

    released = threading.Event()

    def hard() -> None:
        seen.setdefault("hard", True)
        released.set()

    def stuck() -> None:
        try:
            with time_limit(0.2, on_hard_timeout=hard, grace=0.2):
                # one C call that only the hard path ends (no race with the clock: if the
                # hard path never fires, the wait gives up after 60 s and "hard" is missing)
                released.wait(60)
        except TrialTimeout:  # delivered once the call returns
            seen["stuck"] = "timeout"

    threads = [threading.Thread(target=spin), threading.Thread(target=stuck)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert seen == {"spin": "timeout", "hard": True, "stuck": "timeout"}


def test_file_lock_builds_a_cached_checkpoint_once(tmp_path: Path) -> None:
    from benchmark.arena.cache import cached

    calls = []

    def build() -> dict:
        calls.append(1)
        time.sleep(0.5)
        return {"w": 1}

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cached(tmp_path, "fp", {"a": 1}, build)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True, True]


# --- faults inside a trial -----------------------------------------------------------
@pytest.fixture()
def tiny_fp(cache_dir: Path) -> None:
    """The FP ResNet-20 checkpoint of the tiny preset, built before a timed test starts."""
    from benchmark.arena.data import load_splits
    from benchmark.arena.presets import load_preset
    from benchmark.arena.spaces import get_space

    preset = load_preset(TINY)
    data = preset.data
    splits = load_splits(
        "digits",
        val_fraction=data.val_fraction,
        seed=0,
        train_subset=data.train_subset,
        augment=data.augment,
    )
    fp_starting_point(get_space("resnet20"), splits, preset, seed=0, cache_dir=str(cache_dir))


def test_every_fault_is_recorded_and_the_run_goes_on(
    tmp_path: Path, cache_dir: Path, ray_session, plugins
) -> None:
    methods = ["Raising", "Diverging", "Greedy", "Crashing", "AllW4"]
    argv = _argv(
        tmp_path,
        cache_dir,
        "faults",
        "--methods",
        ",".join(f"mpqbench_fake:{m}" for m in methods),
        "--method-options",
        '{"mpqbench_fake:AllW4": {"bits": 2}}',
        "--max-search-samples",
        "5000",
    )
    assert main(argv) == 1
    run_dir = tmp_path / "runs" / "faults"
    rows = _records(run_dir)
    status = {m: list(g["status"]) for m, g in rows.groupby("method")}
    assert status == {
        "raising": ["failed"],
        "diverging": ["diverged"],
        "greedy": ["over_budget"],
        "crashing": ["crashed"],
        "allw4[bits=2]": ["ok"],
    }
    errors = dict(zip(rows["method"], rows["error"], strict=True))
    assert "boom" in errors["raising"] and "loss=nan" in errors["diverging"]
    assert "crashed" in errors["crashing"] and "5000" in errors["greedy"]
    attempts = list((run_dir / "trials").glob("mpqbench_fake_Crashing-*/attempts"))
    assert len(attempts) == 1 and attempts[0].read_text().count("attempt") == 2  # one retry
    assert rows["trial_key"].is_unique
    board = (run_dir / "leaderboard.md").read_text()
    for name in ("crashed", "diverged", "over_budget", "failed"):
        assert name in board


def test_a_trial_stuck_past_its_limit_is_ended(
    tmp_path: Path, cache_dir: Path, ray_session, plugins, tiny_fp
) -> None:
    """Stuck in one C call (a long sleep): the worker writes a timeout row and ends
    itself; Ray's retry finds the row instead of running the trial again."""
    argv = _argv(
        tmp_path,
        cache_dir,
        "stuck",
        "--methods",
        "mpqbench_fake:Hanging",
        "--method-options",
        '{"mpqbench_fake:Hanging": {"nap": 3600}}',
        "--max-trial-seconds",
        "4",
    )
    t0 = time.perf_counter()
    assert main(argv) == 1
    assert time.perf_counter() - t0 < 120
    rows = _records(tmp_path / "runs" / "stuck")
    assert list(rows["status"]) == ["timeout"]
    assert "time limit of 4 s" in rows["error"].iloc[0]
    assert rows["search_device_hours"].iloc[0] * 3600 >= 4


def test_serial_timeout_of_a_spinning_method(
    tmp_path: Path, cache_dir: Path, plugins, tiny_fp
) -> None:
    argv = _argv(
        tmp_path,
        cache_dir,
        "spin",
        "--methods",
        "mpqbench_fake:Hanging",
        "--method-options",
        '{"mpqbench_fake:Hanging": {"nap": 0}}',
        "--max-trial-seconds",
        "3",
        "--executor",
        "serial",
    )
    t0 = time.perf_counter()
    assert main(argv) == 1
    assert time.perf_counter() - t0 < 60
    rows = _records(tmp_path / "runs" / "spin")
    assert list(rows["status"]) == ["timeout"] and rows["search_device_hours"].iloc[0] > 0


# --- interruption and resume ---------------------------------------------------------
@pytest.mark.parametrize("executor", ["serial", "ray"])
def test_ctrl_c_keeps_finished_rows_and_exits_130(
    tmp_path: Path, cache_dir: Path, executor: str
) -> None:
    argv = _argv(
        tmp_path,
        cache_dir,
        "int",
        "--methods",
        "mpqbench_fake:AllW4,mpqbench_fake:Hanging",
        "--executor",
        executor,
        "--cpus-per-trial",
        "2",  # one trial at a time: AllW4 finishes before Hanging starts
    )
    proc = _spawn(argv)
    run_dir = tmp_path / "runs" / "int"
    _wait_for_rows(run_dir, 1, proc)
    _wait_for_stage(run_dir, "Hanging", "search", proc)  # an event, not a sleep
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert f"--resume int --out {tmp_path}" in err
    rows = _records(run_dir)
    assert list(rows["method"]) == ["allw4"] and list(rows["status"]) == ["ok"]
    assert (run_dir / "leaderboard.md").exists()


def test_kill_9_then_resume_loses_and_repeats_nothing(
    tmp_path: Path, cache_dir: Path, plugins
) -> None:
    options = {"uniform": {"bits": [2]}, "random": {"num_samples": 2, "top_k": 1}}
    argv = _argv(
        tmp_path,
        cache_dir,
        "k9",
        "--methods",
        "uniform,mpqbench_fake:AllW4,random",
        "--method-options",
        json.dumps(options),
        "--seeds",
        "0,1",
        "--executor",
        "serial",
    )
    proc = _spawn(argv)
    run_dir = tmp_path / "runs" / "k9"
    _wait_for_rows(run_dir, 1, proc)
    time.sleep(1.5)  # somewhere inside the next trial
    proc.kill()
    proc.wait()
    before = _records(run_dir)
    assert 1 <= before["trial_key"].nunique() < 6
    assert main(["run", "--resume", "k9", "--out", str(tmp_path), "--executor", "serial"]) == 0
    after = _records(run_dir)
    assert after["trial_key"].nunique() == 6  # 3 methods × 2 seeds
    assert not after.duplicated(["trial_key", "candidate", "track"]).any()
    # finished rows are kept as they were (not re-run: same finish time)
    kept = after[after["trial_key"].isin(before["trial_key"])]
    pd.testing.assert_frame_equal(
        kept.reset_index(drop=True), before.reset_index(drop=True), check_dtype=False
    )


def test_resume_continues_a_checkpointed_search(tmp_path: Path, cache_dir: Path, plugins) -> None:
    """The driver dies inside the search (serial executor: the method kills the process);
    --resume continues the search from its last checkpoint."""
    argv = _argv(
        tmp_path,
        cache_dir,
        "ck",
        "--methods",
        "mpqbench_fake:Checkpointing",
        "--method-options",
        '{"mpqbench_fake:Checkpointing": {"steps": 5, "die_at": 3}}',
        "--executor",
        "serial",
    )
    proc = _spawn(argv)
    proc.communicate(timeout=300)
    assert proc.returncode == 9
    code = main(["run", "--resume", "ck", "--out", str(tmp_path), "--executor", "serial"])
    assert code == 0
    rows = _records(tmp_path / "runs" / "ck")
    assert json.loads(rows["extra"].iloc[0])["started_at"] == [0, 3]


def test_resume_recovers_rows_a_worker_left(tmp_path: Path, cache_dir: Path) -> None:
    """A trial finished (rows in its outbox) but the driver died before storing them."""
    argv = _argv(
        tmp_path,
        cache_dir,
        "ob",
        "--methods",
        "uniform",
        "--method-options",
        '{"uniform": {"bits": [2]}}',
        "--seeds",
        "0,1",
        "--executor",
        "serial",
        "--no-leaderboard",
    )
    assert main(argv) == 0
    run_dir = tmp_path / "runs" / "ob"
    full = _records(run_dir)
    from benchmark.harness.records import RunStore

    store = RunStore.open(run_dir)
    first = full[full["seed"] == 0]
    store.rows = first.to_dict("records")
    store.rows.pop()  # rewrite the tables without seed 1
    store.add(first.tail(1).to_dict("records"))
    assert _records(run_dir)["seed"].tolist() == [0]
    assert main(["run", "--resume", "ob", "--out", str(tmp_path), "--executor", "serial"]) == 0
    after = _records(run_dir).sort_values("seed").reset_index(drop=True)
    pd.testing.assert_frame_equal(after, full.sort_values("seed").reset_index(drop=True))


def test_resume_of_a_run_in_use_is_refused(tmp_path: Path, cache_dir: Path) -> None:
    from benchmark.arena.files import file_lock

    argv = _argv(tmp_path, cache_dir, "busy", "--methods", "uniform", "--executor", "serial")
    run_dir = tmp_path / "runs" / "busy"
    run_dir.mkdir(parents=True)
    with file_lock(run_dir / ".lock"):
        assert main(argv) == 2
    assert not (run_dir / "records.parquet").exists()


# --- concurrent runs and determinism -------------------------------------------------
def test_concurrent_runs_into_one_out(tmp_path: Path, cache_dir: Path) -> None:
    procs = [
        _spawn(
            _argv(
                tmp_path,
                cache_dir,
                f"c{i}",
                "--methods",
                "uniform",
                "--method-options",
                json.dumps({"uniform": {"bits": [2 + i]}}),
                "--executor",
                "serial",
                "--cpus-per-trial",
                "1",
            )
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    for i in range(2):
        rows = _records(tmp_path / "runs" / f"c{i}")
        assert list(rows["candidate"]) == [f"W{2 + i}A{2 + i}"]
    assert main(["leaderboard", str(tmp_path), "--out", str(tmp_path)]) == 0
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert board["n_seeds"].sum() >= 1 and (tmp_path / "leaderboard.md").exists()
    frame_runs = set(pd.concat(_records(tmp_path / "runs" / f"c{i}") for i in range(2))["run_id"])
    assert frame_runs == {"c0", "c1"}


def test_serial_runs_are_deterministic(tmp_path: Path, cache_dir: Path) -> None:
    options = json.dumps({"uniform": {"bits": [3]}, "random": {"num_samples": 3, "top_k": 1}})
    frames = []
    for run_id in ("d1", "d2"):
        argv = _argv(
            tmp_path,
            cache_dir,
            run_id,
            "--methods",
            "uniform,random",
            "--method-options",
            options,
            "--executor",
            "serial",
            "--no-leaderboard",
        )
        assert main(argv) == 0
        frame = _records(tmp_path / "runs" / run_id).drop(columns=[*TIMING, "run_id"])
        frames.append(frame.drop(columns=["samples_processed"]))
    pd.testing.assert_frame_equal(frames[0], frames[1])


# --- Ray raising out of the grid ------------------------------------------------------
def _failing_fit(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[int]:
    """Make ``Tuner.fit`` raise Ray's ``OutOfMemoryError`` (what Tune raised when Ray's
    memory monitor killed a worker) on its first ``failures`` calls; returns the call log."""
    from ray import tune
    from ray.exceptions import OutOfMemoryError

    calls: list[int] = []
    real_fit = tune.Tuner.fit

    def fit(self: tune.Tuner) -> object:
        calls.append(len(calls))
        if len(calls) <= failures:
            raise OutOfMemoryError("Task was killed due to the node running low on memory.")
        return real_fit(self)

    monkeypatch.setattr(tune.Tuner, "fit", fit)
    return calls


def test_a_ray_error_out_of_the_grid_restarts_it_for_the_trials_left(
    tmp_path: Path, cache_dir: Path, ray_session, tiny_fp, monkeypatch, capsys
) -> None:
    calls = _failing_fit(monkeypatch, failures=1)
    argv = _argv(tmp_path, cache_dir, "oom", "--methods", "uniform", "--seeds", "0,1")
    assert main(argv) == 0
    rows = _records(tmp_path / "runs" / "oom")
    assert len(calls) == 2
    assert set(rows["status"]) == {"ok"} and rows["trial_key"].nunique() == 2
    assert not rows.duplicated(["trial_key", "candidate_index", "track"]).any()  # none twice
    assert "Ray stopped the grid (OutOfMemoryError" in capsys.readouterr().err


def test_a_ray_error_that_keeps_coming_records_the_trials_crashed(
    tmp_path: Path, cache_dir: Path, ray_session, tiny_fp, monkeypatch, capsys
) -> None:
    from benchmark.harness.executors import RAY_GRID_RESTARTS

    calls = _failing_fit(monkeypatch, failures=100)
    argv = _argv(tmp_path, cache_dir, "oom-always", "--methods", "uniform", "--seeds", "0,1")
    assert main(argv) == 1  # a result, not a traceback
    rows = _records(tmp_path / "runs" / "oom-always")
    assert len(calls) == 1 + RAY_GRID_RESTARTS
    assert list(rows["status"]) == ["crashed", "crashed"] and rows["trial_key"].is_unique
    assert all("OutOfMemoryError" in e and "in a row" in e for e in rows["error"])
    assert "Traceback" not in capsys.readouterr().err
