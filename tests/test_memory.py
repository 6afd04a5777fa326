"""A reused worker gives its memory back between trials (issue 36)."""

from __future__ import annotations

import sys

import pytest
import torch

from benchmark.harness import executors
from benchmark.harness.memory import give_back_memory


def _resident_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_small_tensors_are_returned_to_the_os() -> None:
    """Many small tensors (below glibc's mmap threshold: they live on the heap), every
    other one freed, then the rest: without a trim the heap keeps most of those pages."""
    give_back_memory()
    before = _resident_kib()
    blocks = [torch.ones(16_000) for _ in range(8_000)]  # ~64 KB each, ~500 MB in all
    del blocks[::2]
    del blocks
    assert give_back_memory() is True
    after = _resident_kib()
    assert after - before < 100 * 1024, f"{(after - before) / 1024:.0f} MiB kept"


def test_the_serial_executor_gives_memory_back_after_each_trial(monkeypatch) -> None:
    calls: list[str] = []

    class Announcer:
        def __init__(self, *args) -> None: ...
        def started(self, spec) -> None: ...
        def finished(self, spec, rows) -> None: ...

    class Store:
        def add(self, rows) -> None:
            calls.append("store")

    monkeypatch.setattr(executors, "_Announcer", Announcer)
    monkeypatch.setattr(executors, "give_back_memory", lambda: calls.append("trim") or True)
    monkeypatch.setattr(executors, "run_trial", lambda spec, events=None: [{"trial": spec}])
    executors.run_serial(["a", "b"], Store(), progress=lambda line: None)
    assert calls == ["trim", "store", "trim", "store"]
