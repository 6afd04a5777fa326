"""Runs the grid of trials (methods × spaces × datasets × constraints × seeds).

Two executors run the same :func:`benchmark.trial.run_trial`:

- ``ray`` (default): a Ray Tune ``Tuner`` with one trial per (method, task), each with
  ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs (fractions allowed). Locally it
  starts Ray with the machine's CPUs; ``address`` joins a running cluster.
- ``serial``: the trials one after another in this process (debugging, and to
  measure Ray's overhead).

Rows are written to the run store as each trial finishes.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmark.records import RunStore
from benchmark.trial import TrialSpec, run_trial

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Grid:
    """The cross product a run covers."""

    methods: Sequence[str]
    spaces: Sequence[str]
    datasets: Sequence[str]
    constraints: Sequence[str]
    seeds: Sequence[int]
    preset: str

    def tasks(self) -> list[dict[str, Any]]:
        return [
            {"space": sp, "dataset": ds, "preset": self.preset, "constraint": c, "seed": s}
            for sp, ds, c, s in itertools.product(
                self.spaces, self.datasets, self.constraints, self.seeds
            )
        ]


def make_specs(
    grid: Grid, run_id: str, run_dir: Path, method_options: dict[str, dict], **common: Any
) -> list[TrialSpec]:
    """One :class:`TrialSpec` per (method, task), in a stable order."""
    return [
        TrialSpec(
            run_id=run_id,
            method=method,
            task=task,
            run_dir=str(run_dir),
            method_options=method_options.get(method, {}),
            **common,
        )
        for task in grid.tasks()
        for method in grid.methods
    ]


def summarize(rows: Sequence[dict[str, Any]]) -> str:
    """One compact line: status, candidates, best val-selected accuracy."""
    if not rows:
        return "no rows"
    statuses = sorted({r["status"] for r in rows})
    evaluated = [r for r in rows if r["track"] != "none" and r["status"] == "ok"]
    feasible = sum(1 for r in rows if r.get("feasible"))
    text = f"{'/'.join(statuses)}, {feasible} feasible candidate rows"
    if evaluated:
        best = max(evaluated, key=lambda r: r["top1_val"])
        text += (
            f", best val {best['top1_val']:.1f}% → test {best['top1_test']:.1f}% "
            f"({best['candidate']}, {best['track']}, {best['bitops_ratio_w8a8']:.3f}× W8A8 BitOPs)"
        )
    hours = rows[0].get("search_device_hours")
    if hours == hours and hours is not None:
        text += f", search {hours * 3600:.1f} s"
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        text += f" — {bad[0]['error'][:160]}"
    return text


def _label(spec: TrialSpec) -> str:
    t = spec.task
    return f"{spec.method} on {t['space']}/{t['dataset']} {t['constraint']} seed {t['seed']}"


def run_serial(specs: Sequence[TrialSpec], store: RunStore, progress: Progress) -> None:
    """Run every trial in this process, one after another."""
    for i, spec in enumerate(specs, 1):
        progress(f"[{i}/{len(specs)}] {_label(spec)}: running")
        t0 = time.perf_counter()
        rows = run_trial(spec)
        store.add(rows)
        progress(
            f"[{i}/{len(specs)}] {_label(spec)}: {summarize(rows)} "
            f"[{time.perf_counter() - t0:.0f} s]"
        )


def _ray_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    spec = TrialSpec(**config["spec"])
    rows = run_trial(spec, reporter=lambda metrics: None)
    tune.report({"rows_json": json.dumps(rows, default=str), "done_rows": len(rows)})


def run_ray(
    specs: Sequence[TrialSpec],
    store: RunStore,
    progress: Progress,
    *,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
) -> None:
    """Run the trials as a Ray Tune grid; rows are stored as each trial reports them."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, private Ray instance
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import logging

    import ray
    from ray import tune

    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)

    started_here = False
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=None if address else os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        started_here = True
    labels = {spec.key: (i, _label(spec)) for i, spec in enumerate(specs, 1)}
    total = len(specs)
    starts: dict[str, float] = {}

    class _Rows(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            spec = TrialSpec(**trial.config["spec"])
            starts[spec.key] = time.perf_counter()
            i, label = labels[spec.key]
            progress(f"[{i}/{total}] {label}: running")

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            if "rows_json" not in result:
                return
            spec = TrialSpec(**trial.config["spec"])
            rows = json.loads(result["rows_json"])
            store.add(rows)
            i, label = labels[spec.key]
            took = time.perf_counter() - starts.get(spec.key, time.perf_counter())
            progress(f"[{i}/{total}] {label}: {summarize(rows)} [{took:.0f} s]")

    trainable = tune.with_resources(_ray_trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    storage = (store.run_dir / "ray").resolve()
    tuner = tune.Tuner(
        trainable,
        param_space={"spec": tune.grid_search([asdict(s) for s in specs])},
        tune_config=tune.TuneConfig(reuse_actors=False),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(storage),
            verbose=0,
            callbacks=[_Rows()],
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    try:
        tuner.fit()
    finally:
        if started_here:
            ray.shutdown()


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
