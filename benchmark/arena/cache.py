"""Verified checkpoint files and the on-disk cache of FP checkpoints.

A cached checkpoint carries a sidecar ``<file>.json`` with its config and SHA-256; a file
whose hash does not match is treated as missing (and rebuilt), never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmark.arena.files import atomic_write_bytes, atomic_write_text, config_hash, file_lock


def default_cache_dir() -> Path:
    """``$MPQBENCH_CACHE`` or ``~/.cache/mpqbench``."""
    return Path(os.environ.get("MPQBENCH_CACHE", Path.home() / ".cache" / "mpqbench"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_verified(path: Path, payload: Any, config: dict[str, Any]) -> None:
    """``torch.save`` atomically, with a sidecar holding the config and the file's SHA-256.

    Raises ``TypeError`` (one line) for a payload that ``torch.load(weights_only=True)``
    could not read back (anything but tensors, numbers, strings, lists, tuples and dicts):
    files are read that way, so that a planted file runs no code (the SHA-256 beside it
    guards against damage, not against whoever can write both)."""
    import io

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch's UnpicklingError names the object
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = found[1] if found else type(err).__name__
        raise TypeError(
            f"a checkpoint may hold only tensors and plain data (numbers, strings, lists, "
            f"dicts), so that it loads with weights_only=True; this one holds {what}; "
            "convert it (e.g. numpy arrays to tensors, objects to dicts)"
        ) from None
    atomic_write_bytes(path, buffer.getvalue())
    meta = {"config": config, "sha256": _sha256(path)}
    atomic_write_text(path.with_suffix(path.suffix + ".json"), json.dumps(meta, indent=2))


def load_verified(path: Path) -> Any | None:
    """The payload if the file exists and matches its recorded hash, else ``None``."""
    meta_path = path.with_suffix(path.suffix + ".json")
    if not path.exists() or not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("sha256") != _sha256(path):
            return None
        # tensors and plain data only: a planted file cannot run code when it is read
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable cache entry is rebuilt
        return None


def cache_file(cache_dir: Path, kind: str, config: dict[str, Any]) -> Path:
    """Where :func:`cached` keeps the payload of ``config``: ``<cache_dir>/<kind>-<hash>.pt``
    (it may not exist yet)."""
    return Path(cache_dir) / f"{kind}-{config_hash(config)}.pt"


def cached(
    cache_dir: Path, kind: str, config: dict[str, Any], build: Callable[[], Any]
) -> tuple[Any, bool]:
    """Load ``<cache_dir>/<kind>-<hash(config)>.pt`` or build, save and return it.

    Returns ``(payload, was_cached)``.
    """
    path = cache_file(cache_dir, kind, config)
    payload = load_verified(path)
    if payload is not None:
        return payload, True
    # one builder at a time: a concurrent trial waits here and then loads the result
    with file_lock(path.with_suffix(path.suffix + ".lock")):
        payload = load_verified(path)
        if payload is not None:
            return payload, True
        payload = build()
        save_verified(path, payload, config)
    return payload, False
