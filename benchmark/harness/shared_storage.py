"""Shared storage on a cluster: a multi-node run needs ``--out`` and ``--cache-dir`` on
storage every node sees (the trials write their outboxes under ``--out``; the FP
checkpoint one trial builds is read by the others from ``--cache-dir``).

Two checks: the driver warns once when either path lies on a local file system, and
before a trial touches the FP cache it checks that it sees a marker the driver left in
each folder; a node that does not fails the trial at once with a line that says so,
instead of building a private copy or waiting on a lock no other node sees.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from benchmark.arena.files import atomic_write_text

LOCAL_FILE_SYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "vfat",
     "exfat", "ntfs", "ramfs", "squashfs", "apfs", "hfs"}
)  # fmt: skip
"""File system types that only their own machine sees (other types are not warned of)."""

MARKER_FOLDER = ".mpqbench-runs"
"""Where the driver leaves a marker per run (in ``--out`` and ``--cache-dir``)."""


class StorageNotShared(RuntimeError):
    """This node does not see a folder the driver wrote to (one actionable line)."""


def file_system(path: str | Path) -> tuple[str, str]:
    """``(mount point, type)`` of the file system holding ``path`` (Linux ``/proc/mounts``;
    ``("", "")`` where it cannot be told)."""
    target = Path(path).expanduser().resolve()
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "", ""
    best = ("", "")
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = target == Path(mount) or Path(mount) in target.parents
        if inside and len(mount) >= len(best[0]):
            best = (mount, fields[2])
    return best


def local_storage_warning(folders: Mapping[str, str | Path]) -> str | None:
    """One warning line naming the ``{flag: folder}`` that lie on a local file system, or
    ``None`` when none does (for a run that joins a cluster)."""
    local = []
    for flag, folder in folders.items():
        mount, kind = file_system(folder)
        if kind in LOCAL_FILE_SYSTEMS:
            local.append(f"{flag} {folder} ({kind} at {mount})")
    if not local:
        return None
    return (
        f"warning: {' and '.join(local)} look local to this machine; on a multi-node cluster "
        "every node must see them (e.g. an NFS mount), or the trials of other nodes fail "
        "with 'cannot see'"
    )


def marker(folder: str | Path, run_id: str) -> Path:
    """The marker of run ``run_id`` in ``folder``."""
    return Path(folder) / MARKER_FOLDER / run_id


def leave_markers(folders: Mapping[str, str | Path], run_id: str) -> None:
    """Write run ``run_id``'s marker in each folder (the driver, before the trials start)."""
    for folder in folders.values():
        atomic_write_text(marker(folder, run_id), socket.gethostname())


def remove_markers(folders: Mapping[str, str | Path], run_id: str) -> None:
    """Remove the markers :func:`leave_markers` wrote (best effort)."""
    for folder in folders.values():
        try:
            marker(folder, run_id).unlink()
        except OSError:
            pass


def check_visible(folders: Mapping[str, str | Path], run_id: str) -> None:
    """Each folder's marker of ``run_id`` is there (a trial, before it uses them).

    Raises:
        StorageNotShared: one is missing: this node does not share the driver's storage.
    """
    for flag, folder in folders.items():
        path = marker(folder, run_id)
        if not os.path.exists(path):
            raise StorageNotShared(
                f"this node ({socket.gethostname()}) cannot see {flag} {folder} as the "
                f"driver wrote it (no {path}): on a cluster, --out and --cache-dir must be "
                "on storage every node sees (e.g. an NFS mount)"
            )
