"""End-to-end runs through the CLI: serial and Ray executors, failures, budgets.

Bad input is tested in test_bad_input.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main

HERE = Path(__file__).parent
TINY = str(HERE / "tiny.toml")
PLUGINS = str(HERE / "plugins")
COMPARED = [
    "method",
    "candidate",
    "track",
    "policy",
    "feasible",
    "top1_val",
    "top1_test",
    "bitops",
    "status",
]


@pytest.fixture()
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(PLUGINS)


def _run(tmp_path: Path, cache_dir: Path, *extra: str, run_id: str = "r") -> tuple[int, Path]:
    argv = [
        "run",
        "--space",
        "resnet20",
        "--preset",
        TINY,
        "--out",
        str(tmp_path),
        "--run-id",
        run_id,
        "--cache-dir",
        str(cache_dir),
        "--constraint",
        "bitops<=0.2",
        *extra,
    ]
    return main(argv), tmp_path / "runs" / run_id


def _records(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "records.parquet")


def test_serial_run_of_baselines(tmp_path: Path, cache_dir: Path) -> None:
    code, run_dir = _run(
        tmp_path,
        cache_dir,
        "--methods",
        "uniform,random",
        "--executor",
        "serial",
        "--method-options",
        '{"random": {"num_samples": 3}}',
    )
    assert code == 0
    rows = _records(run_dir)
    assert set(rows["method"]) == {"uniform", "random[num_samples=3]"}  # a variant
    uni = rows[rows["method"] == "uniform"]
    # W8A8 and W4A4 are over 20% of W8A8 BitOPs: recorded infeasible, never trained
    assert set(uni[uni["feasible"] == False]["candidate"]) == {"W8A8", "W4A4"}  # noqa: E712
    assert set(uni[uni["track"] == "retrain"]["candidate"]) == {"W3A3", "W2A2"}
    ok = rows[rows["track"] == "retrain"]
    assert (ok["bitops_ratio_w8a8"] <= 0.2).all() and (ok["top1_test"] > 0).all()
    assert (ok["finetune_device_hours"] > 0).all()
    assert (rows[rows["method"] == "random[num_samples=3]"]["samples_processed"] > 0).all()
    for name in ("records.csv", "metadata.json", "leaderboard.md", "leaderboard.html"):
        assert (run_dir / name).is_file(), name
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["versions"]["torch_version"] and meta["preset"]["name"] == "tiny"


def test_ray_matches_serial(tmp_path: Path, cache_dir: Path, ray_session) -> None:
    args = [
        "--methods",
        "uniform",
        "--seeds",
        "0,1",
        "--method-options",
        '{"uniform": {"bits": [3, 2]}}',
    ]
    code_s, serial_dir = _run(tmp_path, cache_dir, *args, "--executor", "serial", run_id="s")
    code_r, ray_dir = _run(tmp_path, cache_dir, *args, "--executor", "ray", run_id="ray")
    assert code_s == code_r == 0
    key = ["seed", "candidate", "track"]
    serial = _records(serial_dir).sort_values(key).reset_index(drop=True)
    ray_rows = _records(ray_dir).sort_values(key).reset_index(drop=True)
    assert len(serial) == len(ray_rows) == 4
    pd.testing.assert_frame_equal(serial[COMPARED], ray_rows[COMPARED])


def test_failures_are_recorded_and_run_goes_on(
    tmp_path: Path, cache_dir: Path, ray_session, plugins
) -> None:
    code, run_dir = _run(
        tmp_path,
        cache_dir,
        "--methods",
        "mpqbench_fake:Raising,mpqbench_fake:Greedy,mpqbench_fake:AllW4",
        "--method-options",
        '{"mpqbench_fake:AllW4": {"bits": 2}}',
        "--max-search-samples",
        "5000",
    )
    assert code == 1
    rows = _records(run_dir)
    by_method = {m: g for m, g in rows.groupby("method")}
    assert list(by_method["raising"]["status"]) == ["failed"]
    assert "boom from a broken method" in by_method["raising"]["error"].iloc[0]
    assert list(by_method["greedy"]["status"]) == ["over_budget"]
    assert by_method["greedy"]["samples_processed"].iloc[0] > 5000
    good = by_method["allw4[bits=2]"]
    assert list(good["status"]) == ["ok"] and list(good["track"]) == ["retrain"]
    assert "greedy" in (run_dir / "leaderboard.md").read_text()


def test_resumed_store_does_not_duplicate(tmp_path: Path, cache_dir: Path) -> None:
    args = [
        "--methods",
        "uniform",
        "--executor",
        "serial",
        "--method-options",
        '{"uniform": {"bits": [2]}}',
    ]
    _run(tmp_path, cache_dir, *args, run_id="same")
    # the same run id again is refused (exit 2); --resume finds nothing left to run
    assert _run(tmp_path, cache_dir, *args, run_id="same")[0] == 2
    code = main(["run", "--resume", "same", "--out", str(tmp_path), "--executor", "serial"])
    assert code == 0
    assert len(_records(tmp_path / "runs" / "same")) == 1


def test_cost_command_json(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["cost", "--space", "resnet20", "--policy", "w4a4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["macs"] == 40_551_040
    assert data["bitops_w8a8"] == 64 * 40_551_040
    assert {"bitops", "mflops64", "size_bits", "bitops_ratio_w8a8", "layers"} <= set(data)
    policy = {
        layer["name"]: {"w_bits": 2, "a_bits": 3}
        for layer in data["layers"]
        if layer["name"] not in ("conv1", "fc")
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(policy))
    assert main(["cost", "--space", "resnet20", "--policy", str(path), "--json"]) == 0
    mixed = json.loads(capsys.readouterr().out)
    fixed = [la for la in mixed["layers"] if la["name"] in ("conv1", "fc")]
    expected = sum(la["macs"] * 6 for la in mixed["layers"] if la not in fixed) + sum(
        la["macs"] * 64 for la in fixed
    )
    assert mixed["bitops"] == expected


def test_local_ray_workers_run_at_the_drivers_priority(ray_session) -> None:
    """Ray lowers its workers to niceness 15 by default: on a machine with other work a trial
    then gets what is left. The local Ray the harness starts keeps them at the driver's."""
    import ray

    @ray.remote(num_cpus=1)
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, 0)

    assert ray.get(niceness.remote()) == os.getpriority(os.PRIO_PROCESS, 0)


