"""scripts/reference.py (run by scripts/reference.sh): the Fashion-MNIST reference run's
pieces, their state, their commands, the projection and one real piece at the tiny preset."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reference.py"


def _module():
    spec = importlib.util.spec_from_file_location("reference_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def _default_pieces(m):
    return m.plan_pieces(list(m.SPACES), list(m.LIMITS), [0, 1, 2], list(m.METHODS))


def test_plan_has_every_method_and_the_variants_as_entries() -> None:
    m = _module()
    pieces = _default_pieces(m)
    assert len(pieces) == 2 * 2 * 3
    assert len({p.name for p in pieces}) == len(pieces)
    assert [p.seed for p in pieces] == sorted(p.seed for p in pieces)  # seed-major
    entries = [e for run in pieces[0].runs for e in run.entries()]
    assert sorted(entries) == sorted([*m.METHODS, "dnas[paper]", "oqat[reinit]"])
    main, variants = pieces[0].runs
    assert main.options == {"hawq": {"bits": "space"}, "ompq": {"a_bits": 4}}
    assert variants.run_id == main.run_id + "-variants"
    assert variants.options["dnas"] == {"beta": 0.2, "gamma": 0.6, "label": "paper"}
    # a subset without the variants' methods has no variants run
    only = m.plan_pieces(["resnet20"], ["bitops<=0.3"], [0], ["uniform"])
    assert [r.methods for r in only[0].runs] == [("uniform",)]
    assert only[0].name == "resnet20-bitops0.3-s0"


def _fake_run(folder: Path, planned: list[str], finished: list[str]) -> None:
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"trials": planned}))
    if finished:
        pd.DataFrame({"trial_key": finished}).to_parquet(folder / "records.parquet")


def test_run_and_piece_state(tmp_path: Path) -> None:
    m = _module()
    piece = m.plan_pieces(["resnet20"], ["bitops<=0.3"], [0], ["uniform", "dnas"])[0]
    runs = tmp_path / "runs"
    assert m.piece_state(piece, tmp_path) == "to run"
    _fake_run(runs / piece.runs[0].run_id, ["a", "b"], ["a"])
    assert m.run_state(runs / piece.runs[0].run_id) == "interrupted"
    assert m.piece_state(piece, tmp_path) == "interrupted"
    _fake_run(runs / piece.runs[1].run_id, ["c"], ["c", "c"])
    assert m.run_state(runs / piece.runs[1].run_id) == "done"
    assert m.piece_state(piece, tmp_path) == "interrupted"  # the first run is not
    pd.DataFrame({"trial_key": ["a", "b"]}).to_parquet(
        runs / piece.runs[0].run_id / "records.parquet"
    )
    assert m.piece_state(piece, tmp_path) == "done"


def test_harness_command_new_then_resume(tmp_path: Path) -> None:
    m = _module()
    args = m.parse_args(["--out", str(tmp_path)])
    piece = m.plan_pieces(["mbv3-cifar"], ["bitops<=0.2"], [1], list(m.METHODS))[0]
    main = piece.runs[0]
    command = m.harness_command(piece, main, args)
    line = " ".join(command)
    for part in (
        "--preset fmnist",
        "--space mbv3-cifar",
        "--constraint bitops<=0.2",
        "--seeds 1",
        "--cpus-per-trial 1",
        "--executor ray",
        f"--run-id {main.run_id}",
    ):
        assert part in line
    assert json.loads(command[command.index("--method-options") + 1]) == main.options
    _fake_run(tmp_path / "runs" / main.run_id, ["a"], [])
    assert m.harness_command(piece, main, args)[-2:] == ["--resume", main.run_id]


def test_projection_counts_trials_and_only_unbuilt_fp() -> None:
    m = _module()
    pieces = _default_pieces(m)
    plan = m.projection(pieces, 2, {("mbv3-cifar", 0), ("resnet20", 0)})
    assert plan["trials"] == 12 * 10 and plan["fp_builds"] == 4 and plan["slots"] == 2
    assert set(plan["share_by_method"]) >= {"dnas[paper]", "oqat[reinit]", "fp"}
    fewer = m.projection(pieces[:1], 2, set())
    assert 0 < fewer["wall_hours"] < plan["wall_hours"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--spaces", "vgg"], "unknown space vgg"),
        (["--methods", "hawq,mine"], "--methods takes a subset"),
        (["--seeds", "one"], "--seeds takes integers"),
        (["--limits", "bitops<=abc"], "cannot read constraint 'bitops<=abc'"),
        (["--pieces", "resnet20-bitops0.9-s0"], "no piece resnet20-bitops0.9-s0"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, capsys) -> None:
    m = _module()
    assert m.main([*argv, "--preset", "tiny", "--list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_interrupted_piece_needs_resume(tmp_path: Path, capsys) -> None:
    m = _module()
    argv = ["--preset", "tiny", "--out", str(tmp_path), "--spaces", "resnet20"]
    argv += ["--limits", "bitops<=0.3", "--seeds", "0", "--methods", "uniform"]
    _fake_run(tmp_path / "runs" / "ref-resnet20-bitops0.3-s0", ["a"], [])
    assert m.main(argv) == 2
    err = capsys.readouterr().err
    assert "resnet20-bitops0.3-s0 was interrupted" in err and "--resume" in err


def test_a_tiny_piece_runs_records_its_wall_time_and_is_then_done(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """One real piece (OMPQ on resnet20, the tiny preset, in-process trials): its rows,
    its FP start kept in <out>/fp-starts, its piece.json, and a second call that finds it
    done and runs nothing."""
    m = _module()
    # a cache of its own: the session's may hold this FP start built by a 1-CPU trial,
    # which the reference refuses (its starts are built at 2 threads)
    monkeypatch.setenv("MPQBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["--preset", "tiny", "--out", str(tmp_path), "--spaces", "resnet20"]
    argv += ["--limits", "bitops<=0.3", "--seeds", "0", "--methods", "ompq"]
    argv += ["--executor", "serial", "--no-leaderboard"]
    assert m.main(argv) == 0
    folder = tmp_path / "runs" / "ref-resnet20-bitops0.3-s0"
    rows = pd.read_parquet(folder / "records.parquet")
    assert set(rows["status"]) == {"ok"} and set(rows["method"]) == {"ompq[a_bits=4]"}
    kept = sorted(p.name for p in (tmp_path / "fp-starts").iterdir())  # its FP start
    assert len(kept) == 2 and kept[0].startswith("fp-") and kept[1] == kept[0] + ".json"
    [record] = json.loads((folder / "piece.json").read_text())
    assert record["wall_seconds"] > 0 and len(record["machine_before"]["load_average"]) == 3
    capsys.readouterr()
    assert m.main(argv) == 0
    out = capsys.readouterr().out
    assert "done" in out and "== piece" not in out


def test_an_fp_start_records_its_threads(pretrained) -> None:
    import torch

    assert pretrained.info["threads"] == torch.get_num_threads()


def test_a_cached_fp_start_built_at_another_thread_count_is_refused(monkeypatch, tmp_path) -> None:
    """On a CPU the FP weights' last bits depend on the thread count, so the reference
    refuses a cached start built at another one rather than mix two in one piece."""
    import benchmark.arena.recipes.pretrain as pretrain

    m = _module()
    info = {"cached": True, "val_top1": 90.0, "threads": 1}
    monkeypatch.setattr(pretrain, "fp_starting_point", lambda *a, **k: ({}, info))
    with pytest.raises(ValueError, match="built at 1 thread, the reference's at 2"):
        m.build_fp("resnet20", 0, "tiny", tmp_path)
    info["threads"] = 2
    assert m.build_fp("resnet20", 0, "tiny", tmp_path)["threads"] == 2
