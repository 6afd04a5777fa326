"""Real Ray runs on this machine, through the CLI in a subprocess: a default local run
(loopback only, token authentication kept), and a two-node cluster (a head and a worker
node, each with 1 CPU and its own temp dir) joined with ``--address``: trials on both
nodes, one shared FP checkpoint, a worker node lost in the middle of a trial.

The trials use ``tests/plugins/mpqbench_gate.py:Gated``, which says where it started and
waits for the test (a barrier of started trials, a gate file), so nothing here depends on
timing. Each test stops only the processes it started.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent
TINY = str(HERE / "tiny.toml")
GATED = f"{HERE / 'plugins' / 'mpqbench_gate.py'}:Gated"
WAIT_S = 180.0
"""Longest a test waits for a run or a trial (seconds): a safety net, not a measurement."""

sys.path.insert(0, str(ROOT / "scripts"))
from ray_ports import descendants, listening_sockets  # noqa: E402


def _cli(out: Path, cache: Path, folder: Path, *extra: str, options: dict) -> list[str]:
    return [
        sys.executable, "-m", "benchmark", "run", "--methods", GATED, "--space", "resnet20",
        "--preset", TINY, "--out", str(out), "--cache-dir", str(cache), "--run-id", "r",
        "--no-leaderboard", "--quiet",
        "--method-options", json.dumps({"gated": {"folder": str(folder), **options}}),
        *extra,
    ]  # fmt: skip


def _env(**changes: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _wait_for(condition: object, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():  # type: ignore[operator]
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {WAIT_S:g} s")
        time.sleep(0.1)


def _started(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("started-*.json"))]


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def _unauthenticated_probe(gcs: str, home: Path) -> subprocess.CompletedProcess:
    """Ask the GCS at ``gcs`` for a key as a client without any token."""
    code = (
        "import sys\nfrom ray._raylet import GcsClient\n"
        "GcsClient(address=sys.argv[1]).internal_kv_get(b'k', namespace=None, timeout=10)"
    )
    env = _env(RAY_AUTH_TOKEN=None, RAY_AUTH_TOKEN_PATH=None, RAY_AUTH_MODE=None, HOME=str(home))
    return subprocess.run(
        [sys.executable, "-c", code, gcs], env=env, capture_output=True, text=True, timeout=60
    )


def test_local_run_listens_on_loopback_and_refuses_unauthenticated(tmp_path: Path) -> None:
    """A default local run: every port of its Ray instance is on 127.0.0.0/8 (checked while
    a trial runs) and its GCS refuses a client without the token."""
    folder = tmp_path / "gate"
    proc = subprocess.Popen(
        _cli(tmp_path / "out", tmp_path / "cache", folder, options={"gate": True}),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _started(folder), "trial start", proc)
        sockets = listening_sockets(descendants(proc.pid))
        names = {name for _, name, _, _ in sockets}
        assert "gcs_server" in names and "raylet" in names, sockets
        outside = [s for s in sockets if not ipaddress.ip_address(s[2]).is_loopback]
        assert not outside, f"Ray listens beyond loopback: {outside}"
        gcs = next(f"{host}:{port}" for _, name, host, port in sockets if name == "gcs_server")
        refused = _unauthenticated_probe(gcs, tmp_path)
        assert refused.returncode != 0
        assert "authenticat" in refused.stderr.lower(), refused.stderr[-2000:]
        (folder / "open").touch()
        code, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err[-3000:]
    rows = pd.read_parquet(tmp_path / "out" / "runs" / "r" / "records.parquet")
    assert set(rows["status"]) == {"ok"} and (rows["node"] != "").all()


# --- a two-node cluster ------------------------------------------------------------------
class TwoNodes:
    """A head and a worker node (1 CPU each, loopback, token auth), started in this process
    by Ray's ``cluster_utils.Cluster`` with temp dirs of their own."""

    def __init__(self, root: Path) -> None:
        from ray.cluster_utils import Cluster

        self.root = root
        common = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={**common, "temp_dir": str(root / "head")},
            shutdown_at_exit=True,
        )
        self.head = self.cluster.head_node
        self.worker = self.cluster.add_node(**common, temp_dir=str(root / "worker"))
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return self.cluster.address

    def raylet_pid(self, node: object) -> int:
        from ray._private import ray_constants

        return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid  # type: ignore[attr-defined]

    def shutdown(self) -> None:
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[TwoNodes]:
    """The cluster, shared by this module's cluster tests; the node-loss test runs last."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # as `ray start` with a token does
    root = Path(tempfile.mkdtemp(prefix="mpqb-ray-"))  # short: Ray's socket paths
    nodes = TwoNodes(root)
    try:
        yield nodes
    finally:
        nodes.shutdown()


CONSTRAINTS = "bitops<=0.3,bitops<=0.4,bitops<=0.5,bitops<=0.6"
"""Four trials of one method on one seed: one FP checkpoint for all."""


def test_two_node_run_uses_both_nodes_and_one_fp_checkpoint(
    two_nodes: TwoNodes, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    folder = tmp_path / "gate"
    argv = _cli(
        shared, shared / "cache", folder, "--address", two_nodes.address,
        "--constraint", CONSTRAINTS, options={"barrier": 2},
    )  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=WAIT_S * 2)
    print(f"two-node run: {time.perf_counter() - started:.1f} s wall")
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "look local" in line]
    assert len(warnings) == 1, done.stderr  # /tmp is local: warned once
    rows = pd.read_parquet(shared / "runs" / "r" / "records.parquet")
    nodes = {two_nodes.head.node_id, two_nodes.worker.node_id}
    assert set(rows["node"]) == nodes  # the barrier held two trials at once, one per node
    assert rows["trial_key"].nunique() == 4 and set(rows["constraint"]) == set(
        CONSTRAINTS.split(",")
    )
    assert not rows.duplicated(["trial_key", "candidate_index", "track"]).any()
    assert set(rows["status"]) == {"ok"} and rows["top1_test"].notna().all()
    per_trial = rows.drop_duplicates("trial_key")
    assert sorted(per_trial["fp_source"]) == ["built", "cache", "cache", "cache"]
    assert len(list((shared / "cache").glob("*.pt"))) == 1  # built once, shared
    assert not list(shared.glob(".mpqbench-runs/*"))  # the driver's markers are gone


def test_token_cluster_without_token_exits_2(two_nodes: TwoNodes, tmp_path: Path) -> None:
    env = _env(RAY_AUTH_TOKEN=None, RAY_AUTH_TOKEN_PATH=None, RAY_AUTH_MODE=None)
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    argv = _cli(tmp_path / "o", tmp_path / "c", tmp_path / "g", options={})
    argv += ["--address", two_nodes.address]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RAY_AUTH_TOKEN" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()


def test_worker_node_lost_mid_trial(two_nodes: TwoNodes, tmp_path: Path) -> None:
    """Kill the worker node's raylet while a trial runs there: that trial is retried on
    the head (or recorded ``crashed``), no finished row is lost, ``--resume`` completes."""
    shared = tmp_path / "shared"
    folder = tmp_path / "gate"
    argv = _cli(
        shared, shared / "cache", folder, "--address", two_nodes.address,
        "--constraint", CONSTRAINTS, options={"barrier": 2, "gate": True},
    )  # fmt: skip
    t0 = time.perf_counter()
    sequence: list[str] = []

    def note(text: str) -> None:
        sequence.append(f"{time.perf_counter() - t0:6.1f} s  {text}")

    proc = subprocess.Popen(
        argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    worker_id = two_nodes.worker.node_id
    try:
        _wait_for(lambda: len(_started(folder)) >= 2, "two trials running", proc)
        on_worker = [m for m in _started(folder) if m["node"] == worker_id]
        assert on_worker, _started(folder)
        first = on_worker[0]
        note(f"trial {first['constraint']} running on the worker node (pid {first['pid']})")
        pid = two_nodes.raylet_pid(two_nodes.worker)
        os.kill(pid, signal.SIGKILL)
        note(f"killed the worker node's raylet (pid {pid})")
        (folder / "open").touch()
        code, err = _finish(proc)
        note(f"run exited {code}")
    finally:
        if proc.poll() is None:
            proc.kill()
    for mark in _started(folder):
        where = "worker" if mark["node"] == worker_id else "head"
        note(f"  a trial {mark['constraint']} started on the {where} node (pid {mark['pid']})")
    rows = pd.read_parquet(shared / "runs" / "r" / "records.parquet")
    for _, row in rows.drop_duplicates("trial_key").iterrows():
        where = "worker" if row["node"] == worker_id else "head" if row["node"] else "?"
        note(f"  row {row['constraint']}: {row['status']} on the {where} node {row['error'][:80]}")
    print("\n".join(["node-loss sequence:", *sequence]))
    assert code in (0, 1), err[-3000:]
    assert rows["trial_key"].nunique() == 4
    assert not rows.duplicated(["trial_key", "candidate_index", "track"]).any()
    lost = rows[rows["constraint"] == on_worker[0]["constraint"]]
    assert set(lost["status"]) <= {"ok", "crashed"}
    assert set(rows[rows["constraint"] != on_worker[0]["constraint"]]["status"]) == {"ok"}
    resumed = subprocess.run(
        [sys.executable, "-m", "benchmark", "run", "--resume", "r", "--out", str(shared),
         "--address", two_nodes.address, "--no-leaderboard", "--quiet"],
        env=_env(), capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert resumed.returncode in (0, 1), resumed.stderr[-3000:]
    again = pd.read_parquet(shared / "runs" / "r" / "records.parquet")
    assert len(again) == len(rows) and again["trial_key"].nunique() == 4
