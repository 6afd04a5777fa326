"""scripts/project_reference.py: the reference run's projection from recorded trial times."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "project_reference.py"


def _module():
    spec = importlib.util.spec_from_file_location("project_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_makespan_places_longest_first() -> None:
    m = _module()
    assert m.makespan([3.0, 3.0, 2.0, 2.0, 2.0], 2) == 7.0  # LPT: {3,2,2}, {3,2}
    assert m.makespan([5.0, 1.0], 1) == 6.0
    assert m.makespan([], 2) == 0.0
    with pytest.raises(ValueError):
        m.makespan([1.0], 0)


def test_plan_counts_every_trial_and_only_unbuilt_fp() -> None:
    m = _module()
    seconds = {("qfa", "resnet20"): 100.0, ("dnas", "resnet20"): 50.0}
    jobs = m.plan_jobs(
        ["qfa", "dnas[paper]"],
        ["resnet20"],
        [0, 1, 2],
        ["bitops<=0.2", "bitops<=0.3"],
        seconds,
        {"resnet20": 10.0},
        {0},
    )
    trials = [j for j in jobs if j.kind == "trial"]
    assert len(trials) == 2 * 3 * 2
    assert {j.seconds_2threads for j in trials if j.method == "dnas[paper]"} == {50.0}
    assert sorted(j.seed for j in jobs if j.kind == "fp") == [1, 2]


def test_projection_scales_one_thread_trials_by_the_thread_gain() -> None:
    m = _module()
    jobs = [m.Job("trial", "qfa", "resnet20", s, 100.0) for s in range(4)]
    one = m.project(jobs, cpus=2, cpus_per_trial=1, thread_gain=1.25)
    two = m.project(jobs, cpus=2, cpus_per_trial=2, thread_gain=1.25)
    assert two["wall_hours"] == round(400 / 3600, 2)
    assert one["wall_hours"] == round(2 * (100 * 2 / 1.25) / 3600, 2)  # two at a time
    assert one["share_by_method"] == {"qfa": 1.0}


def test_cli_projects_the_recorded_figures(tmp_path: Path) -> None:
    trials = tmp_path / "trials.json"
    figures = {
        f"{m}/{s}": {"trial_seconds": 360.0}
        for m in ("oqat", "qfa")
        for s in ("resnet20", "mbv3-cifar")
    }
    trials.write_text(json.dumps({"figures": figures}))
    cmd = [sys.executable, str(SCRIPT), "--trials", str(trials), "--uniform-run", str(tmp_path)]
    done = subprocess.run(
        [*cmd, "--methods", "oqat,qfa", "--seeds", "0", "--limits", "bitops<=0.3", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["trials"] == 4 and result["fp_builds"] == 0
    assert result["wall_hours"] == pytest.approx(2 * 360 * 2 / 1.12 / 3600, abs=0.01)
    bad = subprocess.run([*cmd, "--methods", "haq"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "no recorded trial time for haq/mbv3-cifar" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_uniform_retrains_only_the_bit_widths_under_the_limit() -> None:
    m = _module()
    uniform = {"resnet20": [(1.0, 40.0), (0.258, 30.0), (0.15, 20.0), (0.073, 10.0)]}
    seconds = {("uniform", "resnet20"): 100.0, ("qfa", "resnet20"): 7.0}
    assert m.seconds_at_limit("uniform", "resnet20", "bitops<=0.2", seconds, uniform) == 30.0
    assert m.seconds_at_limit("uniform", "resnet20", "bitops<=0.3", seconds, uniform) == 60.0
    assert m.seconds_at_limit("uniform", "resnet20", "size<=0.3", seconds, uniform) == 100.0
    assert m.seconds_at_limit("qfa", "resnet20", "bitops<=0.2", seconds, uniform) == 7.0
    assert m.limit_ratio("bitops<=0.25") == 0.25 and m.limit_ratio("size<=0.5") is None
