"""Speed: where a Ray trial's fixed cost goes (issue 36), on the local Ray the harness starts.

Usage: python scripts/bench_worker_start.py [--rounds 4]

Measures, on a private local Ray started with the harness's own options
(:func:`benchmark.harness.ray_session.local_init_options`):

- ``init_s`` / ``shutdown_s``: starting and stopping Ray (once a run);
- ``fresh_worker_s``: a new actor (a fresh worker process, as each trial gets with
  ``reuse_actors=False``) until it has imported torch and the harness's trial module,
  with ``imports_s`` the part spent importing;
- ``reused_worker_s``: a second call on a worker that already imported them (what a reused
  worker would cost);
- ``setup_hook_s``: a fresh actor whose imports run in Ray's ``worker_process_setup_hook``
  (at the worker's start, not in the call; ``setup_hook_imports_s`` near 0 shows it ran):
  whether Ray's idle-worker pool hides them.

The variants alternate over ``--rounds``; medians with min and max are printed as JSON
with the load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HOOK = "bench_worker_start.preload"
"""The hook by module path: the workers find this file through ``PYTHONPATH``."""


def preload() -> None:
    """Ray's ``worker_process_setup_hook``: import what a trial imports."""
    import torch  # noqa: F401

    import benchmark.harness.trial  # noqa: F401


def one_session(hook: bool, pause: float) -> dict[str, float]:
    """One Ray session: start, a fresh actor, a reused call, a second fresh actor, stop."""
    import ray

    from benchmark.harness import ray_session

    extra = {"runtime_env": {"worker_process_setup_hook": HOOK}} if hook else {}
    t0 = time.perf_counter()
    ray.init(
        log_to_driver=False,
        configure_logging=False,
        num_cpus=2,
        **ray_session.local_init_options(),
        **extra,
    )
    out = {"init_s": time.perf_counter() - t0}
    time.sleep(pause)  # what a trial's own work would give Ray's pool to start workers

    @ray.remote(num_cpus=1)
    class Worker:
        def load(self) -> float:
            start = time.perf_counter()
            import torch  # noqa: F401

            import benchmark.harness.trial  # noqa: F401

            return time.perf_counter() - start

    key = "setup_hook_s" if hook else "fresh_worker_s"
    for attempt in range(2):  # the second fresh actor replaces a finished one
        start = time.perf_counter()
        worker = Worker.remote()
        imports = ray.get(worker.load.remote())
        took = time.perf_counter() - start
        if attempt == 1:
            out[key] = took
            out["setup_hook_imports_s" if hook else "imports_s"] = imports  # ~0: the hook ran
            if not hook:
                start = time.perf_counter()
                ray.get(worker.load.remote())
                out["reused_worker_s"] = time.perf_counter() - start
        ray.kill(worker)
        time.sleep(pause)
    start = time.perf_counter()
    ray.shutdown()
    out["shutdown_s"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pause", type=float, default=5.0, help="seconds between actors")
    parser.add_argument("--session", choices=("plain", "hook"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.session:  # one Ray session in its own process
        print(json.dumps(one_session(args.session == "hook", args.pause)), flush=True)
        return
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    load_before = os.getloadavg()
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    samples: dict[str, list[float]] = {}
    for _ in range(args.rounds):  # plain, hook, plain, hook, ...
        for session in ("plain", "hook"):
            command = [sys.executable, __file__, "--session", session, "--pause", str(args.pause)]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            for key, value in json.loads(done.stdout.strip().splitlines()[-1]).items():
                samples.setdefault(key, []).append(value)
    result: dict[str, object] = {
        key: {
            "median": round(statistics.median(values), 2),
            "min": round(min(values), 2),
            "max": round(max(values), 2),
        }
        for key, values in samples.items()
    }
    result["rounds"] = args.rounds
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
