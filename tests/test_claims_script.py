"""scripts/claims.py's own arithmetic: the paired verdicts, the tracks' τ, QFA's stage losses
and extremes, read from rows and search logs written here (the claims' runs themselves are
measurements, in results/claims/)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "claims.py"


@pytest.fixture(scope="module")
def claims():
    spec = importlib.util.spec_from_file_location("claims_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_pairs_by_seed_and_the_verdict_says_whether_seeds_tell(claims) -> None:
    a = pd.Series({0: 90.0, 1: 91.0, 2: 92.0, 3: 93.5})
    b = pd.Series({1: 89.0, 2: 90.1, 3: 91.4, 4: 50.0})  # seed 4 unpaired, seed 0 too
    result = claims.compare(a, b)
    assert result["seeds"] == [1, 2, 3]
    assert result["difference"] == pytest.approx(np.mean([2.0, 1.9, 2.1]))
    assert result["p_value"] < 0.05
    assert "a ahead by 2.00 points" in claims.verdict(result, "a", "b")
    assert claims.verdict(result, "a", "b").endswith("a difference")
    noisy = claims.compare(pd.Series({0: 90.0, 1: 80.0}), pd.Series({0: 85.0, 1: 84.0}))
    assert claims.verdict(noisy, "a", "b").endswith("not told apart")
    same = claims.compare(a, a)
    assert claims.verdict(same, "a", "b").startswith("identical on every seed")


def test_tracks_tau_pairs_each_candidates_inherit_and_retrain_rows(claims) -> None:
    rows = []
    for seed in (0, 1):
        for k, (inherit, retrain) in enumerate([(50.0, 80.0), (60.0, 85.0), (70.0, 90.0)]):
            for track, top1 in (("inherit", inherit + seed), ("retrain", retrain + seed)):
                rows.append(
                    dict(method="oqat", seed=seed, candidate=f"W{4 - k}A{4 - k}", track=track,
                         top1_test=top1, status="ok")
                )  # fmt: skip
    rows.append(dict(method="oqat", seed=2, candidate="W4A4", track="retrain", top1_test=1.0,
                     status="failed"))  # fmt: skip
    found = claims.tracks_tau(pd.DataFrame(rows))
    assert found["pairs"] == 6 and found["kendall_tau"] == pytest.approx(1.0)
    flipped = pd.DataFrame(rows).assign(
        top1_test=lambda d: np.where(d["track"] == "inherit", -d["top1_test"], d["top1_test"])
    )
    assert claims.tracks_tau(flipped)["kendall_tau"] == pytest.approx(-1.0)
    assert math.isnan(claims.tracks_tau(pd.DataFrame(rows[:4]))["kendall_tau"])  # < 3 pairs


def test_by_seed_takes_the_first_candidate_or_the_feasible_one_best_on_validation(claims) -> None:
    rows = pd.DataFrame(
        [
            dict(seed=0, candidate_index=0, top1_val=90.0, top1_test=89.0, feasible=True),
            dict(seed=0, candidate_index=1, top1_val=92.0, top1_test=91.0, feasible=True),
            dict(seed=0, candidate_index=2, top1_val=95.0, top1_test=94.0, feasible=False),
            dict(seed=1, candidate_index=0, top1_val=93.0, top1_test=92.0, feasible=True),
        ]
    ).assign(method="dnas", track="retrain", status="ok", candidate="c")
    assert claims.by_seed(rows, "dnas").to_dict() == {0: 89.0, 1: 92.0}
    assert claims.by_seed(rows, "dnas", best_val=True).to_dict() == {0: 91.0, 1: 92.0}


def test_random_is_matched_to_dnas_by_whole_scorings_within_its_samples(claims) -> None:
    rows = pd.DataFrame(
        [dict(method="dnas", seed=s, samples_processed=42_240) for s in (0, 1, 2)]
        + [dict(method="random", seed=s, samples_processed=16 * 12_256) for s in (0, 1, 2)]
        + [dict(method="random", seed=0, samples_processed=16 * 12_256)]  # a second row
    )
    assert claims.search_samples(rows, "dnas") == {"0": 42_240, "1": 42_240, "2": 42_240}
    assert claims.matched_random_samples(rows) == 3  # 3 x 12,256 = 36,768 <= 42,240
    fewer = rows.assign(samples_processed=lambda d: d["samples_processed"].where(
        d["method"] == "random", 10_000))  # fmt: skip
    assert claims.matched_random_samples(fewer) == 1  # always at least one scoring


def test_qfa_stage_losses_and_extremes_come_from_the_search_log(claims) -> None:
    inf = float("inf")
    log = {
        "stages": [
            {"stage": 0, "steps": 21, "final_loss": 1.5, "loss_curve": [[0, 2.3], [10, 1.7]]},
            {"stage": 1, "steps": 30, "final_loss": 9.0, "loss_curve": [[0, 2.0], [10, inf]]},
        ],
        "extremes_val_top1": {"min W2A2": 40.0, "min W4A4": 60.0, "max W2A2": 70.0,
                              "max W4A4": 90.0},
    }  # fmt: skip
    stages = claims.stage_losses(log)
    assert stages["stage0"]["max_loss"] == 2.3 and not stages["stage0"]["non_finite"]
    assert stages["stage1"]["non_finite"]
    ends = claims.extremes_by_seed({("qfa", 3): log, ("other", 3): {}}, "qfa")
    assert ends["min"].to_dict() == {3: 50.0} and ends["max"].to_dict() == {3: 80.0}


def test_an_interrupted_claim_resumes_without_the_settings_resume_refuses(claims, tmp_path) -> None:
    import argparse

    from benchmark.cli.parser import build_parser
    from benchmark.harness.benchmark_run import RESUMED_SETTINGS

    args = argparse.Namespace(out=str(tmp_path), preset="fmnist", seeds="0,1", threads=2)
    extra = ["--methods", "dnas", "--method-options", '{"dnas": {"beta": 0.2}}']
    fresh = claims.harness_command(args, "claim-x", extra)
    assert fresh[-2:] == ["--run-id", "claim-x"] and "--methods" in fresh
    (tmp_path / "runs" / "claim-x").mkdir(parents=True)
    (tmp_path / "runs" / "claim-x" / "metadata.json").write_text("{}")
    resumed = claims.harness_command(args, "claim-x", extra)
    assert resumed[-2:] == ["--resume", "claim-x"]
    parsed = build_parser().parse_args(resumed[3:])  # after python -m benchmark
    assert parsed.out == str(tmp_path) and parsed.executor == "serial"
    given = [name for name in RESUMED_SETTINGS if getattr(parsed, name, None) is not None]
    assert given == []  # what the CLI would refuse beside --resume


def test_trials_their_budget_stopped_are_named(claims) -> None:
    rows = pd.DataFrame(
        {
            "method": ["haq", "haq", "haq", "random"],
            "seed": [0, 1, 1, 0],
            "stopped_by_budget": [False, True, True, None],
        }
    )
    assert claims.budget_stops(rows) == ["haq seed 1"]
    assert claims.budget_stops(rows.drop(columns="stopped_by_budget")) == []


def test_an_interrupted_run_keeps_each_attempts_wall_time(claims, tmp_path, monkeypatch) -> None:
    """A claim's run stopped (exit 130) and resumed: both calls are in attempts.json, and
    the finished run's wall time is their sum."""
    import argparse
    import subprocess

    folder = tmp_path / "runs" / "claim-x"
    codes = iter([130, 0])

    def fake_run(command, check=False):
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {"status": ["ok"], "stopped_by_budget": [False], "method": ["uniform"], "seed": [0]}
        ).to_parquet(folder / "records.parquet")
        return subprocess.CompletedProcess(command, next(codes))

    monkeypatch.setattr(claims.subprocess, "run", fake_run)
    args = argparse.Namespace(out=str(tmp_path), preset="tiny", seeds="0", threads=1)
    with pytest.raises(SystemExit, match="exited with 130"):
        claims.run_harness(args, "x", ["--methods", "uniform"])
    assert not (folder / "measured.json").exists()
    _, info = claims.run_harness(args, "x", ["--methods", "uniform"])
    assert [a["exit_code"] for a in info["attempts"]] == [130, 0]
    assert info["wall_seconds"] == pytest.approx(sum(a["wall_seconds"] for a in info["attempts"]))
