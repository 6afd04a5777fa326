"""Hardening: a run's recipe fixed by content, method preset sections, exact constraint
text, failed writes (a full disk, under Ray too) and the modes of the files a run writes.

The bad inputs (presets off the schema, damaged run state, duplicate constraints, timers
too long) are rows of tests/test_bad_input.py; these are the cases that need a run.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

import benchmark.harness.records as records
from benchmark.arena.presets import Preset, PresetError, Recipe, list_presets, load_preset
from benchmark.arena.protocol import Constraint
from benchmark.arena.spaces import get_space
from benchmark.cli import main
from benchmark.cli.commands import _write_leaderboard
from benchmark.harness.spec import TrialSpec
from benchmark.harness.trial import run_trial

HERE = Path(__file__).parent
TINY = HERE / "tiny.toml"
PLUGINS = str(HERE / "plugins")


@pytest.fixture()
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(PLUGINS)


@pytest.fixture()
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _run(out: Path, run_id: str, preset: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--space",
        "resnet20",
        "--preset",
        str(preset),
        "--constraint",
        "bitops<=0.2",
        "--executor",
        "serial",
        "--out",
        str(out),
        "--run-id",
        run_id,
        *extra,
    ]


def _records(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "records.parquet")


# --- presets ---------------------------------------------------------------------------
def test_every_shipped_preset_matches_the_schema_and_round_trips() -> None:
    for name in list_presets():
        preset = load_preset(name)
        assert Preset.from_dict(preset.to_dict()) == preset
        assert len(preset.recipe_hash) == 16


def test_a_recipe_built_in_code_is_validated_too() -> None:
    with pytest.raises(ValidationError):
        Recipe(epochs=1, batch_size=0, lr=0.1)
    with pytest.raises(ValidationError):
        Recipe(epochs=1, batch_size=8, lr=float("nan"))


def test_the_recipe_hash_follows_content_not_name() -> None:
    tiny = load_preset(str(TINY))
    renamed = Preset.from_dict({**tiny.to_dict(), "name": "other", "description": "x"})
    assert renamed.recipe_hash == tiny.recipe_hash
    data = tiny.to_dict()
    data["finetune"]["lr"] = 0.5
    assert Preset.from_dict(data).recipe_hash != tiny.recipe_hash


def test_a_method_reads_its_own_preset_section(
    tmp_path: Path, plugins: None, capsys: pytest.CaptureFixture
) -> None:
    from methods import check_preset_sections, get_method

    cls = get_method("mpqbench_fake:Sectioned")
    preset = tmp_path / "sectioned.toml"
    preset.write_text(TINY.read_text() + "\n[methods.sectioned]\nbits = 2\n")
    loaded = load_preset(str(preset))
    check_preset_sections(loaded, [cls])
    assert cls.configure(loaded).bits == 2
    assert cls.configure(load_preset(str(TINY))).bits == 8  # the config class's default
    assert cls.configure(loaded, {"bits": 4}).bits == 4  # an option overrides the section
    bad = Preset.from_dict({**loaded.to_dict(), "methods": {"sectioned": {"bits": 3.5}}})
    with pytest.raises(PresetError, match=r"\[methods.sectioned\] bits = 3.5"):
        check_preset_sections(bad, [cls])

    argv = _run(tmp_path / "out", "sect", preset, "--methods", "mpqbench_fake:Sectioned")
    assert main(argv) == 0, capsys.readouterr().err
    rows = _records(tmp_path / "out" / "runs" / "sect")
    assert list(rows["candidate"]) == ["w2"]  # the bits its section gave


# --- the recipe is fixed by content ----------------------------------------------------
def test_resume_refuses_an_edited_preset_and_files_are_readable_by_others(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture, umask_022: None
) -> None:
    preset = tmp_path / "mine.toml"
    preset.write_text(TINY.read_text())
    out = tmp_path / "out"
    assert main(_run(out, "r", preset, "--methods", "uniform")) == 0
    run_dir = out / "runs" / "r"
    before = _records(run_dir)
    recipe = load_preset(str(preset)).recipe_hash
    assert all(key.endswith(f"|recipe={recipe}") for key in before["trial_key"])
    meta = records_metadata(run_dir)
    assert meta["preset_hash"] == recipe
    capsys.readouterr()

    preset.write_text(preset.read_text().replace("lr = 0.01", "lr = 0.5"))
    assert main(["run", "--resume", "r", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "the recipe changed" in err, err
    pd.testing.assert_frame_equal(_records(run_dir), before)

    preset.write_text(TINY.read_text())  # restored: the run resumes (nothing left to do)
    assert main(["run", "--resume", "r", "--out", str(out), "--executor", "serial"]) == 0
    assert "0 of 1 trial(s) to run" in capsys.readouterr().err

    # every file the run wrote (records, metadata, leaderboards, plots, outbox, FP cache)
    written = [out, *out.rglob("*"), *cache_dir.rglob("*")]  # (pytest made the cache root)
    assert len(written) > 10
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (oct(mode), path)


def records_metadata(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "metadata.json").read_text())


def test_a_worker_refuses_a_preset_changed_after_the_run_started(tmp_path: Path) -> None:
    task = {
        "space": "resnet20",
        "dataset": "digits",
        "preset": str(TINY),
        "constraint": "bitops<=0.2",
        "seed": 0,
    }
    spec = TrialSpec("r", "uniform", task, str(tmp_path), preset_hash="0123456789abcdef")
    rows = run_trial(spec)
    assert [r["status"] for r in rows] == ["failed"]
    assert "changed after the run started" in rows[0]["error"]


# --- constraints keep their exact limit ------------------------------------------------
def test_a_limit_at_the_cheapest_cost_stays_exact_and_feasible() -> None:
    space = get_space("resnet20")
    ratio = space.cheapest_cost().bitops / space.reference().bitops_w8a8
    text = f"bitops<={ratio!r}"
    constraint = Constraint.parse(text)
    assert constraint.text == text and Constraint.parse(constraint.text) == constraint
    w2a2 = space.cost(space.uniform_policy(2, 2))
    assert constraint.satisfied(w2a2, space.reference())
    assert Constraint.parse("bitops<=0.07274191").text == "bitops<=0.07274191"


# --- failed writes ---------------------------------------------------------------------
def _full_disk_after(monkeypatch: pytest.MonkeyPatch, name: str, good_calls: int) -> None:
    """``records.<name>`` fails with ENOSPC after ``good_calls`` calls."""
    real = getattr(records, name)
    calls = {"n": 0}

    def write(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] > good_calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(*args, **kwargs)

    monkeypatch.setattr(records, name, write)


def test_a_failed_first_write_leaves_no_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _full_disk_after(monkeypatch, "atomic_write_text", 0)  # metadata.json
    out = tmp_path / "out"
    assert main(_run(out, "r", TINY, "--methods", "uniform")) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "No space left on device" in err, err
    assert not (out / "runs" / "r").exists()


def test_a_full_disk_under_ray_stops_the_run_and_keeps_its_rows(
    tmp_path: Path,
    ray_session: None,
    plugins: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    umask_022: None,
) -> None:
    out = tmp_path / "out"
    methods = "mpqbench_fake:AllW4,uniform"
    argv = [*_run(out, "full", TINY, "--methods", methods)]
    argv[argv.index("serial")] = "ray"
    _full_disk_after(monkeypatch, "atomic_write_bytes", 1)  # the first trial's parquet only
    assert main(argv) == 1
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err + captured.out, err
    assert "error: cannot write to" in err and "No space left on device" in err, err
    assert "--resume full" in err, err
    plain = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in err.splitlines()]
    other = [line for line in plain if not line.startswith(("[", "run full: ", "starting Ray"))]
    assert len(other) == 2 and other[1].startswith("stopped: "), err  # error, then the hint
    run_dir = out / "runs" / "full"
    first = _records(run_dir)
    assert first["trial_key"].nunique() == 1
    monkeypatch.undo()
    monkeypatch.syspath_prepend(PLUGINS)
    assert main(["run", "--resume", "full", "--out", str(out), "--executor", "serial"]) == 0
    rows = _records(run_dir)
    assert rows["trial_key"].nunique() == 2
    kept = rows[rows["trial_key"] == first["trial_key"].iloc[0]]
    assert len(kept) == len(first)
    for path in run_dir.rglob("*"):  # Ray's files in the run folder too
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (oct(mode), path)


def test_the_leaderboard_set_is_written_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import benchmark.report.plots as plots

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    row = {
        "run_id": "r", "trial_key": "k", "method": "uniform", "space": "resnet20",
        "dataset": "digits", "preset": "tiny", "seed": 0, "constraint": "bitops<=0.3",
        "status": "ok", "track": "retrain", "candidate": "w4", "feasible": True,
        "top1_val": 90.0, "top1_test": 89.0, "bitops_ratio_w8a8": 0.25,
        "search_device_hours": 0.0,
    }  # fmt: skip
    records.rows_to_frame([row]).to_parquet(run_dir / "records.parquet", index=False)

    def no_space(*args: object, **kwargs: object) -> list[Path]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(plots, "write_plots", no_space)
    with pytest.raises(OSError):
        _write_leaderboard([run_dir], run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == ["records.parquet"]
    monkeypatch.undo()
    written = _write_leaderboard([run_dir], run_dir)
    assert {p.name for p in written} >= {"leaderboard.md", "leaderboard.csv", "leaderboard.html"}
    assert all(p.parent == run_dir and p.exists() for p in written)


# --- inputs checked before the run -----------------------------------------------------
def test_an_unwritable_cache_from_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    monkeypatch.setenv("MPQBENCH_CACHE", str(blocker / "cache"))
    out = tmp_path / "out"
    assert main(_run(out, "r", TINY, "--methods", "uniform")) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "MPQBENCH_CACHE" in err, err
    assert not out.exists()


def test_ray_failing_on_its_own_files_ends_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A full disk early in a Ray run: Ray's Tuner fails reading back its own experiment
    state (``EOFError: Ran out of input``). One line naming Ray's folder, no traceback."""
    from ray import tune

    def fit(self: object) -> None:
        raise EOFError("Ran out of input")

    monkeypatch.setattr(tune.Tuner, "fit", fit)
    out = tmp_path / "out"
    argv = _run(out, "r", TINY, "--methods", "uniform")
    argv[argv.index("serial")] = "ray"
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    (line,) = [ln for ln in captured.err.splitlines() if "error:" in ln]
    assert "Ray could not write or read back its files" in line and "EOFError" in line
    assert "a full disk?" in line and "free some space and run it again" in line
