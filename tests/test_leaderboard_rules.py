"""The leaderboard's rules against gaming, on hand-made rows whose right answer is worked
out by hand here: repeats count once, fronts and hypervolumes are per seed and chosen on
validation, a failed seed costs rank, a missing test score is missing, a lone method has no
rank, records of different code are kept apart, and mixed device shares are said."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.harness.records import ResultRow, RunStore, rows_to_frame
from benchmark.report.leaderboard import build_leaderboard
from benchmark.report.load import load_runs
from benchmark.report.pareto import hypervolume_table
from benchmark.report.ranks import average_rank
from benchmark.report.render import render_markdown

TASK = {"space": "resnet20", "dataset": "digits", "preset": "smoke", "constraint": "bitops<=0.5"}


def row(method: str, seed: int = 0, index: int = 0, run: str = "r1", **kw) -> ResultRow:
    """A feasible ok retrain candidate (val = test unless given) finished in ``run``."""
    test = kw.pop("test", 80.0)
    fields = {
        **TASK,
        "run_id": run,
        "trial_key": f"{method}|{kw.get('constraint', TASK['constraint'])}|{seed}",
        "method": method,
        "seed": seed,
        "candidate_index": index,
        "track": "retrain",
        "feasible": True,
        "top1_val": kw.pop("val", test),
        "top1_test": test,
        "bitops_ratio_w8a8": 0.5,
        "finished_at": f"2030-01-01T00:00:{int(run[1:]):02d}",
        "mpqbench_version": "0.1.0",
        "git_sha": "aaaaaaaaaaaa",
    }
    fields.update(kw)
    return ResultRow(**fields)


def failure(method: str, seed: int, status: str = "over_budget", **kw) -> ResultRow:
    nan = {"top1_val": math.nan, "top1_test": math.nan, "bitops_ratio_w8a8": math.nan}
    return row(method, seed, -1, track="none", feasible=None, status=status, **{**nan, **kw})


def board(*rows: ResultRow, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_leaderboard(rows_to_frame(rows), **options)


def entry(agg: pd.DataFrame, method: str) -> pd.Series:
    (hit,) = [r for _, r in agg.iterrows() if r["method"] == method]
    return hit


# ------------------------------------------------------------------------------ repeats
RERUNS = [row("A", 0, run="r1", test=95.0), row("A", 0, run="r2", test=90.0)]
RERUNS += [row("A", 0, run="r3", test=85.0), row("B", 0, run="r1", test=88.0)]


def test_three_reruns_of_one_seed_count_once_the_most_recent() -> None:
    lb = board(*RERUNS)
    a, b = entry(lb.aggregate, "A"), entry(lb.aggregate, "B")
    # pooled, validation would pick run r1's 95; only the latest run (r3, 85) counts
    assert a["top1_test_mean"] == 85.0 and a["n"] == 1 and a["n_trials"] == 1
    assert lb.n_repeats_left_out == 2
    assert (b["rank"], a["rank"]) == (1.0, 2.0)
    assert entry(lb.hypervolume, "A")["hypervolume_mean"] == pytest.approx(0.5 * 85)
    assert "2 older repeat(s) left out" in render_markdown(lb)


def test_all_repeats_shows_each_run_as_its_own_labelled_entry() -> None:
    agg = board(*RERUNS, all_repeats=True).aggregate
    means = dict(zip(agg["method"], agg["top1_test_mean"], strict=True))
    assert means == {"A (run r1)": 95.0, "A (run r2)": 90.0, "A (run r3)": 85.0, "B": 88.0}


def test_cli_leaderboard_all_repeats(tmp_path: Path) -> None:
    for run in ("r1", "r2", "r3"):
        RunStore.open(tmp_path / "runs" / run).add([r for r in RERUNS if r.run_id == run])
    assert main(["leaderboard", str(tmp_path), "--out", str(tmp_path / "one")]) == 0
    md = (tmp_path / "one" / "leaderboard.md").read_text()
    assert "| A (run" not in md and "2 older repeat(s) left out" in md
    assert (
        main(["leaderboard", str(tmp_path), "--all-repeats", "--out", str(tmp_path / "all")]) == 0
    )
    md = (tmp_path / "all" / "leaderboard.md").read_text()
    assert "| A (run r1) |" in md and "| A (run r3) |" in md


# --------------------------------------------------------------------- fronts, per seed
def test_the_front_is_chosen_on_validation_not_on_test() -> None:
    lb = board(
        row("A", 0, 0, val=90.0, test=80.0, bitops_ratio_w8a8=0.5),
        row("A", 0, 1, val=80.0, test=90.0, bitops_ratio_w8a8=0.5),
    )
    # same cost: the val-90 candidate dominates; its test 80 is what the front is worth
    assert entry(lb.hypervolume, "A")["hypervolume_mean"] == pytest.approx((1 - 0.5) * 80)
    assert entry(lb.aggregate, "A")["top1_test_mean"] == 80.0


def test_five_seeds_with_a_lower_mean_do_not_beat_one_seed_with_a_higher() -> None:
    tests = [70.0, 72.0, 74.0, 76.0, 90.0]
    rows = [row("A", s, test=t) for s, t in enumerate(tests)] + [row("B", 0, test=85.0)]
    hv = hypervolume_table(rows_to_frame(rows)).set_index("method")
    per_seed = [0.5 * t for t in tests]  # each seed's front: one point at cost 0.5
    assert hv.loc["A", "hypervolume_mean"] == pytest.approx(np.mean(per_seed))  # 38.2
    t4 = 2.7764451051977987  # t_{0.975, 4}
    half = t4 * np.std(per_seed, ddof=1) / math.sqrt(5)
    assert hv.loc["A", "hypervolume_ci95"] == pytest.approx(half)
    assert hv.loc["B", "hypervolume_mean"] == pytest.approx(42.5)  # pooled A would be 45
    assert hv.loc["A", "hypervolume_mean"] < hv.loc["B", "hypervolume_mean"]
    assert hv.loc["A", "median_seed"] == 2 and hv.loc["A", "n"] == 5


# -------------------------------------------------------------------------------- ranks
def test_a_failed_seed_costs_rank() -> None:
    rows = [row("A", 0, test=91.0), row("A", 1, test=84.0), failure("A", 2)]
    rows += [row("B", s, test=85.0) for s in range(3)]
    lb = board(*rows)
    # mean over its two results A (87.5) beats B (85); per seed: A 1, 2, 2 and B 2, 1, 1
    assert entry(lb.aggregate, "A")["rank"] == pytest.approx(5 / 3)
    assert entry(lb.aggregate, "B")["rank"] == pytest.approx(4 / 3)
    assert list(average_rank(lb.aggregate).index) == ["B", "A"]


def test_a_lone_method_group_shows_no_rank() -> None:
    lb = board(row("A", 0, test=80.0), row("A", 0, constraint="bitops<=0.25", test=70.0),
               row("B", 0, constraint="bitops<=0.25", test=60.0))  # fmt: skip
    lone = lb.aggregate[lb.aggregate["constraint"] == "bitops<=0.5"].iloc[0]
    assert lone["method"] == "A" and math.isnan(lone["rank"])
    assert "| — | A |" in render_markdown(lb)
    assert average_rank(lb.aggregate).to_dict() == {"A": 1.0, "B": 2.0}


def test_a_best_validation_candidate_without_a_test_score_is_missing() -> None:
    lb = board(row("A", 0, 0, val=95.0, test=math.nan), row("A", 0, 1, val=90.0, test=99.0),
               row("B", 0, test=70.0))  # fmt: skip
    a = entry(lb.aggregate, "A")
    assert a["n"] == 0 and a["n_missing_test"] == 1 and math.isnan(a["top1_test_mean"])
    assert a["rank"] == 2.0  # no result for that seed: last
    assert "— (n=0/1, 1 missing test)" in render_markdown(lb)
    assert math.isnan(entry(lb.hypervolume, "A")["hypervolume_mean"])


# ---------------------------------------------------------------- code versions, shares
def test_records_of_different_git_shas_are_kept_apart() -> None:
    rows = [row("A", 0, test=90.0), row("B", 0, run="r2", test=80.0, git_sha="bbbbbbbbbbbb")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lb = build_leaderboard(rows_to_frame(rows))
    (warned,) = [str(w.message) for w in caught]
    assert "2 code versions are kept apart" in warned and "bbbbbbbbbbbb" in warned
    assert lb.aggregate["code_version"].nunique() == 2
    assert lb.aggregate["rank"].isna().all()  # each alone in its own group: not ranked
    md = render_markdown(lb)
    assert "`mpqbench 0.1.0 @ aaaaaaaaaaaa` (1 rows)" in md
    assert "`mpqbench 0.1.0 @ bbbbbbbbbbbb` (1 rows)" in md
    pooled = board(*rows, allow_mixed=True).aggregate
    assert pooled["code_version"].nunique() == 1 and list(pooled["rank"]) == [1.0, 2.0]


def test_cli_says_versions_are_mixed_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    RunStore.open(tmp_path / "runs" / "r1").add([row("A", 0, test=90.0)])
    RunStore.open(tmp_path / "runs" / "r2").add([row("B", 0, run="r2", git_sha="bbbbbbbbbbbb")])
    assert main(["leaderboard", str(tmp_path)]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 1 and "kept apart" in warned[0], warned
    assert main(["leaderboard", str(tmp_path), "--allow-mixed"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 1 and "pooled (--allow-mixed)" in warned[0], warned


def test_a_csv_missing_schema_columns_is_reported_and_kept_apart(tmp_path: Path) -> None:
    RunStore.open(tmp_path / "r1").add([row("A", 0, test=90.0)])
    old = rows_to_frame([row("B", 0, run="r2", test=80.0)])
    (tmp_path / "r2").mkdir()
    old.drop(columns=["search_wall_hours", "device_share", "fp_source"]).to_csv(
        tmp_path / "r2" / "records.csv", index=False
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load_runs([tmp_path / "r1", tmp_path / "r2"])
        lb = build_leaderboard(frame)
    messages = [str(w.message) for w in caught]
    assert any(
        str(tmp_path / "r2" / "records.csv") in m and "3 schema column" in m for m in messages
    )
    versions = set(lb.aggregate["code_version"])
    assert versions == {
        "mpqbench 0.1.0 @ aaaaaaaaaaaa", "mpqbench 0.1.0 @ aaaaaaaaaaaa (older records format)"
    }  # fmt: skip


def test_task_groups_mixing_device_shares_are_said() -> None:
    rows = [row("A", 0, device="NVIDIA H200", device_share=0.5, search_device_hours=0.5)]
    rows += [row("B", 0, device="NVIDIA H200", device_share=1.0, search_device_hours=1.0)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lb = build_leaderboard(rows_to_frame(rows))
    (warned,) = [str(w.message) for w in caught]
    assert "different device shares" in warned and "0.5 × NVIDIA H200" in warned
    assert entry(lb.aggregate, "A")["device_shares"] == "0.5 × NVIDIA H200"
    assert "0.5 × NVIDIA H200; 1 × NVIDIA H200" in render_markdown(lb)


def test_the_fp_start_is_shown_once() -> None:
    fp = {"fp_samples": 12000, "fp_device_hours": 0.02, "fp_device": "cpu (1 thread)",
          "fp_built_at": "2030-01-01T00:00:00"}  # fmt: skip
    lb = board(
        row("A", 0, fp_source="built", **fp),
        row("B", 0, fp_source="cache", **fp),
        row("C", 0, run="r2", fp_source="cache", **fp),
    )
    (start,) = lb.fp_starts.to_dict("records")
    assert start["samples"] == 12000 and start["device_hours"] == 0.02
    assert start["built_in_runs"] == ["r1"] and start["n_trials"] == 3
    md = render_markdown(lb)
    assert "Shared FP starting points (not charged to methods)" in md
    assert "| resnet20 | digits | smoke | 0 | 12000 | 0.02 | cpu (1 thread) |" in md
