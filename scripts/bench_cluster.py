"""Wall time of one run of 4 trials on a two-node Ray cluster vs on one node with 2 CPUs.

    python scripts/bench_cluster.py [--repeats 1]

Both runs: `python -m benchmark run --methods uniform,random --space resnet20 --preset tiny
--constraint bitops<=0.3,bitops<=0.5` (4 trials, one FP checkpoint, a fresh cache each
time). Two nodes: a head and a worker (1 CPU each, loopback, token auth) started with the
README's commands (``ray get-auth-token --generate``, ``ray start --head``, ``ray start
--address``, each node with ``--block`` in a process group of its own, so that only what
this script started is stopped), joined with ``--address``. One node: the default local
run (Ray with this machine's CPUs). The two alternate (two nodes, one node, ...) for
``--repeats`` rounds; prints the wall seconds of each, the load average before each run and
the median ratio two nodes / one node with its min and max.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--methods", "uniform,random", "--space", "resnet20", "--preset", "tiny",
    "--constraint", "bitops<=0.3,bitops<=0.5", "--no-leaderboard", "--quiet",
]  # fmt: skip
RAY = str(Path(sys.executable).with_name("ray"))
NODE_WAIT_S = 120.0
"""Longest the script waits for both nodes to join (seconds): a safety net."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoNodeCluster:
    """A head and a worker node on this machine, as the README starts them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "HOME": str(root / "home"), "RAY_AUTH_MODE": "token"}
        (root / "home").mkdir(parents=True)
        subprocess.run([RAY, "get-auth-token", "--generate"], env=self.env, check=True,
                       capture_output=True)  # fmt: skip
        token = subprocess.run([RAY, "get-auth-token"], env=self.env, check=True,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        self.env["RAY_AUTH_TOKEN"] = token.splitlines()[-1]
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--block"]
        self.nodes: list[subprocess.Popen] = []
        head = [RAY, "start", "--head", "--port", str(self.port), "--include-dashboard", "false"]
        self._start([*head, "--temp-dir", str(root / "ray"), *common])
        self._wait(1)
        self._start([RAY, "start", "--address", self.address, *common])
        self._wait(2)

    def _start(self, argv: list[str]) -> None:
        log = open(self.root / f"node{len(self.nodes)}.log", "w")  # noqa: SIM115
        self.nodes.append(
            subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )  # fmt: skip
        )

    def _wait(self, count: int) -> None:
        probe = (
            "import ray, sys\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
            "print(sum(1 for n in ray.nodes() if n['Alive']))"
        )
        deadline = time.monotonic() + NODE_WAIT_S
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.poll() is not None:
                    raise SystemExit(f"a Ray node exited ({node.returncode}): see {self.root}")
            done = subprocess.run([sys.executable, "-c", probe, self.address], env=self.env,
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode == 0 and done.stdout.strip().isdigit():
                if int(done.stdout.strip()) >= count:
                    return
            time.sleep(1.0)
        raise SystemExit(f"{count} Ray node(s) not up within {NODE_WAIT_S:g} s: see {self.root}")

    def shutdown(self) -> None:
        """Stop the nodes this script started (their process groups), worker first."""
        for node in reversed(self.nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
        for node in reversed(self.nodes):
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()


def timed_run(out: Path, env: dict[str, str], *extra: str) -> float:
    """Wall seconds of one `benchmark run` into ``out`` (its own FP cache)."""
    env = {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "benchmark", "run", *ARGS, "--out", str(out)]
    argv += ["--cache-dir", str(out / "cache"), *extra]
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mpqb-bench-"))  # short: Ray's socket paths
    cluster = TwoNodeCluster(root)
    ratios = []
    try:  # interleaved: two nodes, one node, two nodes, ... (the idle cluster stays up)
        for i in range(args.repeats):
            load = os.getloadavg()[0]
            two = timed_run(root / f"two-{i}", cluster.env, "--address", cluster.address)
            print(f"two nodes (1 CPU each): {two:.1f} s wall (load average before {load:.2f})")
            load = os.getloadavg()[0]
            one = timed_run(root / f"one-{i}", cluster.env)  # a private local instance
            print(f"one node (2 CPUs):      {one:.1f} s wall (load average before {load:.2f})")
            ratios.append(two / one)
    finally:
        cluster.shutdown()
    low, mid, high = min(ratios), statistics.median(ratios), max(ratios)
    print(f"two nodes / one node: median {mid:.2f} (min {low:.2f}, max {high:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
