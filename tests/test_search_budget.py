"""A budget ends a search instead of erasing it; a resumed search keeps its spend; a
malformed result is a failure with its cost; variants are separate entries.

The methods come from tests/plugins/mpqbench_fake.py; runs use the serial executor
in-process (``main``) except where a process must die.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark.arena import Budget, BudgetExceeded, BudgetMeter
from benchmark.cli import main
from benchmark.harness.watchdog import SEARCH_GRACE_SECONDS
from benchmark.report.aggregate import aggregate

HERE = Path(__file__).parent
ROOT = HERE.parent
TINY = str(HERE / "tiny.toml")
PLUGINS = str(HERE / "plugins")


@pytest.fixture()
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(PLUGINS)


def run(out: Path, cache: Path, run_id: str, *extra: str) -> tuple[int, pd.DataFrame]:
    argv = ["run", "--space", "resnet20", "--preset", TINY, "--constraint", "bitops<=0.3"]
    argv += ["--out", str(out), "--run-id", run_id, "--cache-dir", str(cache)]
    argv += ["--executor", "serial", *extra]
    code = main(argv)
    return code, pd.read_parquet(out / "runs" / run_id / "records.parquet")


def test_the_sample_budget_ends_a_search_and_its_offered_answer_is_evaluated(
    tmp_path: Path, cache_dir: Path, plugins
) -> None:
    code, rows = run(
        tmp_path, cache_dir, "r", "--methods", "mpqbench_fake:Offering",
        "--max-search-samples", "1000",
    )  # fmt: skip
    assert code == 0
    (row,) = rows.itertuples()
    assert row.status == "ok" and row.stopped_by_budget and row.track == "retrain"
    assert row.candidate == "w4"  # the latest offer, not the first
    assert row.samples_processed == 1100  # the charge that went past the limit stopped it
    assert row.top1_test == row.top1_test  # evaluated (not NaN)


def test_a_budget_keeps_the_search_log_offered_with_the_answer(
    tmp_path: Path, cache_dir: Path, plugins
) -> None:
    options = json.dumps({"mpqbench_fake:Offering": {"log": True}})
    code, rows = run(
        tmp_path, cache_dir, "r", "--methods", "mpqbench_fake:Offering",
        "--method-options", options, "--max-search-samples", "1000",
    )  # fmt: skip
    assert code == 0 and rows["stopped_by_budget"].all()
    (trial,) = (tmp_path / "runs" / "r" / "trials").iterdir()
    log = json.loads((trial / "search_log.json").read_text())
    assert log["steps"] == list(range(11))  # offered at steps 0..10, the 11th charge stopped it
    assert "budget" in log["stopped_by_budget"]


def test_the_wall_clock_ends_a_search_that_never_charges(
    tmp_path: Path, cache_dir: Path, plugins
) -> None:
    options = json.dumps({"mpqbench_fake:Offering": {"charge": 0, "sleep": 0.05}})
    t0 = time.perf_counter()
    code, rows = run(
        tmp_path, cache_dir, "r", "--methods", "mpqbench_fake:Offering",
        "--method-options", options, "--max-search-seconds", "2",
    )  # fmt: skip
    assert code == 0
    (row,) = rows.itertuples()
    assert row.status == "ok" and row.stopped_by_budget
    assert 2 / 3600 <= row.search_device_hours < 4 / 3600
    assert time.perf_counter() - t0 < 60


def test_a_search_that_swallows_the_stop_is_over_budget_after_the_grace(
    tmp_path: Path, cache_dir: Path, plugins
) -> None:
    code, rows = run(
        tmp_path, cache_dir, "r", "--methods", "mpqbench_fake:Stubborn",
        "--max-search-seconds", "1",
    )  # fmt: skip
    assert code == 1
    (row,) = rows.itertuples()
    assert row.status == "over_budget" and "grace" in row.error
    assert (1 + SEARCH_GRACE_SECONDS) / 3600 <= row.search_device_hours


def test_a_search_stopped_with_nothing_offered_is_over_budget(
    tmp_path: Path, cache_dir: Path, plugins
) -> None:
    code, rows = run(
        tmp_path, cache_dir, "r", "--methods", "mpqbench_fake:Greedy",
        "--max-search-samples", "3000",
    )  # fmt: skip
    assert code == 1
    (row,) = rows.itertuples()
    assert row.status == "over_budget" and "offered no candidate" in row.error
    assert row.samples_processed == 4000  # 3000 is the limit itself; the 4th charge is past it


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("list", "search returned list, not a SearchResult"),
        ("not-a-candidate", "candidate 1 is a dict, not a Candidate"),
        ("bad-policy", "candidate 0 has a policy of list"),
    ],
)
def test_a_malformed_result_fails_with_one_line_and_its_search_time(
    tmp_path: Path, cache_dir: Path, plugins, kind: str, message: str
) -> None:
    options = json.dumps({"mpqbench_fake:Malformed": {"kind": kind}})
    code, rows = run(
        tmp_path, cache_dir, "r", "--methods", "mpqbench_fake:Malformed",
        "--method-options", options,
    )  # fmt: skip
    assert code == 1
    (row,) = rows.itertuples()
    assert row.status == "failed" and message in row.error and "\n" not in row.error
    assert row.search_device_hours >= 0.3 / 3600  # the search's time is kept


def test_resume_keeps_the_spend_of_the_interrupted_search(tmp_path: Path, cache_dir: Path) -> None:
    """5000 samples of budget, 1000 a step: the process dies after 3 steps; the resumed
    search has 2000 left, so it ends after 5 steps in all, with 5000 samples charged."""
    argv = [
        sys.executable, "-m", "benchmark", "run", "--space", "resnet20", "--preset", TINY,
        "--out", str(tmp_path), "--run-id", "s", "--cache-dir", str(cache_dir),
        "--executor", "serial", "--methods", "mpqbench_fake:Spending",
        "--method-options", '{"mpqbench_fake:Spending": {"steps": 8, "die_at": 3}}',
        "--max-search-samples", "5000",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PLUGINS, str(ROOT)])}
    first = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert first.returncode == 9, first.stderr[-2000:]
    resumed = [*argv[:4], "--resume", "s", "--out", str(tmp_path), "--executor", "serial"]
    second = subprocess.run(resumed, cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    (row,) = pd.read_parquet(tmp_path / "runs" / "s" / "records.parquet").itertuples()
    assert json.loads(row.extra) == {"steps": 5, "runs": 2}
    assert row.samples_processed == 5000 and row.stopped_by_budget


def test_the_meter_restores_an_earlier_spend() -> None:
    clock = iter([0.0, 1.0, 2.0, 3.0]).__next__
    meter = BudgetMeter(Budget(10.0, 100), clock=clock)
    meter.restore(90, 8.5)
    assert meter.samples == 90 and meter.seconds == 9.5  # 8.5 earlier + 1.0 now
    with pytest.raises(BudgetExceeded):
        meter.charge(1)  # 10.5 s > 10 s


def test_variants_are_separate_entries_and_keep_their_options(
    tmp_path: Path, cache_dir: Path, plugins
) -> None:
    _, first = run(tmp_path, cache_dir, "a", "--methods", "mpqbench_fake:AllW4")
    _, second = run(
        tmp_path, cache_dir, "b", "--methods", "mpqbench_fake:AllW4",
        "--method-options", '{"allw4": {"bits": 2}}',
    )  # fmt: skip
    _, third = run(
        tmp_path, cache_dir, "c", "--methods", "mpqbench_fake:AllW4",
        "--method-options", '{"mpqbench_fake:AllW4": {"bits": 4, "label": "four"}}',
    )  # fmt: skip
    _, default = run(
        tmp_path, cache_dir, "d", "--methods", "mpqbench_fake:AllW4",
        "--method-options", '{"allw4": {"bits": 4}}',
    )  # fmt: skip
    names = [f["method"].iloc[0] for f in (first, second, third, default)]
    assert names == ["allw4", "allw4[bits=2]", "allw4[four]", "allw4"]
    assert json.loads(second["method_options"].iloc[0]) == {"bits": 2}
    board = aggregate(pd.concat([first, second, third], ignore_index=True))
    assert sorted(board["method"]) == ["allw4", "allw4[bits=2]", "allw4[four]"]
