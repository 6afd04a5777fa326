"""A method the cluster tests hold while it runs: it says where it started, then waits."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from benchmark.arena import Candidate, Context, Method, SearchResult, method_config

WAIT_S = 120.0
"""Longest a gated search waits for its barrier or gate (seconds); then it goes on."""


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return ""


@method_config
class GatedConfig:
    folder: str = ""
    barrier: int = 1
    free: int = 0


class Gated(Method):
    """Writes ``<folder>/started-*.json`` (node, pid, task, CUDA_VISIBLE_DEVICES), waits
    until ``barrier`` trials have started and then, unless it is one of the first ``free``
    trials to start, until ``<folder>/open`` exists (each at most :data:`WAIT_S` seconds),
    then proposes W4A4."""

    name = "gated"
    searches = "bits"

    config_class = GatedConfig

    @property
    def folder(self) -> Path:
        return Path(self.config.folder)

    def _wait(self, done: object) -> None:
        deadline = time.monotonic() + WAIT_S
        while not done() and time.monotonic() < deadline:  # type: ignore[operator]
            time.sleep(0.1)

    def search(self, ctx: Context) -> SearchResult:
        self.folder.mkdir(parents=True, exist_ok=True)
        mark = {
            "node": _node_id(),
            "pid": os.getpid(),
            "constraint": ctx.task.constraint,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "at": time.time(),
        }
        name = f"started-{os.getpid()}-{time.monotonic_ns()}.json"
        (self.folder / f".{name}").write_text(json.dumps(mark))
        (self.folder / f".{name}").rename(self.folder / name)
        started = lambda: len(list(self.folder.glob("started-*.json")))  # noqa: E731
        gated = started() > self.config.free
        self._wait(lambda: started() >= self.config.barrier)
        if gated:
            self._wait(lambda: (self.folder / "open").exists())
        policy = ctx.space.uniform_policy(4, 4, ctx.space.reference_arch)
        return SearchResult([Candidate(policy, label="all4")])
