"""Tests of benchmark.report (leaderboard) on hand-made rows: selection, statistics, ranks,
hypervolume, loading and the written files."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.harness.records import ResultRow, RunStore, rows_to_frame
from benchmark.report.aggregate import AGGREGATE_COLUMNS, aggregate
from benchmark.report.leaderboard import Leaderboard, build_leaderboard
from benchmark.report.load import LeaderboardError, load_runs
from benchmark.report.pareto import (
    POOLED_FRONT_KEYS,
    hypervolume,
    hypervolume_table,
    pareto_front,
)
from benchmark.report.ranks import average_rank
from benchmark.report.render import write_leaderboard

TASK = {
    "space": "resnet20",
    "dataset": "digits",
    "preset": "smoke",
    "constraint": "bitops<=0.5",
}


def row(method: str = "A", seed: int = 0, index: int = 0, **kw) -> ResultRow:
    """An evaluated, feasible, ok retrain candidate unless ``kw`` says otherwise."""
    fields = {
        "run_id": "run1",
        "trial_key": f"{method}-{kw.get('constraint', TASK['constraint'])}-s{seed}",
        "method": method,
        "seed": seed,
        "candidate_index": index,
        "track": "retrain",
        "feasible": True,
        "top1_val": 50.0,
        "top1_test": 50.0,
        "bitops": 1e8,
        "bitops_ratio_w8a8": 0.4,
        "size_bits": 8192.0,
        "device": "cpu",
        **TASK,
    }
    fields.update(kw)
    return ResultRow(**fields)


def failed(method: str, seed: int, status: str = "failed", **kw) -> ResultRow:
    """A trial that produced no candidate (status only)."""
    nan = {"top1_val", "top1_test", "bitops", "bitops_ratio_w8a8", "size_bits"}
    fields = {**{name: math.nan for name in nan}, "error": "boom", **kw}
    return row(method, seed, index=-1, track="none", feasible=None, status=status, **fields)


def infeasible(method: str, seed: int, index: int, **kw) -> ResultRow:
    """A candidate over the constraint: recorded, never trained."""
    fields = {"top1_val": math.nan, "top1_test": math.nan, "bitops_ratio_w8a8": 0.9, **kw}
    return row(method, seed, index, track="none", feasible=False, **fields)


def frame_of(*rows: ResultRow) -> pd.DataFrame:
    return rows_to_frame(rows)


def only(agg: pd.DataFrame, method: str, track: str = "retrain") -> pd.Series:
    hit = agg[(agg["method"] == method) & (agg["track"] == track)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


# ------------------------------------------------------------------------------ aggregation
def test_selects_val_best_candidate_and_reports_its_test_accuracy() -> None:
    frame = frame_of(
        row("A", 0, 0, top1_val=90.0, top1_test=80.0),  # val-best, not test-best
        row("A", 0, 1, top1_val=85.0, top1_test=95.0),  # test-best: must not be chosen
        row("A", 0, 2, top1_val=70.0, top1_test=70.0),
    )
    result = only(aggregate(frame), "A")
    assert result["top1_test_mean"] == pytest.approx(80.0)
    assert result["top1_test_best"] == pytest.approx(80.0)
    assert result["top1_val_mean"] == pytest.approx(90.0)
    assert result["n"] == 1 and result["n_feasible"] == 3
    assert math.isnan(result["top1_test_std"])  # one seed: no std


def test_mean_std_n_and_best_over_seeds() -> None:
    tests = [70.0, 74.0, 78.0]
    rows = [row("A", s, 0, top1_val=60.0, top1_test=t) for s, t in enumerate(tests)]
    rows += [row("A", s, 1, top1_val=10.0, top1_test=99.0) for s in range(3)]  # never chosen
    result = only(aggregate(frame_of(*rows)), "A")
    assert result["n"] == 3 and result["n_seeds"] == 3 and result["seeds"] == "0,1,2"
    assert result["top1_test_mean"] == pytest.approx(74.0)
    assert result["top1_test_std"] == pytest.approx(4.0)  # ddof=1: sqrt((16+0+16)/2)
    assert result["top1_test_best"] == pytest.approx(78.0)
    assert list(aggregate(frame_of(*rows)).columns) == list(AGGREGATE_COLUMNS)


def test_infeasible_and_failed_rows_counted_but_not_averaged() -> None:
    frame = frame_of(
        row("A", 0, 0, top1_val=60.0, top1_test=60.0),
        infeasible("A", 0, 1, top1_val=99.0, top1_test=99.0),  # accuracy must be ignored
        row("A", 0, 2, status="diverged", top1_val=98.0, top1_test=98.0),
        failed("A", 1, status="over_budget", search_device_hours=2.0),
        failed("A", 2, status="failed"),
    )
    result = only(aggregate(frame), "A")
    assert result["top1_test_mean"] == pytest.approx(60.0)
    assert result["n"] == 1 and result["n_seeds"] == 3 and result["n_trials"] == 3
    assert result["n_feasible"] == 1
    assert result["n_infeasible"] == 1
    assert result["n_failures"] == 3
    assert result["failure_statuses"] == "diverged:1, failed:1, over_budget:1"


def test_method_with_only_failures_is_listed_with_n_zero() -> None:
    frame = frame_of(row("A", 0), failed("B", 0), failed("B", 1))
    agg = aggregate(frame)
    b = only(agg, "B")  # attributed to the track the others were evaluated on
    assert b["n"] == 0 and b["n_failures"] == 2 and math.isnan(b["top1_test_mean"])
    assert b["rank"] == 2.0


def test_status_rows_count_on_every_track_the_method_uses() -> None:
    frame = frame_of(
        row("A", 0, 0, track="retrain"),
        row("A", 0, 0, track="inherit"),
        infeasible("A", 0, 1),
        failed("A", 1),
    )
    agg = aggregate(frame)
    for track in ("retrain", "inherit"):
        result = only(agg, "A", track)
        assert result["n_infeasible"] == 1 and result["n_failures"] == 1
    assert set(agg["track"]) == {"retrain", "inherit"}


def test_search_hours_counted_once_per_trial() -> None:
    # trial s0 has 3 candidate rows each repeating 3 h; trial s1 one row with 1 h
    frame = frame_of(
        row("A", 0, 0, search_device_hours=3.0, finetune_device_hours=0.5),
        row("A", 0, 1, search_device_hours=3.0, finetune_device_hours=0.5),
        infeasible("A", 0, 2, search_device_hours=3.0),
        row("A", 1, 0, search_device_hours=1.0, finetune_device_hours=0.25),
    )
    result = only(aggregate(frame), "A")
    assert result["search_device_hours_mean"] == pytest.approx(2.0)  # (3 + 1) / 2, not 10/4
    assert result["finetune_device_hours_mean"] == pytest.approx(0.625)  # (1.0 + 0.25) / 2


def test_val_ties_go_to_the_cheaper_candidate_not_the_better_test() -> None:
    frame = frame_of(
        row("A", 0, 0, top1_val=80.0, top1_test=90.0, bitops_ratio_w8a8=0.5),
        row("A", 0, 1, top1_val=80.0, top1_test=70.0, bitops_ratio_w8a8=0.3),
    )
    assert only(aggregate(frame), "A")["top1_test_mean"] == pytest.approx(70.0)


def test_nan_accuracies_and_empty_frames_are_handled() -> None:
    frame = frame_of(row("A", 0, 0, top1_val=math.nan, top1_test=math.nan), row("B", 0))
    agg = aggregate(frame)
    assert only(agg, "A")["n"] == 0
    assert list(aggregate(frame_of()).columns) == list(AGGREGATE_COLUMNS)
    assert aggregate(frame_of()).empty
    assert average_rank(aggregate(frame_of())).empty
    assert hypervolume_table(frame_of()).empty
    lb = build_leaderboard(frame_of())
    assert isinstance(lb, Leaderboard) and lb.aggregate.empty and lb.n_rows == 0


# ---------------------------------------------------------------------------------- ranking
def test_average_rank_on_two_tasks_by_hand() -> None:
    c1, c2 = "bitops<=0.25", "bitops<=0.5"
    frame = frame_of(
        # task c1: B 92 > A 90 > C (no feasible result)   -> A 2, B 1, C 3
        row("A", 0, constraint=c1, top1_test=90.0),
        row("B", 0, constraint=c1, top1_test=92.0),
        infeasible("C", 0, 0, constraint=c1),
        # task c2: A 91 = B 91 > C 89                      -> A 1.5, B 1.5, C 3
        row("A", 0, constraint=c2, top1_test=91.0),
        row("B", 0, constraint=c2, top1_test=91.0),
        row("C", 0, constraint=c2, top1_test=89.0),
    )
    ranks = average_rank(aggregate(frame))
    assert ranks.to_dict() == {"B": 1.25, "A": 1.75, "C": 3.0}
    assert list(ranks.index) == ["B", "A", "C"]


def test_methods_without_results_share_the_last_places() -> None:
    frame = frame_of(row("A", 0, top1_test=50.0), failed("B", 0), failed("C", 0))
    ranks = average_rank(aggregate(frame))
    assert ranks.to_dict() == {"A": 1.0, "B": 2.5, "C": 2.5}


def test_groups_with_one_method_are_not_ranked() -> None:
    frame = frame_of(
        row("A", 0, track="retrain", top1_test=50.0),
        row("B", 0, track="retrain", top1_test=60.0),
        row("A", 0, track="inherit", top1_test=40.0),  # alone on inherit: no free rank 1
    )
    lb = build_leaderboard(frame)
    assert average_rank(lb.aggregate).to_dict() == {"B": 1.0, "A": 2.0}
    inherit = lb.ranks[lb.ranks["track"] == "inherit"].iloc[0]
    assert inherit["method"] == "A" and inherit["n_groups"] == 0
    assert math.isnan(inherit["average_rank"])


# ------------------------------------------------------------------------------ hypervolume
def test_hypervolume_by_hand() -> None:
    points = [(0.25, 90.0), (0.5, 92.0), (0.6, 91.0)]  # (0.6, 91) is dominated by (0.5, 92)
    # area: [0.25, 0.5) x 90 + [0.5, 1.0) x 92 = 22.5 + 46 = 68.5
    assert hypervolume(points) == pytest.approx(0.25 * 90 + 0.5 * 92)
    assert hypervolume(points, ref=(1.0, 80.0)) == pytest.approx(0.25 * 10 + 0.5 * 12)
    front = pareto_front(points)
    np.testing.assert_allclose(front, [[0.25, 90.0], [0.5, 92.0]])


def test_hypervolume_edge_cases() -> None:
    assert hypervolume([]) == 0.0
    assert hypervolume(np.empty((0, 2))) == 0.0
    assert hypervolume([(math.nan, 90.0), (0.5, math.nan)]) == 0.0
    assert hypervolume([(1.5, 99.0)]) == 0.0  # costlier than the reference
    assert hypervolume([(0.5, -1.0)]) == 0.0  # below the reference accuracy
    assert hypervolume([(0.5, 80.0), (0.5, 80.0)]) == pytest.approx(40.0)  # duplicates once
    assert hypervolume([(0.0, 100.0)]) == pytest.approx(100.0)
    assert pareto_front([]).shape == (0, 2)


def test_hypervolume_table_is_per_seed_then_averaged() -> None:
    frame = frame_of(
        # seed 0: one candidate -> front {(0.25, 90)}: HV = 0.75 * 90 = 67.5
        row("A", 0, 0, constraint="bitops<=0.25", bitops_ratio_w8a8=0.25, top1_val=90.0,
            top1_test=90.0),
        # seed 1, pooled over its constraints: (0.5, 92) dominates (0.6, 91): HV = 0.5 * 92
        row("A", 1, 0, constraint="bitops<=0.5", bitops_ratio_w8a8=0.5, top1_val=92.0,
            top1_test=92.0),
        row("A", 1, 1, constraint="bitops<=0.75", bitops_ratio_w8a8=0.6, top1_val=91.0,
            top1_test=91.0),
        infeasible("A", 1, 2, top1_test=99.0),
        failed("B", 0),
    )  # fmt: skip
    hv = hypervolume_table(frame, keys=POOLED_FRONT_KEYS).set_index("method")
    values = [67.5, 46.0]
    assert hv.loc["A", "hypervolume_mean"] == pytest.approx(np.mean(values))
    assert hv.loc["A", "hypervolume_std"] == pytest.approx(np.std(values, ddof=1))
    t = 12.706204736174698  # t_{0.975, 1}
    assert hv.loc["A", "hypervolume_ci95"] == pytest.approx(t * np.std(values, ddof=1) / 2**0.5)
    assert hv.loc["A", "n"] == 2 and hv.loc["A", "seeds"] == "0,1"
    assert hv.loc["A", "median_seed"] == 1  # the lower of two: 46 < 67.5
    assert hv.loc["B", "hypervolume_mean"] == 0.0 and hv.loc["B", "n"] == 1  # ran, no point
    # the board's hypervolume is per constraint: each limit's own candidates, never pooled
    per_limit = hypervolume_table(frame).set_index(["method", "constraint"])["hypervolume_mean"]
    assert per_limit.to_dict() == pytest.approx(
        {("A", "bitops<=0.25"): 67.5, ("A", "bitops<=0.5"): 46.0, ("A", "bitops<=0.75"): 0.4 * 91,
         ("B", "bitops<=0.5"): 0.0}
    )  # fmt: skip


# ---------------------------------------------------------------------------------- loading
def _store(run_dir: Path, rows: list[ResultRow]) -> Path:
    RunStore.open(run_dir).add(rows)
    return run_dir


def test_load_runs_reads_an_out_folder_with_two_runs(tmp_path: Path) -> None:
    _store(tmp_path / "out" / "runs" / "r1", [row("A", 0, run_id="r1")])
    _store(tmp_path / "out" / "runs" / "r2", [row("A", 1, run_id="r2"), row("B", 1, run_id="r2")])
    frame = load_runs([tmp_path / "out"])
    assert len(frame) == 3 and set(frame["run_id"]) == {"r1", "r2"}
    assert frame["feasible"].dtype == bool and frame["seed"].dtype == "int64"


def test_load_runs_skips_a_corrupt_parquet_with_a_warning(tmp_path: Path) -> None:
    good = _store(tmp_path / "good", [row("A", 0, run_id="good")])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "records.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.warns(UserWarning, match=r"bad[/\\]records\.parquet"):
        frame = load_runs([good, bad])
    assert set(frame["run_id"]) == {"good"}


def test_load_runs_skips_a_run_with_truncated_parquet_and_garbage_csv(tmp_path: Path) -> None:
    good = _store(tmp_path / "good", [row("A", 0, run_id="good")])
    bad = _store(tmp_path / "bad", [row("B", 0, run_id="bad")])
    parquet = (bad / "records.parquet").read_bytes()
    (bad / "records.parquet").write_bytes(parquet[: len(parquet) // 2])  # truncated
    (bad / "records.csv").write_bytes(b"\x00\xff\xfe garbage \x81\n\x02,\x03")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load_runs([good, bad])
    assert set(frame["run_id"]) == {"good"}
    messages = [str(w.message) for w in caught]
    for name in ("records.parquet", "records.csv"):
        assert any(str(bad / name) in m and "skipped" in m for m in messages), messages


def test_load_runs_reads_the_csv_when_the_parquet_is_truncated(tmp_path: Path) -> None:
    run = _store(tmp_path / "r", [row("A", 0, run_id="r")])
    parquet = (run / "records.parquet").read_bytes()
    (run / "records.parquet").write_bytes(parquet[:-20])
    with pytest.warns(UserWarning, match=r"r[/\\]records\.parquet"):
        frame = load_runs([run])
    assert frame["method"].tolist() == ["A"]


def test_cli_leaderboard_warns_about_an_unreadable_run_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from benchmark.cli import main

    _store(tmp_path / "out" / "runs" / "good", [row("A", 0, run_id="good")])
    bad = tmp_path / "out" / "runs" / "bad"
    bad.mkdir()
    (bad / "records.parquet").write_bytes(b"PAR1 truncated")
    board = tmp_path / "board"
    assert main(["leaderboard", str(tmp_path / "out"), "--out", str(board)]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and str(bad / "records.parquet") in warned[0], err
    assert "Traceback" not in err
    assert "| A " in (board / "leaderboard.md").read_text()


def test_load_runs_falls_back_to_csv(tmp_path: Path) -> None:
    run = _store(tmp_path / "r", [row("A", 0, run_id="r", trial_key="1e5")])
    (run / "records.parquet").unlink()
    frame = load_runs([run])
    assert frame["trial_key"].tolist() == ["1e5"]  # a numeric-looking key stays a string
    assert bool(frame["feasible"].iloc[0]) is True


def test_load_runs_raises_when_nothing_is_readable(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "records.parquet").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(LeaderboardError, match="no readable"):
        load_runs([bad])
    with pytest.warns(UserWarning), pytest.raises(LeaderboardError):
        load_runs([tmp_path / "missing"])


def test_duplicate_rows_are_dropped(tmp_path: Path) -> None:
    run = _store(tmp_path / "out" / "runs" / "r1", [row("A", 0, run_id="r1")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # identical duplicates are dropped silently
        frame = load_runs([run, tmp_path / "out", run])
    assert len(frame) == 1
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("records.parquet", "records.csv"):
        (copy / name).write_bytes((run / name).read_bytes())
    assert len(load_runs([run, copy])) == 1


# ----------------------------------------------------------------------------------- output
def test_leaderboard_files_are_written(tmp_path: Path) -> None:
    frame = frame_of(
        row("A", 0, 0, top1_val=90.0, top1_test=80.0, search_device_hours=1.0),
        row("A", 1, 0, top1_val=90.0, top1_test=82.0, search_device_hours=1.0),
        row("B", 0, 0, top1_val=70.0, top1_test=70.0, device="cuda:NVIDIA H100"),
        failed("B", 1, status="over_budget"),
        row("A|<x>", 0, 0, top1_test=10.0),  # awkward name: escaped in md and html
    )
    lb = build_leaderboard(frame)
    paths = write_leaderboard(lb, tmp_path / "lb")
    assert sorted(p.name for p in paths) == [
        "leaderboard.csv", "leaderboard.html", "leaderboard.json", "leaderboard.md",
        "leaderboard_long.csv",
    ]  # fmt: skip
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "`run1`" in md and "`cpu`" in md and "`cuda:NVIDIA H100`" in md
    assert "| 81.00 ± 12.71 (n=2) | 1.41 |" in md  # mean ± 95% t-interval, then the std
    assert "70.00 (n=1/2)" in md and "1 (over_budget:1)" in md
    assert "A\\|<x>" in md
    html = (tmp_path / "lb" / "leaderboard.html").read_text()
    assert "<table" in html and "<script>" in html and "A|&lt;x&gt;" in html
    assert "http://" not in html and "https://" not in html  # self-contained
    csv = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert list(csv.columns) == list(AGGREGATE_COLUMNS) and len(csv) == 3
    assert not list((tmp_path / "lb").glob(".*tmp"))  # atomic writes leave no temp files


def test_empty_leaderboard_still_writes_files(tmp_path: Path) -> None:
    paths = write_leaderboard(build_leaderboard(frame_of()), tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)
    assert "No results" in (tmp_path / "leaderboard.md").read_text()


def test_wall_hours_are_shown_only_where_they_differ_from_device_hours() -> None:
    from benchmark.report.tables import WALL_HEADER, results_table

    one_cpu = [
        row(m, s, search_device_hours=0.2, search_wall_hours=0.2) for m in "AB" for s in (0, 1)
    ]
    table = results_table(build_leaderboard(frame_of(*one_cpu)))
    assert WALL_HEADER not in table.headers and "not shown twice" in table.note
    assert all(len(r) == len(table.headers) for r in table.rows)
    two_cpus = [*one_cpu[:-1], row("B", 1, search_device_hours=0.4, search_wall_hours=0.2)]
    table = results_table(build_leaderboard(frame_of(*two_cpus)))
    assert WALL_HEADER in table.headers and "not shown twice" not in table.note
