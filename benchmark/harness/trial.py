"""One trial = one (method, task): build the context, search under the budget, then
evaluate every candidate the same way and return result rows.

The harness measures all cost here; a method never reports its own. Search,
finetune and evaluation are timed separately; device-hours are wall hours × the trial's
share of its device (:mod:`benchmark.harness.accounting`), with the wall hours and the
process CPU seconds beside them. The shared FP start's own cost is recorded in the
``fp_*`` columns, never charged to the method.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from benchmark.arena.context import Context
from benchmark.arena.data import DataSplits, load_preset_splits
from benchmark.arena.policy import LayerBits
from benchmark.arena.presets import Preset, load_preset
from benchmark.arena.protocol import (
    Budget,
    BudgetExceeded,
    Candidate,
    Constraint,
    ProtocolError,
    SearchIgnoredStop,
    SearchResult,
    Task,
    TrialTimeout,
)
from benchmark.arena.recipes.pretrain import fp_starting_point
from benchmark.arena.reporting import Reporter
from benchmark.arena.spaces import get_space
from benchmark.arena.spaces.base import SearchSpace
from benchmark.harness.accounting import DeviceShare, current_node, fp_start_fields, trial_device
from benchmark.harness.evaluation import evaluate_candidate
from benchmark.harness.failures import error_text, status_of
from benchmark.harness.records import ResultRow, versions
from benchmark.harness.search_log import write_anytime, write_search_log
from benchmark.harness.shared_storage import check_visible
from benchmark.harness.spec import (
    LABEL_OPTION,
    TrialSpec,
    config_json,
    config_overrides,
    variant_name,
    write_outbox,
)
from benchmark.harness.timer import Timer
from benchmark.harness.trial_events import STAGE_FP, STAGE_SEARCH, Send, budget_of, trial_progress
from benchmark.harness.watchdog import SEARCH_GRACE_SECONDS, search_stop, time_limit

EXIT_HARD_TIMEOUT = 3  # a worker that had to end itself past its time limit


def _seed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _recorded_names(spec: TrialSpec) -> tuple[str, str]:
    """The method's name (with its variant: ``ompq[beta=1]``) and the preset's own name,
    as rows record them.

    The spec's text stands where either cannot be loaded (that failure is recorded too).
    """
    from methods import changed_options, get_method  # the registry: the harness's way in

    task = Task(**spec.task)
    try:
        loaded = load_preset(task.preset)
        preset = loaded.name  # a preset file's name, not its path
    except Exception:  # noqa: BLE001 - reported when the trial sets up
        loaded, preset = None, task.preset
    try:
        cls = get_method(spec.method)
        options = config_overrides(spec.method_options)
        changed = changed_options(cls, loaded, options) if loaded is not None else options
        label = {k: v for k, v in spec.method_options.items() if k == LABEL_OPTION}
        method = variant_name(cls.name, {**changed, **label}, {})
    except Exception:  # noqa: BLE001 - reported when the trial sets up
        method = spec.method
    return method, preset


def _base_row(spec: TrialSpec, share: DeviceShare) -> ResultRow:
    task = Task(**spec.task)
    method, preset = _recorded_names(spec)
    return ResultRow(
        run_id=spec.run_id,
        trial_key=spec.key,
        method=method,
        method_options=json.dumps(spec.method_options, sort_keys=True, default=str),
        space=task.space,
        dataset=task.dataset,
        preset=preset,
        seed=task.seed,
        constraint=task.constraint,
        node=current_node(),
        **share.row_fields(),
        **versions(),
    )


def _stamped(rows: list[ResultRow]) -> list[dict[str, Any]]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    return [asdict(replace(r, finished_at=stamp)) for r in rows]


def spec_row(spec: TrialSpec, **fields: Any) -> dict[str, Any]:
    """A row for a trial that produced none itself (e.g. its worker crashed): made in the
    driver, so its ``node`` is unknown (``""``) unless given."""
    row = replace(_base_row(spec, trial_device(spec)[1]), node="")
    return _stamped([replace(row, **fields)])[0]


@dataclass
class _Progress:
    """What a trial has so far: what a timeout keeps."""

    base: ResultRow  # the trial's row before its candidates (search cost once known)
    share: DeviceShare  # what the trial's time is charged as
    rows: list[ResultRow] = field(default_factory=list)  # candidate rows finished
    search_t0: tuple[float, float] | None = None  # (perf_counter, process_time) at its start

    def timed_out(self, limit: float) -> list[dict[str, Any]]:
        text = f"TrialTimeout: the trial ran past its time limit of {limit:g} s"
        row = replace(self.base, status="timeout", error=text)
        if self.search_t0 is not None and math.isnan(row.search_device_hours):
            wall = time.perf_counter() - self.search_t0[0]
            cpu = time.process_time() - self.search_t0[1]
            row = replace(row, **search_cost(self.share, wall, cpu))
        return _stamped([*self.rows, row])


def search_cost(share: DeviceShare, wall_seconds: float, cpu_seconds: float) -> dict[str, float]:
    """The search-cost columns of a search that took ``wall_seconds`` of wall time and
    ``cpu_seconds`` of the process's CPU time (device-hours = wall × share)."""
    return {
        "search_device_hours": share.device_hours(wall_seconds),
        "search_wall_hours": wall_seconds / 3600,
        "search_cpu_seconds": cpu_seconds,
    }


