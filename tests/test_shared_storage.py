"""Shared storage on a cluster: the local-storage warning and a trial on a node that does
not see the driver's folders (no Ray needed: the trial runs in this process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.harness import shared_storage
from benchmark.harness.spec import TrialSpec
from benchmark.harness.trial import run_trial

TINY = str(Path(__file__).parent / "tiny.toml")


def test_file_system_of_a_folder_and_the_warning(tmp_path: Path) -> None:
    mount, kind = shared_storage.file_system(tmp_path)
    assert mount and kind  # /proc/mounts names it
    warning = shared_storage.local_storage_warning(
        {"--out": tmp_path, "--cache-dir": tmp_path / "c"}
    )
    if kind in shared_storage.LOCAL_FILE_SYSTEMS:
        assert warning is not None and warning.count("\n") == 0
        assert "--out" in warning and "--cache-dir" in warning
    else:  # pragma: no cover - a test folder on network storage
        assert warning is None


def test_network_file_system_is_not_warned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_storage, "file_system", lambda path: ("/shared", "nfs4"))
    assert shared_storage.local_storage_warning({"--out": "/shared/results"}) is None


def test_markers_written_seen_and_removed(tmp_path: Path) -> None:
    folders = {"--out": str(tmp_path / "out"), "--cache-dir": str(tmp_path / "cache")}
    shared_storage.leave_markers(folders, "r1")
    shared_storage.check_visible(folders, "r1")  # the driver's node sees them
    shared_storage.remove_markers(folders, "r1")
    with pytest.raises(shared_storage.StorageNotShared, match="cannot see --out"):
        shared_storage.check_visible(folders, "r1")


def test_trial_that_cannot_see_the_cache_fails_at_once(tmp_path: Path) -> None:
    """A trial on a node without the driver's --cache-dir: ``failed`` with a line saying
    so, before it loads data or waits on the FP cache's lock."""
    out, cache = tmp_path / "out", tmp_path / "cache-on-another-node"
    shared_storage.leave_markers({"--out": str(out)}, "r")  # --out is shared, the cache is not
    spec = TrialSpec(
        run_id="r",
        method="uniform",
        task={"space": "resnet20", "dataset": "digits", "preset": TINY,
              "constraint": "bitops<=0.3", "seed": 0},
        run_dir=str(out / "runs" / "r"),
        cache_dir=str(cache),
        shared_folders={"--out": str(out), "--cache-dir": str(cache)},
    )  # fmt: skip
    rows = run_trial(spec)
    assert [r["status"] for r in rows] == ["failed"]
    assert "cannot see --cache-dir" in rows[0]["error"]
    assert not cache.exists()  # nothing built on the unshared folder
