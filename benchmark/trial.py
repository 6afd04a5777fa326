"""One trial = one (method, task): build the context, search under the budget, then
evaluate every candidate the same way and return result rows.

The harness measures all cost here; a method never reports its own. Search,
finetune and evaluation are timed separately (device-hours are wall hours on the
trial's device: one GPU, or the trial's CPU threads).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.checkpoints import atomic_write_text, config_hash
from benchmark.data import DataSplits, load_splits
from benchmark.presets import load_preset
from benchmark.protocol import (
    Budget,
    BudgetExceeded,
    Candidate,
    Constraint,
    Context,
    SearchResult,
    Task,
)
from benchmark.records import ResultRow, versions
from benchmark.spaces import get_space
from benchmark.spaces.base import SearchSpace
from benchmark.train import DivergedError, evaluate, finetune_qat, recalibrate
from benchmark.watchdog import TrialTimeout, time_limit

EXIT_HARD_TIMEOUT = 3  # a worker that had to end itself past its time limit


@dataclass(frozen=True)
class TrialSpec:
    """Everything a worker needs to run one trial (plain data: it travels to Ray workers)."""

    run_id: str
    method: str
    task: dict[str, Any]
    run_dir: str
    method_options: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    download: bool = False
    cache_dir: str | None = None
    max_search_seconds: float | None = None
    max_search_samples: int | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    max_trial_seconds: float | None = None  # None: the preset's

    @property
    def key(self) -> str:
        """Identifies the trial inside a run (resume skips finished keys)."""
        options = json.dumps(self.method_options, sort_keys=True)
        return f"{self.method}|{Task(**self.task).key}|{options}"

    @property
    def trial_dir(self) -> Path:
        """``<run>/trials/<method>-<hash of key>``: the method's workdir and the outbox."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.method)
        return Path(self.run_dir) / "trials" / f"{slug}-{config_hash({'k': self.key})}"

    @property
    def outbox(self) -> Path:
        """Where the worker leaves the trial's finished rows (read back on retry/resume)."""
        return self.trial_dir / "rows.json"


def write_outbox(spec: TrialSpec, rows: list[dict[str, Any]]) -> None:
    """Store a finished trial's rows next to its workdir (atomic)."""
    atomic_write_text(spec.outbox, json.dumps(rows, default=str))


def read_outbox(spec: TrialSpec) -> list[dict[str, Any]] | None:
    """The rows a worker left for ``spec``, or ``None`` (none, or unreadable)."""
    try:
        rows = json.loads(spec.outbox.read_text())
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, list) and rows else None


def _device(spec: TrialSpec) -> tuple[torch.device, str]:
    if spec.gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda"), torch.cuda.get_device_name(0)
    threads = max(1, int(spec.cpus))
    return torch.device("cpu"), f"cpu ({threads} thread{'s' if threads > 1 else ''})"


def _seed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _error_text(err: BaseException) -> str:
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(err).__name__}: {err}{where}"[:2000]


def _status_of(err: BaseException) -> str:
    if isinstance(err, BudgetExceeded):
        return "over_budget"
    if isinstance(err, DivergedError):
        return "diverged"
    return "failed"


class _Timer:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> _Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._t0


def _recorded_names(spec: TrialSpec) -> tuple[str, str]:
    """The method's registered name and the preset's own name, as rows record them.

    The spec's text stands where either cannot be loaded (that failure is recorded too).
    """
    from methods import get_method  # the harness reaches methods only through the registry

    task = Task(**spec.task)
    try:
        method = get_method(spec.method).name
    except Exception:  # noqa: BLE001 - reported when the trial sets up
        method = spec.method
    try:
        preset = load_preset(task.preset).name  # a preset file's name, not its path
    except Exception:  # noqa: BLE001 - reported when the trial sets up
        preset = task.preset
    return method, preset


def _base_row(spec: TrialSpec, device_name: str) -> ResultRow:
    task = Task(**spec.task)
    method, preset = _recorded_names(spec)
    return ResultRow(
        run_id=spec.run_id,
        trial_key=spec.key,
        method=method,
        space=task.space,
        dataset=task.dataset,
        preset=preset,
        seed=task.seed,
        constraint=task.constraint,
        device=device_name,
        **versions(),
    )


def _stamped(rows: list[ResultRow]) -> list[dict[str, Any]]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    return [asdict(replace(r, finished_at=stamp)) for r in rows]


def spec_row(spec: TrialSpec, **fields: Any) -> dict[str, Any]:
    """A row for a trial that produced none itself (e.g. its worker crashed)."""
    return _stamped([replace(_base_row(spec, _device(spec)[1]), **fields)])[0]


