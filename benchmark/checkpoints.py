"""Atomic, verified checkpoint files and the on-disk cache of FP checkpoints.

Every write goes to a temporary file in the same folder and is renamed into place,
so a reader never sees half a file. A cached checkpoint carries a sidecar
``<file>.json`` with its config and SHA-256; a file whose hash does not match is
treated as missing (and rebuilt), never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def default_cache_dir() -> Path:
    """``$MPQBENCH_CACHE`` or ``~/.cache/mpqbench``."""
    return Path(os.environ.get("MPQBENCH_CACHE", Path.home() / ".cache" / "mpqbench"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable config (16 hex digits)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_verified(path: Path, payload: Any, config: dict[str, Any]) -> None:
    """``torch.save`` atomically, with a sidecar holding the config and the file's SHA-256."""
    import io

    buffer = io.BytesIO()
    torch.save(payload, buffer)
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
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - any unreadable cache entry is rebuilt
        return None


def cached(
    cache_dir: Path, kind: str, config: dict[str, Any], build: Callable[[], Any]
) -> tuple[Any, bool]:
    """Load ``<cache_dir>/<kind>-<hash(config)>.pt`` or build, save and return it.

    Returns ``(payload, was_cached)``.
    """
    path = Path(cache_dir) / f"{kind}-{config_hash(config)}.pt"
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


@contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock (``fcntl.flock``) on ``path`` for the block.

    The lock is released when the block ends or the process dies (``kill -9`` included),
    so a stale lock file never blocks anyone. With ``blocking=False`` a lock held by
    another process raises :class:`LockedError` at once. On systems without ``fcntl``
    the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle.fileno(), flags)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LockedError(f"{path} is locked by {holder}") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class LockedError(RuntimeError):
    """A non-blocking :func:`file_lock` found the lock held by another process."""
