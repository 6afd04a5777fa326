"""A file someone else could write runs no code when mpqbench reads it: the FP cache and
the trials' search checkpoints load tensors and plain data only (``weights_only=True``);
a checkpoint that could not be read back that way is refused when it is saved."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.arena.cache import cached, load_verified, save_verified
from benchmark.arena.files import config_hash
from benchmark.arena.policy import LayerBits
from benchmark.arena.protocol import Candidate
from benchmark.arena.spaces import get_space


class _Planted:
    """What an attacker pickles: unpickling it would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant(path: Path, marker: Path, config: dict) -> None:
    """A malicious ``.pt`` file with a matching SHA-256 sidecar (whoever writes one can
    write both)."""
    buffer = io.BytesIO()
    torch.save({"state": _Planted(marker), "spent": {"samples": 0, "seconds": 0.0}}, buffer)
    path.write_bytes(buffer.getvalue())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sidecar = path.with_suffix(path.suffix + ".json")
    sidecar.write_text(json.dumps({"config": config, "sha256": digest}))


def test_a_planted_checkpoint_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    path = tmp_path / "search_checkpoint.pt"
    _plant(path, marker, {"task": {}})
    assert load_verified(path) is None  # unreadable as plain data: treated as missing
    assert not marker.exists()


def test_a_planted_cache_entry_runs_no_code_and_is_rebuilt(tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    config = {"kind": "fp", "seed": 0}
    _plant(tmp_path / f"fp-{config_hash(config)}.pt", marker, config)
    payload, was_cached = cached(tmp_path, "fp", config, lambda: {"w": torch.ones(2)})
    assert not was_cached and torch.equal(payload["w"], torch.ones(2))
    assert not marker.exists()
    assert cached(tmp_path, "fp", config, lambda: None)[1]  # the rebuilt entry is used


def test_a_checkpoint_with_objects_is_refused_when_saved(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="tensors and plain data.*numpy"):
        save_verified(tmp_path / "x.pt", {"replay": np.zeros(3)}, {})
    assert not (tmp_path / "x.pt").exists()
    save_verified(tmp_path / "y.pt", {"replay": torch.zeros(3), "n": 1, "log": ["a"]}, {})
    assert torch.equal(load_verified(tmp_path / "y.pt")["replay"], torch.zeros(3))


def test_a_candidate_round_trips_through_plain_data() -> None:
    space = get_space("mbv3-cifar")
    arch = space.min_arch()
    policy = {n: LayerBits(3, 4) for n in space.searchable_layers(arch)}
    quant_config = __import__("methods.qfa", fromlist=["QFA"]).QFA.quant()
    candidate = Candidate(
        policy, arch, label="W3A4", weights={"w": torch.arange(3.0)}, quant=quant_config,
        meta={"val_top1": np.float64(91.5), "steps": [np.int64(3)]}, fixed={"stem": 8},
    )  # fmt: skip
    state = candidate.to_state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    back = Candidate.from_state(torch.load(buffer, weights_only=True), space)
    assert back.policy == policy and space.validate_arch(back.arch) == arch
    assert back.quant == quant_config and back.fixed == {"stem": 8} and back.label == "W3A4"
    assert back.meta == {"val_top1": 91.5, "steps": [3]} and torch.equal(
        back.weights["w"], torch.arange(3.0)
    )