@dataclass
class _Progress:
    """What a trial has so far: what a timeout keeps."""

    base: ResultRow  # the trial's row before its candidates (search cost once known)
    rows: list[ResultRow] = field(default_factory=list)  # candidate rows finished
    search_t0: float | None = None  # perf_counter() when the search started

    def timed_out(self, limit: float) -> list[dict[str, Any]]:
        text = f"TrialTimeout: the trial ran past its time limit of {limit:g} s"
        row = replace(self.base, status="timeout", error=text)
        if self.search_t0 is not None and math.isnan(row.search_device_hours):
            row = replace(row, search_device_hours=(time.perf_counter() - self.search_t0) / 3600)
        return _stamped([*self.rows, row])


def run_trial(
    spec: TrialSpec,
    reporter: Callable[[dict[str, Any]], None] | None = None,
    *,
    hard_exit: bool = False,
) -> list[dict[str, Any]]:
    """Run one trial, store its rows in the outbox and return them.

    Never raises for a method's own failure. Past the time limit (the spec's, else the
    preset's ``max_trial_seconds``, counted from the end of the set-up: data and the
    cached FP checkpoint) the trial stops with a ``timeout`` row; rows of candidates
    evaluated before it are kept. ``hard_exit`` (worker processes only): if
    the trial is stuck in C code and cannot be stopped, write the rows and end the
    process ``grace`` seconds after the limit.
    """
    torch.set_num_threads(max(1, int(spec.cpus)))
    device, device_name = _device(spec)
    log = logging.getLogger(f"mpqbench.trial.{spec.method}")
    progress = _Progress(_base_row(spec, device_name))
    limit = spec.max_trial_seconds

    def hard_timeout() -> None:
        log.error("trial %s is stuck past its time limit; ending the worker", spec.key)
        write_outbox(spec, progress.timed_out(limit))
        os._exit(EXIT_HARD_TIMEOUT)

    try:
        ctx, method_cls, splits = _set_up(spec, device, log, reporter)
        if limit is None:
            limit = ctx.preset.budget.max_trial_seconds
        # search + evaluation; FP pretraining is not the method's
        with time_limit(limit, on_hard_timeout=hard_timeout if hard_exit else None):
            rows = _search_and_evaluate(spec, ctx, method_cls, splits, log, progress)
    except TrialTimeout:
        log.warning("trial %s ran past its time limit of %s s", spec.key, limit)
        rows = progress.timed_out(limit)
    except Exception as err:  # noqa: BLE001 - setup failures are recorded, not raised
        log.warning("trial %s failed during set-up: %s", spec.key, err)
        rows = _stamped([replace(progress.base, status=_status_of(err), error=_error_text(err))])
    write_outbox(spec, rows)
    return rows


def _set_up(
    spec: TrialSpec,
    device: torch.device,
    log: logging.Logger,
    reporter: Callable[[dict[str, Any]], None] | None,
) -> tuple[Context, type, DataSplits]:
    """The trial's context (data, space, cached FP checkpoint), method class and splits."""
    from methods import get_method  # the harness reaches methods only through the registry

    task = Task(**spec.task)
    preset = load_preset(task.preset)
    splits = load_splits(
        task.dataset,
        spec.data_dir,
        download=spec.download,
        val_fraction=preset.data.val_fraction,
        seed=task.seed,
        train_subset=preset.data.train_subset,
        augment=preset.data.augment,
    )
    space = get_space(task.space, num_classes=splits.num_classes)
    Constraint.parse(task.constraint)  # a bad constraint fails before FP pretraining
    budget = Budget(
        spec.max_search_seconds or preset.budget.max_search_seconds,
        spec.max_search_samples or preset.budget.max_search_samples,
    )
    fp_state, _ = space.pretrain(
        splits, preset, seed=task.seed, device=device, cache_dir=spec.cache_dir
    )
    method_cls = get_method(spec.method)
    workdir = spec.trial_dir
    workdir.mkdir(parents=True, exist_ok=True)
    _seed_globals(task.seed)
    ctx = Context.create(
        task,
        space,
        preset,
        splits,
        fp_state,
        budget=budget,
        workdir=workdir,
        device=device,
        log=log,
        reporter=reporter,
        options=spec.method_options,
    )
    return ctx, method_cls, splits


