"""The TCP ports a local Ray instance listens on, and on which address.

    python scripts/ray_ports.py            # start Ray as `benchmark run` does, list, stop
    python scripts/ray_ports.py --legacy   # the same with the old settings (auth disabled,
                                           # Ray's default node address), for comparison

It reads ``/proc`` (Linux): the listening sockets of the driver's descendant processes
(GCS, raylet, workers, agents). ``listening_sockets`` is also what the tests use.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def _decode(address: str, v6: bool) -> tuple[str, int]:
    """``("127.0.0.1", 6379)`` from ``/proc/net/tcp``'s ``0100007F:18EB``."""
    import ipaddress

    host, port = address.split(":")
    raw = bytes.fromhex(host)
    if v6:  # four little-endian 32-bit words
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        ip = ipaddress.IPv6Address(raw)
        text = str(ip.ipv4_mapped or ip)
    else:
        text = str(ipaddress.IPv4Address(raw[::-1]))
    return text, int(port, 16)


def _listening_inodes() -> dict[int, tuple[str, int]]:
    """Socket inode → (address, port) of every listening TCP socket on the machine."""
    found: dict[int, tuple[str, int]] = {}
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN:
                found[int(fields[9])] = _decode(fields[1], v6)
    return found


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (by ``/proc/<pid>/stat``'s parent field)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def process_name(pid: int) -> str:
    """A short name of ``pid``: its executable, or the Python module it runs."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    for word in words[:3]:
        if word.endswith(".py"):
            return Path(word).stem
    return Path(words[0]).name if words else "?"


def listening_sockets(pids: Iterable[int]) -> list[tuple[int, str, str, int]]:
    """``(pid, process name, address, port)`` of each TCP socket ``pids`` listen on."""
    inodes = _listening_inodes()
    out = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes:
                    out.append((pid, process_name(pid), *inodes[inode]))
    return sorted(set(out), key=lambda s: (s[1], s[3]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legacy", action="store_true", help="auth disabled, default address")
    args = parser.parse_args(argv)
    import ray

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.legacy:
        os.environ["RAY_AUTH_MODE"] = "disabled"
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    else:
        from benchmark.harness.ray_session import local_init_options

        ray.init(num_cpus=1, log_to_driver=False, **local_init_options())

    @ray.remote
    def ping() -> int:  # a worker process, so that its ports are listed too
        return os.getpid()

    ray.get(ping.remote())
    for pid, name, host, port in listening_sockets(descendants(os.getpid())):
        print(f"{name:28s} pid {pid:7d} {host}:{port}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
