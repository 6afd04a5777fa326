"""The search log of a trial: written beside its log.txt, readable, strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.cli import main
from benchmark.harness.search_log import SEARCH_LOG, read_search_log, write_search_log

TINY = Path(__file__).parent / "tiny.toml"


def test_numbers_arrays_and_non_finite_values_become_strict_json(tmp_path: Path) -> None:
    log = {"a": 1.5, "nan": math.nan, "inf": [math.inf, 2], "np": np.float32(0.25),
           "array": np.arange(3), "tensor": torch.tensor([1.0, math.nan]),
           "path": tmp_path}  # fmt: skip
    assert write_search_log(tmp_path, log) == tmp_path / SEARCH_LOG
    text = (tmp_path / SEARCH_LOG).read_text()
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # strict
    assert read_search_log(tmp_path) == {
        "a": 1.5, "nan": None, "inf": [None, 2], "np": 0.25, "array": [0, 1, 2],
        "tensor": [1.0, None], "path": str(tmp_path),
    }  # fmt: skip
    assert read_search_log(tmp_path / "none") is None


def test_an_unwritable_folder_costs_the_log_not_the_trial(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert write_search_log(blocked, {"a": 1}) is None


def test_a_run_keeps_each_trials_search_log(tmp_path: Path, cache_dir: Path) -> None:
    argv = ["run", "--methods", "ompq", "--space", "resnet20", "--preset", str(TINY),
            "--executor", "serial", "--out", str(tmp_path), "--run-id", "logged",
            "--cache-dir", str(cache_dir), "--constraint", "bitops<=0.4"]  # fmt: skip
    assert main(argv) == 0
    run = tmp_path / "runs" / "logged"
    (trial,) = [p for p in (run / "trials").iterdir() if p.is_dir()]
    search_log = read_search_log(trial)
    assert search_log is not None and "orm" in search_log  # the method's own log
    rows = pd.read_parquet(run / "records.parquet")
    assert (rows["status"] == "ok").all()


def test_a_run_keeps_each_trials_anytime_record(tmp_path: Path, cache_dir: Path) -> None:
    """``random`` scores and then offers after each of its three samples: six events, the
    samples charged never falling, each offer's best score the best seen so far."""
    from benchmark.harness.search_log import ANYTIME, read_anytime

    options = json.dumps({"random": {"num_samples": 3, "top_k": 1}})
    argv = ["run", "--methods", "random", "--space", "resnet20", "--preset", str(TINY),
            "--executor", "serial", "--out", str(tmp_path), "--run-id", "any",
            "--cache-dir", str(cache_dir), "--method-options", options]  # fmt: skip
    assert main(argv) == 0
    (trial,) = [p for p in (tmp_path / "runs" / "any" / "trials").iterdir() if p.is_dir()]
    assert (trial / ANYTIME).exists()
    events = read_anytime(trial)
    assert [e["event"] for e in events] == ["score", "offer"] * 3
    samples = [e["samples"] for e in events]
    assert samples == sorted(samples) and samples[0] > 0
    assert all(e["search_seconds"] >= 0 for e in events)
    best = float("-inf")
    for score, offer in zip(events[::2], events[1::2], strict=True):
        best = max(best, score["val_top1"])
        assert offer["candidates"] == 1 and offer["val_top1"] == pytest.approx(best)
    assert read_anytime(tmp_path / "none") == []


def test_the_board_draws_anytime_curves_from_the_trials(tmp_path: Path, cache_dir: Path) -> None:
    """Two seeds of ``random`` (three scored samples each): the board's anytime figure is
    written, and each seed's best-so-far curve never falls."""
    import numpy as np

    from benchmark.report.plot_anytime import best_so_far, read_anytime_events

    options = json.dumps({"random": {"num_samples": 3, "top_k": 1}})
    argv = ["run", "--methods", "random", "--space", "resnet20", "--preset", str(TINY),
            "--executor", "serial", "--out", str(tmp_path), "--run-id", "any", "--seeds",
            "0,1", "--cache-dir", str(cache_dir), "--method-options", options]  # fmt: skip
    assert main(argv) == 0
    run = tmp_path / "runs" / "any"
    (figure,) = run.glob("anytime_*.png")
    assert figure.stat().st_size > 1000 and "bitops-0.3" in figure.name
    assert figure.name in (run / "leaderboard.html").read_text()
    events = read_anytime_events([tmp_path])
    assert set(events["seed"]) == {0, 1} and set(events["event"]) == {"score", "offer"}
    grid = np.geomspace(1, events["samples"].max() * 2, 20)
    for _, trial in events.groupby("trial_key"):
        curve = best_so_far(trial, grid)
        known = curve[np.isfinite(curve)]
        assert known.size and (np.diff(known) >= 0).all() and np.isnan(curve[0])