def _search_and_evaluate(
    spec: TrialSpec,
    ctx: Context,
    method_cls: type,
    splits: DataSplits,
    log: logging.Logger,
    progress: _Progress,
) -> list[dict[str, Any]]:
    base = progress.base
    budget = ctx.budget.budget
    meter = ctx.budget
    search_timer = _Timer()
    try:
        method = method_cls(**spec.method_options)
        progress.search_t0 = time.perf_counter()
        with search_timer:
            result = method.search(ctx)
        if search_timer.seconds > budget.max_search_seconds:
            raise BudgetExceeded(
                f"search took {search_timer.seconds:.1f} s, budget {budget.max_search_seconds:g} s"
            )
    except Exception as err:  # noqa: BLE001 - a failing method never takes the run down
        log.warning("%s failed: %s", spec.method, err)
        return _stamped(
            [
                replace(
                    base,
                    status=_status_of(err),
                    error=_error_text(err),
                    search_device_hours=search_timer.seconds / 3600,
                    samples_processed=meter.samples,
                )
            ]
        )
    base = replace(
        base,
        search_device_hours=search_timer.seconds / 3600,
        samples_processed=meter.samples,
    )
    if not result.candidates:
        return _stamped([replace(base, status="failed", error="the method returned no candidate")])
    progress.base = base  # a timeout from here on keeps the search's cost
    for index, candidate in enumerate(result.candidates):
        progress.rows.extend(_evaluate_candidate(base, index, candidate, result, ctx, splits, spec))
    return _stamped(progress.rows)


def _evaluate_candidate(
    base: ResultRow,
    index: int,
    candidate: Candidate,
    result: SearchResult,
    ctx: Context,
    splits: DataSplits,
    spec: TrialSpec,
) -> list[ResultRow]:
    space: SearchSpace = ctx.space
    row = replace(base, candidate=candidate.label or f"candidate{index}", candidate_index=index)
    try:
        arch = space.validate_arch(candidate.arch)
        policy = space.full_policy(candidate.policy, arch)
    except ValueError as err:
        return [replace(row, status="failed", error=f"invalid candidate: {err}")]
    cost = space.cost(policy, arch)
    reference = space.reference()
    row = replace(
        row,
        policy=Candidate(policy, arch).policy_json(),
        arch=Candidate(policy, arch).arch_json(),
        feasible=ctx.constraint.satisfied(cost, reference),
        macs=float(cost.macs),
        bitops=float(cost.bitops),
        mflops64=cost.mflops64,
        size_bits=float(cost.size_bits),
        bitops_ratio_w8a8=cost.bitops / reference.bitops_w8a8,
        size_ratio_w8a8=cost.size_bits / reference.size_bits_w8a8,
        avg_w_bits=cost.avg_w_bits,
        avg_a_bits=cost.avg_a_bits,
        extra=json.dumps(candidate.meta, default=str),
    )
    if not row.feasible:
        return [row]
    preset, device, seed = ctx.preset, ctx.device, ctx.task.seed
    batch = preset.data.eval_batch_size
    rows = []
    # retrain track: the shared QAT finetune from the FP checkpoint
    ft, ev = _Timer(), _Timer()
    try:
        with ft:
            model, stats = finetune_qat(
                space, policy, ctx.fp_state, splits, preset, arch=arch, seed=seed, device=device
            )
        with ev:
            val = evaluate(model, splits.val, device=device, batch_size=batch)
            test = evaluate(model, splits.test, device=device, batch_size=batch)
        rows.append(
            replace(
                row,
                track="retrain",
                top1_val=val,
                top1_test=test,
                finetune_device_hours=ft.seconds / 3600,
                eval_seconds=ev.seconds,
            )
        )
    except Exception as err:  # noqa: BLE001 - recorded, the run goes on
        rows.append(
            replace(
                row,
                track="retrain",
                status=_status_of(err),
                error=_error_text(err),
                finetune_device_hours=ft.seconds / 3600,
            )
        )
    # inherit track: the method's own weights, recalibration only
    if candidate.weights is not None:
        ev = _Timer()
        try:
            with ev:
                model = space.build(arch, policy=policy, quant=candidate.quant)
                model.load_state_dict(dict(candidate.weights))
                recal = preset.recalibration
                recalibrate(
                    model,
                    splits.train,
                    batches=recal.batches,
                    batch_size=recal.batch_size,
                    device=device,
                    seed=seed,
                )
                val = evaluate(model, splits.val, device=device, batch_size=batch)
                test = evaluate(model, splits.test, device=device, batch_size=batch)
            rows.append(
                replace(
                    row,
                    track="inherit",
                    top1_val=val,
                    top1_test=test,
                    finetune_device_hours=0.0,
                    eval_seconds=ev.seconds,
                )
            )
        except Exception as err:  # noqa: BLE001
            rows.append(replace(row, track="inherit", status="failed", error=_error_text(err)))
    return rows
