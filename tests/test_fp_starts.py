"""scripts/fp_starts.py: FP starts kept beside a results folder and restored into a cache."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fp_starts.py"


def _module():
    spec = importlib.util.spec_from_file_location("fp_starts_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _start(folder: Path, name: str, dataset: str, payload: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(payload)
    meta = {"config": {"dataset": dataset}, "sha256": payload.hex()}
    path.with_suffix(".pt.json").write_text(json.dumps(meta))
    return path


def test_keep_then_restore_round_trip(tmp_path: Path) -> None:
    m = _module()
    cache, kept = tmp_path / "cache", tmp_path / "out" / "fp-starts"
    _start(cache, "supernet-fp-aa.pt", "fashion-mnist", b"a")
    _start(cache, "fp-bb.pt", "digits", b"b")
    (cache / "supernet-fp-aa.pt.lock").write_text("1")
    assert m.keep(kept, "fashion-mnist", cache) == ["supernet-fp-aa.pt"]
    assert m.keep(kept, "fashion-mnist", cache) == []  # already kept
    assert sorted(p.name for p in kept.iterdir()) == ["supernet-fp-aa.pt", "supernet-fp-aa.pt.json"]
    empty = tmp_path / "empty-cache"
    assert m.restore(kept, empty) == ["supernet-fp-aa.pt"]
    assert (empty / "supernet-fp-aa.pt").read_bytes() == b"a"
    assert m.restore(kept, empty) == []


def test_restore_refuses_another_build_under_the_same_key(tmp_path: Path) -> None:
    m = _module()
    kept, cache = tmp_path / "kept", tmp_path / "cache"
    _start(kept, "fp-cc.pt", "fashion-mnist", b"one")
    _start(cache, "fp-cc.pt", "fashion-mnist", b"two")
    with pytest.raises(ValueError, match="the cache holds another build of fp-cc.pt"):
        m.restore(kept, cache)
    assert (cache / "fp-cc.pt").read_bytes() == b"two"  # nothing overwritten
    assert m.keep_file(tmp_path / "missing.pt", kept) is False