def test_default_smoke_run_through_ray(tmp_path: Path, cache_dir: Path, ray_session) -> None:
    """The README's main job, on its defaults (mbv3-cifar, digits, smoke), through Ray."""
    code = main(
        [
            "run",
            "--methods",
            "uniform",
            "--out",
            str(tmp_path),
            "--run-id",
            "smoke",
            "--cache-dir",
            str(cache_dir),
            "--method-options",
            '{"uniform": {"bits": [8, 3]}}',
        ]
    )
    assert code == 0
    rows = _records(tmp_path / "runs" / "smoke")
    assert set(rows["space"]) == {"mbv3-cifar"} and set(rows["preset"]) == {"smoke"}
    assert set(rows["dataset"]) == {"digits"} and set(rows["constraint"]) == {"bitops<=0.3"}
    w3 = rows[rows["candidate"] == "W3A3"].iloc[0]
    assert w3["track"] == "retrain" and w3["feasible"] and w3["top1_test"] > 50
    assert not rows[rows["candidate"] == "W8A8"].iloc[0]["feasible"]


def test_the_summary_line_says_when_the_budget_stopped_the_search() -> None:
    from benchmark.harness.executors import summarize

    row = {
        "status": "ok", "track": "retrain", "feasible": True, "top1_val": 90.0,
        "top1_test": 89.0, "candidate": "w4", "bitops_ratio_w8a8": 0.25,
        "search_wall_hours": 0.01, "error": "", "stopped_by_budget": True,
    }  # fmt: skip
    assert summarize([row]).startswith("ok (search stopped by its budget), 1 feasible")
    assert summarize([{**row, "stopped_by_budget": False}]).startswith("ok, 1 feasible")