def run_trial(
    spec: TrialSpec,
    reporter: Callable[[dict[str, Any]], None] | None = None,
    *,
    hard_exit: bool = False,
    events: Send | None = None,
) -> list[dict[str, Any]]:
    """Run one trial, store its rows in the outbox and return them.

    Its progress goes to ``<trial folder>/log.txt`` and, as events, to ``events``
    (:mod:`benchmark.harness.trial_events`).

    Never raises for a method's own failure. Past the time limit (the spec's, else the
    preset's ``max_trial_seconds``, counted from the end of the set-up: data and the
    cached FP checkpoint) the trial stops with a ``timeout`` row; rows of candidates
    evaluated before it are kept. ``hard_exit`` (worker processes only): if
    the trial is stuck in C code and cannot be stopped, write the rows and end the
    process ``grace`` seconds after the limit.
    """
    torch.set_num_threads(max(1, int(spec.cpus)))
    device, share = trial_device(spec)
    log = logging.getLogger(f"mpqbench.trial.{spec.method}")
    progress = _Progress(_base_row(spec, share), share)
    limit = spec.max_trial_seconds

    def hard_timeout() -> None:
        log.error("trial %s is stuck past its time limit; ending the worker", spec.key)
        write_outbox(spec, progress.timed_out(limit))
        os._exit(EXIT_HARD_TIMEOUT)

    try:
        with trial_progress(spec.trial_dir, events) as live:
            live.stage(STAGE_FP)
            ctx, method_cls, config, splits = _set_up(spec, device, share, log, reporter, progress)
            if limit is None:
                limit = ctx.preset.budget.max_trial_seconds
            # search + evaluation; FP pretraining is not the method's
            with time_limit(limit, on_hard_timeout=hard_timeout if hard_exit else None):
                method = method_cls() if config is None else method_cls(config)
                rows = _search_and_evaluate(spec, ctx, method, splits, log, progress, live)
    except TrialTimeout:
        log.warning("trial %s ran past its time limit of %s s", spec.key, limit)
        rows = progress.timed_out(limit)
    except Exception as err:  # noqa: BLE001 - setup failures are recorded, not raised
        log.warning("trial %s failed during set-up: %s", spec.key, err)
        rows = _stamped([replace(progress.base, status=status_of(err), error=error_text(err))])
    write_outbox(spec, rows)
    return rows


def _set_up(
    spec: TrialSpec,
    device: torch.device,
    share: DeviceShare,
    log: logging.Logger,
    reporter: Callable[[dict[str, Any]], None] | None,
    progress: _Progress,
) -> tuple[Context, type, Any, DataSplits]:
    """The trial's context (data, space, cached FP checkpoint), method class, the method's
    config (its class's defaults < the preset's section < the options) and splits.

    The FP start's record goes into ``progress.base`` (its ``fp_*`` columns); the harness's
    own warm-up runs here, before the budget's and the search's clocks start.
    """
    from methods import get_method  # the harness reaches methods only here

    check_visible(spec.shared_folders, spec.run_id)  # a cluster node without shared storage
    task = Task(**spec.task)
    preset = _trial_preset(spec, task)
    splits = load_preset_splits(
        preset, task.seed, spec.data_dir, download=spec.download, dataset=task.dataset
    )
    space = get_space(task.space, num_classes=splits.num_classes)
    Constraint.parse(task.constraint)  # a bad constraint fails before FP pretraining
    budget = Budget(
        spec.max_search_seconds or preset.budget.max_search_seconds,
        spec.max_search_samples or preset.budget.max_search_samples,
    )
    fp_state = _fp_start(spec, task.seed, space, splits, preset, device, share, progress)
    _warm_up(space)
    method_cls = get_method(spec.method)
    config = method_cls.configure(preset, config_overrides(spec.method_options))
    progress.base = replace(progress.base, method_config=config_json(config))
    spec.trial_dir.mkdir(parents=True, exist_ok=True)
    _seed_globals(task.seed)
    ctx = Context.create(
        task,
        space,
        preset,
        splits,
        fp_state,
        budget=budget,
        workdir=spec.trial_dir,
        device=device,
        log=log,
        reporter=reporter,
    )
    return ctx, method_cls, config, splits


def _fp_start(
    spec: TrialSpec,
    seed: int,
    space: SearchSpace,
    splits: DataSplits,
    preset: Preset,
    device: torch.device,
    share: DeviceShare,
    progress: _Progress,
) -> dict[str, Any]:
    """The FP starting point (cached, or pretrained now); its record goes into
    ``progress.base`` (the rows' ``fp_*`` columns)."""
    fp_state, fp_info = fp_starting_point(
        space,
        splits,
        preset,
        seed=seed,
        device=device,
        cache_dir=spec.cache_dir,
        built_by={"device": share.device, "device_share": share.share},
    )
    progress.base = replace(progress.base, **fp_start_fields(fp_info))
    return fp_state


