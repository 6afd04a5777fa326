"""Cost accounting of a trial: device-hours are device time (wall × the trial's share),
wall hours and CPU seconds beside them; the shared FP start's cost is recorded once and
never charged; the harness's warm-up is not the method's.

Trials run in-process (``run_trial`` or ``main`` with the serial executor) on the tiny
preset; a GPU share is simulated where the machine has none.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark.arena import Budget, BudgetMeter
from benchmark.cli import main
from benchmark.harness import trial as trial_module
from benchmark.harness.accounting import DeviceShare, trial_device
from benchmark.harness.records import COLUMNS, fp_starting_points, normalise
from benchmark.harness.spec import TrialSpec
from benchmark.report.aggregate import aggregate
from benchmark.report.leaderboard import build_leaderboard

HERE = Path(__file__).parent
TINY = str(HERE / "tiny.toml")
PLUGINS = str(HERE / "plugins")
TASK = {"space": "resnet20", "dataset": "digits", "preset": TINY, "constraint": "bitops<=0.3"}


@pytest.fixture()
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(PLUGINS)


def spec(tmp_path: Path, method: str, seed: int = 0, **kw) -> TrialSpec:
    """A trial of ``method`` on :data:`TASK`; its FP start comes from the session's cache
    (``$MPQBENCH_CACHE``: built once for every test that trains on the tiny preset)."""
    return TrialSpec(
        run_id="r",
        method=method,
        task={**TASK, "seed": seed},
        run_dir=str(tmp_path / "runs" / "r"),
        cache_dir=os.environ["MPQBENCH_CACHE"],
        **kw,
    )


# ------------------------------------------------------------------------ device shares
def test_two_trials_at_half_a_gpu_are_charged_one_gpu_between_them() -> None:
    half = DeviceShare("NVIDIA H200", cpus=4, gpus=0.5, on_gpu=True)
    # two trials side by side on one GPU for one hour each: one GPU-hour in all
    assert half.device_hours(3600) + half.device_hours(3600) == pytest.approx(1.0)
    assert half.row_fields() == {
        "device": "NVIDIA H200", "trial_cpus": 4.0, "trial_gpus": 0.5, "device_share": 0.5
    }  # fmt: skip
    cpu = DeviceShare("cpu (2 threads)", cpus=2, gpus=0.0, on_gpu=False)
    assert cpu.device_hours(1800) == pytest.approx(1.0)  # CPU-core-hours: 0.5 h × 2 CPUs


def test_the_share_follows_where_the_trial_computes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device, share = trial_device(spec(tmp_path, "uniform", cpus=2, gpus=0.5))
    assert device.type == "cpu" and not share.on_gpu  # no GPU here: charged its 2 CPUs
    assert share.share == 2 and share.device == "cpu (2 threads)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
    device, share = trial_device(spec(tmp_path, "uniform", cpus=2, gpus=0.5))
    assert device.type == "cuda" and share.on_gpu and share.share == 0.5
    assert share.device == "Fake GPU"


def test_trial_rows_charge_wall_time_times_the_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugins
) -> None:
    half = DeviceShare("Fake GPU", cpus=1, gpus=0.5, on_gpu=True)
    monkeypatch.setattr(trial_module, "trial_device", lambda s: (torch.device("cpu"), half))
    rows = [
        row
        for run in ("a", "b")  # two trials at 0.5 GPU (one seed: one FP start to build)
        for row in trial_module.run_trial(spec(tmp_path / run, "mpqbench_fake:AllW4", gpus=0.5))
    ]
    frame = normalise(pd.DataFrame(rows))
    assert list(frame["status"]) == ["ok", "ok"] and list(frame["track"]) == ["retrain"] * 2
    assert (frame["device"] == "Fake GPU").all() and (frame["device_share"] == 0.5).all()
    assert (frame["trial_gpus"] == 0.5).all() and (frame["trial_cpus"] == 1.0).all()
    for kind in ("search", "finetune"):
        wall = frame[f"{kind}_wall_hours"]
        assert (wall > 0).all()
        pd.testing.assert_series_equal(
            frame[f"{kind}_device_hours"], wall * 0.5, check_names=False, rtol=1e-12
        )
        assert (frame[f"{kind}_cpu_seconds"] >= 0).all()
    assert (frame["finetune_cpu_seconds"] > 0).all()  # the finetune trains: CPU time counted
    board = aggregate(frame).iloc[0]
    assert board["search_device_hours_mean"] == pytest.approx(0.5 * board["search_wall_hours_mean"])
    assert board["device_shares"] == "0.5 × Fake GPU"


def test_the_meter_keeps_cpu_seconds_across_a_resume() -> None:
    wall = iter([0.0, 2.0]).__next__
    cpu = iter([10.0, 11.5]).__next__
    meter = BudgetMeter(Budget(60.0, 100), clock=wall, cpu_clock=cpu)
    meter.restore(5, 3.0, cpu_seconds=4.0)
    assert meter.spent() == {"samples": 5, "seconds": 5.0, "cpu_seconds": 5.5}


def test_old_records_read_back_with_the_new_columns() -> None:
    old = pd.DataFrame(
        [{"run_id": "r", "trial_key": "k", "search_device_hours": 0.25, "samples_processed": 9}]
    )
    frame = normalise(old)
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)
    row = frame.iloc[0]
    assert row["search_wall_hours"] == 0.25  # written as wall hours then
    assert math.isnan(row["device_share"]) and math.isnan(row["search_cpu_seconds"])
    assert row["fp_samples"] == -1 and row["fp_source"] == ""
    assert fp_starting_points(frame) == []


# ------------------------------------------------------------------------------ warm-up
def test_the_harness_warm_up_is_not_in_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugins
) -> None:
    """The first cost profile of a process (torch's lazy imports, ~1.7 s) is paid before
    the search's clock starts: a search that asks for its limit profiles nothing."""
    from benchmark.arena.spaces import base

    profiles: list[str] = []
    real_profile, real_search = base.profile_layers, trial_module._search

    def counting_profile(*args, **kwargs):
        profiles.append("profile")
        return real_profile(*args, **kwargs)

    during: list[int] = []

    def counted_search(*args, **kwargs):
        before = len(profiles)
        try:
            return real_search(*args, **kwargs)
        finally:
            during.append(len(profiles) - before)

    monkeypatch.setattr(base, "profile_layers", counting_profile)
    monkeypatch.setattr(trial_module, "_search", counted_search)
    (row,) = trial_module.run_trial(spec(tmp_path, "mpqbench_fake:CostQuerying"))
    assert row["status"] == "ok", row["error"]
    assert json.loads(row["extra"])["feasible"] is True
    assert during == [0] and len(profiles) >= 1  # profiled once, before the search


# --------------------------------------------------------------------- the shared FP cost
def _run(out: Path, run_id: str, methods: str, *extra: str) -> int:
    argv = ["run", "--space", "resnet20", "--preset", TINY, "--constraint", "bitops<=0.3"]
    argv += ["--out", str(out), "--run-id", run_id, "--cache-dir", str(out / "cache")]
    return main([*argv, "--executor", "serial", "--methods", methods, *extra])


def test_the_fp_start_is_recorded_once_and_not_charged(tmp_path: Path, plugins) -> None:
    options = '{"uniform": {"bits": [2]}}'
    assert _run(tmp_path, "r1", "mpqbench_fake:AllW4,uniform", "--method-options", options) == 0
    rows = pd.read_parquet(tmp_path / "runs" / "r1" / "records.parquet")
    assert list(rows["fp_source"]) == ["built", "cache"]  # the first trial built it
    assert rows["fp_built_at"].nunique() == 1 and (rows["fp_built_at"] != "").all()
    assert (rows["fp_samples"] > 0).all() and (rows["fp_device_hours"] > 0).all()
    assert (rows["fp_device"] == "cpu (1 thread)").all()
    assert (rows["search_wall_hours"] < rows["fp_device_hours"]).all()  # not in the search
    meta = json.loads((tmp_path / "runs" / "r1" / "metadata.json").read_text())
    (start,) = meta["fp_starting_points"]
    assert start["from_cache"] is False and start["built_in_runs"] == ["r1"]
    assert start["n_trials"] == 2 and start["samples"] == int(rows["fp_samples"].iloc[0])
    assert start["device_hours"] == pytest.approx(float(rows["fp_device_hours"].iloc[0]))
    assert "trials" in meta and "settings" in meta  # the rest of the metadata is kept

    # a later run finds it in the cache: recorded as from the cache, built earlier
    assert _run(tmp_path, "r2", "uniform", "--method-options", '{"uniform": {"bits": [3]}}') == 0
    meta = json.loads((tmp_path / "runs" / "r2" / "metadata.json").read_text())
    (start,) = meta["fp_starting_points"]
    assert start["from_cache"] is True and start["built_at"] == rows["fp_built_at"].iloc[0]

    # the leaderboard of both runs shows it once, built in r1
    frame = pd.concat(
        [pd.read_parquet(tmp_path / "runs" / r / "records.parquet") for r in ("r1", "r2")]
    )
    (shown,) = build_leaderboard(frame).fp_starts.to_dict("records")
    assert shown["built_in_runs"] == ["r1"] and shown["n_trials"] == 3
