"""File safety: atomic writes, advisory locks and stable config hashes.

Every write goes to a temporary file in the same folder and is renamed into place,
so a reader never sees half a file. Used by the FP cache, the method checkpoints and
the harness's run store.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def file_mode() -> int:
    """The mode a new file gets under this process's umask (0644 under the usual 022):
    what ``open()`` would give, not the 0600 of ``mkstemp``. Result folders are shared on
    clusters and committed, so other users must be able to read them."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """This process's umask, read without changing it where the OS allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere reading it means setting it: set it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``; the file gets
    :func:`file_mode` (the umask's), as a plain ``open()`` would give it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
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


def loads_json_unique(text: str) -> Any:
    """``json.loads`` that refuses an object with a key twice (plain ``json.loads`` keeps the
    last one silently): ``ValueError`` naming the key."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"the key {key!r} appears twice in one object: keep one")
            seen[key] = value
        return seen

    return json.loads(text, object_pairs_hook=unique)