def _trial_preset(spec: TrialSpec, task: Task) -> Preset:
    """The task's preset, refused if its recipe changed since the run started."""
    preset = load_preset(task.preset)
    if spec.preset_hash and preset.recipe_hash != spec.preset_hash:
        raise ProtocolError(
            f"the preset {task.preset} changed after the run started (recipe "
            f"{preset.recipe_hash}, the run's {spec.preset_hash}): restore it, or start a new run"
        )
    return preset


def _warm_up(space: SearchSpace) -> None:
    """What the harness's first cost query costs once per process (torch's lazy imports in
    the FLOP counter: ~1.7 s on a CPU), paid before the clocks start, not by the method:
    profiling the reference architecture and building its cost table (both cached)."""
    space.reference()
    space.cost_table(space.reference_arch)


def _search_and_evaluate(
    spec: TrialSpec,
    ctx: Context,
    method: Any,
    splits: DataSplits,
    log: logging.Logger,
    progress: _Progress,
    live: Reporter,
) -> list[dict[str, Any]]:
    base = progress.base
    meter = ctx.budget
    search_timer = Timer()
    earlier = ctx.restore_spend()  # a resumed search gets only what it had left
    if earlier is not None:
        log.info("resuming a search that had spent %s", earlier)
    earlier_seconds = 0.0 if earlier is None else float(earlier["seconds"])
    earlier_cpu = 0.0 if earlier is None else float(earlier.get("cpu_seconds", 0.0))

    def with_cost(row: ResultRow, **fields: Any) -> ResultRow:
        wall = earlier_seconds + search_timer.seconds
        cpu = earlier_cpu + search_timer.cpu_seconds
        cost = search_cost(progress.share, wall, cpu)
        return replace(row, **cost, samples_processed=meter.samples, **fields)

    try:
        progress.search_t0 = (time.perf_counter(), time.process_time())
        live.stage(STAGE_SEARCH, budget=budget_of(meter))
        result, stopped = _search(method, ctx, search_timer)
    except SearchIgnoredStop:
        text = (
            f"the search ran past its budget's stop by more than the {SEARCH_GRACE_SECONDS:g} s "
            "grace: end the search when ctx.budget is spent (charge raises BudgetExceeded)"
        )
        log.warning("%s: %s", spec.method, text)
        return _stamped([with_cost(base, status="over_budget", error=text)])
    except Exception as err:  # noqa: BLE001 - a failing method never takes the run down
        log.warning("%s failed: %s", spec.method, err)
        return _stamped([with_cost(base, status=status_of(err), error=error_text(err))])
    base = with_cost(base, stopped_by_budget=stopped)
    write_search_log(spec.trial_dir, result.log)
    write_anytime(spec.trial_dir, ctx.anytime)
    progress.base = base  # a timeout from here on keeps the search's cost
    for index, candidate in enumerate(result.candidates):
        progress.rows.extend(
            evaluate_candidate(base, index, candidate, result, ctx, splits, spec, live.stage)
        )
    return _stamped(progress.rows)


def _search(method: Any, ctx: Context, timer: Timer) -> tuple[SearchResult, bool]:
    """Run the search under its budget: ``(result, stopped_by_budget)``.

    The budget's stop (``BudgetExceeded`` from a charge, or the wall clock) ends the
    search and its offered candidates are the result; with none offered it is
    ``over_budget``. A search that returns gives its own candidates.
    """
    meter = ctx.budget
    try:
        with timer, search_stop(meter.seconds_left()):
            result = method.search(ctx)
    except BudgetExceeded as stop:
        if not ctx.offered:
            raise BudgetExceeded(f"{stop}; the search had offered no candidate") from None
        log = {**ctx.offered_log, "stopped_by_budget": str(stop)}  # the log offered so far
        return SearchResult(list(ctx.offered), log=log), True
    return _checked(result), meter.exhausted()


def _checked(result: Any) -> SearchResult:
    """``result`` if it is a well-formed :class:`SearchResult` with candidates; else a
    one-line ``TypeError`` / ``ValueError`` (the trial is then ``failed``)."""
    if not isinstance(result, SearchResult):
        raise TypeError(
            f"search returned {type(result).__name__}, not a SearchResult: "
            "return SearchResult([Candidate(policy, arch), ...])"
        )
    candidates = result.candidates
    if not isinstance(candidates, list | tuple):
        raise TypeError(f"SearchResult.candidates is a {type(candidates).__name__}, not a list")
    if not candidates:
        raise ValueError("the method returned no candidate")
    for i, candidate in enumerate(candidates):
        if not isinstance(candidate, Candidate):
            raise TypeError(f"candidate {i} is a {type(candidate).__name__}, not a Candidate")
        policy = candidate.policy
        if not isinstance(policy, Mapping) or not all(
            isinstance(bits, LayerBits) for bits in policy.values()
        ):
            raise TypeError(
                f"candidate {i} has a policy of {type(policy).__name__}: give a mapping of "
                "layer name → LayerBits(w_bits, a_bits)"
            )
    return result
