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
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from benchmark.harness.ray_session import WORKER_NICENESS

HERE = Path(__file__).parent
ROOT = HERE.parent
TINY = str(HERE / "tiny.toml")
GATED = f"{HERE / 'plugins' / 'mpqbench_gate.py'}:Gated"
WAIT_S = 600.0
"""Longest a test waits for a run or a trial (seconds): a safety net, not a measurement
(on a busy machine the trials' FP pretraining alone took over 180 s)."""

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
    """What the gated trials wrote when they started, in the order they started."""
    marks = [json.loads(p.read_text()) for p in folder.glob("started-*.json")]
    return sorted(marks, key=lambda m: m["at"])


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


# --- a two-node cluster ------------------------------------------------------------------
@contextmanager
def _ray_address_file_kept() -> Iterator[None]:
    """Restore ``/tmp/ray/ray_current_cluster``, which Ray's ``Cluster`` rewrites: other
    processes' ``ray.init()`` would join this cluster through it."""
    from ray._private.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    before = path.read_bytes() if path.exists() else None
    try:
        yield
    finally:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)


HEALTH_CHECK = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}
"""The head's GCS marks a silent node dead after about 2 s (Ray's default: about 15 s)."""


class TwoNodes:
    """A head and a worker node (1 CPU each, loopback, token auth; the worker also has one
    logical GPU), started in this process by Ray's ``cluster_utils.Cluster`` with temp dirs
    of their own."""

    def __init__(self, root: Path) -> None:
        from ray.cluster_utils import Cluster

        self.root = root
        common = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
        # workers at normal priority, as the README starts cluster nodes: at Ray's default
        # niceness 15 the trials starved beside this machine's other work (342 s, not 26)
        system = {**HEALTH_CHECK, "worker_niceness": WORKER_NICENESS}
        head = {**common, "temp_dir": str(root / "head"), "_system_config": system}
        with _ray_address_file_kept():  # a run of `ray.init()` elsewhere must not join it
            self.cluster = Cluster(initialize_head=True, head_node_args=head, shutdown_at_exit=True)
        self.head = self.cluster.head_node
        # the worker has one logical GPU (this machine has none): for --gpus-per-trial
        self.worker = self.cluster.add_node(**common, num_gpus=1, temp_dir=str(root / "worker"))
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
    from benchmark.harness.ray_session import local_init_options

    local_init_options()  # this machine only: the nodes listen on 127.0.0.1
    root = Path(tempfile.mkdtemp(prefix="mpqb-ray-"))  # short: Ray's socket paths
    nodes = TwoNodes(root)
    try:
        yield nodes
    finally:
        nodes.shutdown()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cluster's "shared storage" (one machine): --out and --cache-dir of the runs."""
    return tmp_path_factory.mktemp("shared")


CONSTRAINTS = "bitops<=0.3,bitops<=0.4,bitops<=0.5,bitops<=0.6"
"""Four trials of one method on one seed: one FP checkpoint for all."""


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


def test_half_a_gpu_per_trial_places_two_trials_on_one_gpu(
    two_nodes: TwoNodes, tmp_path: Path
) -> None:
    """``--gpus-per-trial 0.5``: the cluster's one GPU (on the worker) takes two trials at
    once (each started before the other finished), each with that GPU visible; the rows
    record the device the trial computed on (the CPU here: Ray's GPU is logical and torch
    sees none, so no GPU share is charged)."""
    folder = tmp_path / "gate"
    argv = _cli(
        tmp_path / "out", tmp_path / "cache", folder, "--address", two_nodes.address,
        "--constraint", "bitops<=0.3,bitops<=0.4", "--gpus-per-trial", "0.5",
        "--cpus-per-trial", "0.5", options={"barrier": 2, "free": 2},
    )  # fmt: skip
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    marks = _started(folder)
    assert len(marks) == 2 and {m["node"] for m in marks} == {two_nodes.worker.node_id}
    assert all(m["cuda_visible_devices"] == "0" for m in marks)  # one GPU, shared
    rows = pd.read_parquet(tmp_path / "out" / "runs" / "r" / "records.parquet")
    assert rows["trial_key"].nunique() == 2 and set(rows["status"]) == {"ok"}
    finished = pd.to_datetime(rows["finished_at"], utc=True).min().timestamp()
    assert max(m["at"] for m in marks) < finished  # both ran at once on the one GPU
    assert (rows["node"] == two_nodes.worker.node_id).all()
    # torch sees no GPU behind Ray's logical one: the trials computed on the CPU and say so
    assert rows["device"].str.startswith("cpu").all() and (rows["trial_gpus"] == 0.0).all()


def test_two_node_run_survives_losing_the_worker_node(
    two_nodes: TwoNodes, shared: Path, tmp_path: Path
) -> None:
    """Four trials on two nodes (1 CPU each) with ``--address``: the first two run at once,
    one per node (a barrier), and build one FP checkpoint; of the next two, the one on the
    worker node loses its node (raylet killed by pid) while it runs and is retried on the
    head. Every trial has its rows, once; ``--resume`` then finds the run complete."""
    folder = tmp_path / "gate"
    argv = _cli(
        shared, shared / "cache", folder, "--address", two_nodes.address,
        "--constraint", CONSTRAINTS, options={"barrier": 2, "free": 2},
    )  # fmt: skip
    worker_id = two_nodes.worker.node_id
    t0 = time.perf_counter()
    sequence: list[str] = []

    def note(text: str) -> None:
        sequence.append(f"{time.perf_counter() - t0:6.1f} s  {text}")

    def where(node: str) -> str:
        return {worker_id: "worker", two_nodes.head.node_id: "head"}.get(node, node or "?")

    proc = subprocess.Popen(
        argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    orphans: list[int] = []
    try:
        _wait_for(lambda: len(_started(folder)) >= 3, "a third trial", proc)
        _wait_for(
            lambda: any(m["node"] == worker_id for m in _started(folder)[2:]),
            "a later trial on the worker",
            proc,
        )
        lost = next(m for m in _started(folder)[2:] if m["node"] == worker_id)
        note(f"trial {lost['constraint']} running on the worker node (pid {lost['pid']})")
        pid = two_nodes.raylet_pid(two_nodes.worker)
        os.kill(pid, signal.SIGKILL)
        note(f"killed the worker node's raylet (pid {pid})")
        # a lost node takes its workers with it; with only its raylet killed they run on a
        # while (seen: 14 s and more), and would finish the trial beside its retry
        os.kill(lost["pid"], signal.SIGKILL)
        note(f"killed the trial's worker process on that node (pid {lost['pid']})")
        (folder / "open").touch()  # the head's trial ends, and the head takes the retry
        retried = lambda: [  # noqa: E731
            m for m in _started(folder)
            if m["constraint"] == lost["constraint"] and m["node"] != worker_id
        ]  # fmt: skip
        _wait_for(retried, "the lost trial's retry", proc)
        note(f"trial {lost['constraint']} started again on the {where(retried()[0]['node'])} node")
        code, err = _finish(proc)
        note(f"run exited {code}")
    finally:
        if proc.poll() is None:
            proc.kill()
        orphans = [m["pid"] for m in _started(folder) if m["node"] == worker_id]
        for orphan in set(orphans):  # a worker outlives its raylet a while: end it
            try:
                os.kill(orphan, signal.SIGKILL)
            except ProcessLookupError:
                pass
    rows = pd.read_parquet(shared / "runs" / "r" / "records.parquet")
    for _, row in rows.drop_duplicates("trial_key").iterrows():
        status, node, fp = row["status"], where(row["node"]), row["fp_source"]
        note(f"row {row['constraint']}: {status}, node {node}, FP {fp}")
    print("\n".join(["node-loss sequence:", *sequence]))
    assert code == 0, err[-3000:]
    warnings = [line for line in err.splitlines() if "look local" in line]
    assert len(warnings) == 1, err  # /tmp is local: warned once
    assert set(rows["node"]) == {two_nodes.head.node_id, worker_id}  # both nodes ran trials
    assert rows["trial_key"].nunique() == 4
    assert set(rows["constraint"]) == set(CONSTRAINTS.split(","))
    assert not rows.duplicated(["trial_key", "candidate_index", "track"]).any()
    assert set(rows["status"]) == {"ok"} and rows["top1_test"].notna().all()
    assert (
        rows[rows["constraint"] == lost["constraint"]]["node"].isin([two_nodes.head.node_id]).all()
    )
    per_trial = rows.drop_duplicates("trial_key")
    assert sorted(per_trial["fp_source"]) == ["built", "cache", "cache", "cache"]
    assert len(list((shared / "cache").glob("*.pt"))) == 1  # built once, shared
    assert not list(shared.glob(".mpqbench-runs/*"))  # the driver's markers are gone
    resumed = subprocess.run(
        [sys.executable, "-m", "benchmark", "run", "--resume", "r", "--out", str(shared),
         "--address", two_nodes.address, "--no-leaderboard", "--quiet"],
        env=_env(), capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = pd.read_parquet(shared / "runs" / "r" / "records.parquet")
    assert len(again) == len(rows) and again["trial_key"].nunique() == 4


def test_local_run_listens_on_loopback_and_refuses_unauthenticated(
    tmp_path: Path, shared: Path
) -> None:
    """A default local run (no ``--address``): every port of its Ray instance is on
    127.0.0.0/8, checked while a trial runs, and its GCS refuses a client without the
    token. It reuses the FP checkpoint the cluster run built."""
    folder = tmp_path / "gate"
    proc = subprocess.Popen(
        _cli(tmp_path / "out", shared / "cache", folder, options={}),
        env=_env(RAY_AUTH_MODE=None),  # the default: no mode set
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
