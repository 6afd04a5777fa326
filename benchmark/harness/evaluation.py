"""Evaluation of one candidate on both tracks: ``retrain`` (the shared QAT finetune from
the FP checkpoint) and ``inherit`` (the method's own weights, recalibration only).

A candidate with its own fixed-layer convention (``Candidate.fixed``) is costed, checked
and evaluated on ``space.with_fixed(candidate.fixed)``; each row records that convention
(``fixed``) and the quantizer config its track used (``quant``). A track's finetune is
charged as device-hours (wall hours × the trial's ``device_share`` from ``base``), with its
wall hours and process CPU seconds beside them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from benchmark.arena.context import Context
from benchmark.arena.data import DataSplits
from benchmark.arena.protocol import Candidate, SearchResult
from benchmark.arena.quant.base import QuantConfig
from benchmark.arena.recipes.finetune import finetune_qat
from benchmark.arena.recipes.scoring import evaluate, recalibrate_and_evaluate
from benchmark.arena.spaces.base import SearchSpace
from benchmark.harness.failures import error_text, status_of
from benchmark.harness.records import ResultRow
from benchmark.harness.spec import TrialSpec
from benchmark.harness.timer import Timer
from benchmark.harness.trial_events import stage_inherit, stage_retrain

NO_FINETUNE = {
    "finetune_device_hours": 0.0,
    "finetune_wall_hours": 0.0,
    "finetune_cpu_seconds": 0.0,
}


def finetune_cost(timer: Timer, device_share: float) -> dict[str, float]:
    """The finetune-cost columns of a track timed by ``timer`` (device-hours = wall hours ×
    ``device_share``; NaN when the share is unknown)."""
    return {
        "finetune_device_hours": timer.seconds / 3600 * device_share,
        "finetune_wall_hours": timer.seconds / 3600,
        "finetune_cpu_seconds": timer.cpu_seconds,
    }


def evaluate_candidate(
    base: ResultRow,
    index: int,
    candidate: Candidate,
    result: SearchResult | None,
    ctx: Context,
    splits: DataSplits,
    spec: TrialSpec,
    stage: Callable[[str], None] = lambda name: None,
) -> list[ResultRow]:
    """The rows of candidate ``index`` of ``result``: one per track it is evaluated on
    (one infeasible row when it is over the limit). ``stage(name)`` is told each track's
    start (the live view's stage)."""
    row = replace(base, candidate=candidate.label or f"candidate{index}", candidate_index=index)
    try:
        space = ctx.space.with_fixed(candidate.fixed)
        arch = space.validate_arch(candidate.arch)
        policy = space.full_policy(candidate.policy, arch)
    except ValueError as err:
        return [replace(row, status="failed", error=f"invalid candidate: {err}")]
    row = _costed(row, space, policy, arch, candidate, ctx)
    if not row.feasible:
        return [row]
    k, n = _feasible_place(index, result, ctx)
    stage(stage_retrain(k, n))
    rows = [_track(row, "retrain", lambda out: _retrain(out, space, policy, arch, ctx, splits))]
    if candidate.weights is not None:
        stage(stage_inherit(k, n))
        inherit = lambda out: _inherit(out, space, policy, arch, candidate, ctx, splits)  # noqa: E731
        rows.append(_track(row, "inherit", inherit))
    return rows


def _feasible_place(index: int, result: SearchResult | None, ctx: Context) -> tuple[int, int]:
    """``(k, n)``: candidate ``index`` is the k-th of the n feasible candidates of ``result``
    (the ones that get trained; a counter over all of them would end short of its total)."""
    if result is None:  # a lone candidate
        return 1, 1
    feasible = [ctx.candidate_feasible(c) is True for c in result.candidates]
    k = sum(feasible[:index]) + 1
    return k, max(sum(feasible), k)


def _costed(
    row: ResultRow, space: SearchSpace, policy: Any, arch: Any, candidate: Candidate, ctx: Context
) -> ResultRow:
    """``row`` with the candidate's policy, architecture, cost and feasibility."""
    cost = space.cost(policy, arch)
    reference = space.reference()
    return replace(
        row,
        policy=Candidate(policy, arch).policy_json(),
        arch=Candidate(policy, arch).arch_json(),
        fixed=json.dumps(space.fixed.to_dict()),
        feasible=ctx.limit.on(space).met(policy, arch),
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


@dataclass
class _Measured:
    """What a track measured so far (a failure keeps what it had)."""

    quant: str = ""  # the quantizer config its model was built with (JSON)
    top1_val: float = math.nan
    top1_test: float = math.nan
    finetune: Timer | None = None  # the retrain track's finetune; None: no finetune
    evaluation: Timer = field(default_factory=Timer)


def _track(row: ResultRow, track: str, measure: Callable[[_Measured], None]) -> ResultRow:
    """The row of one track: ``measure`` fills a :class:`_Measured`; a failure is recorded
    (status and error) with the finetune time it had spent, and the run goes on."""
    out = _Measured()
    try:
        measure(out)
    except Exception as err:  # noqa: BLE001 - recorded, the run goes on
        spent = {} if out.finetune is None else finetune_cost(out.finetune, row.device_share)
        failed = "failed" if out.finetune is None else status_of(err)
        return replace(
            row, track=track, quant=out.quant, status=failed, error=error_text(err), **spent
        )
    spent = NO_FINETUNE if out.finetune is None else finetune_cost(out.finetune, row.device_share)
    return replace(
        row,
        track=track,
        quant=out.quant,
        top1_val=out.top1_val,
        top1_test=out.top1_test,
        **spent,
        eval_seconds=out.evaluation.seconds,
    )


def _retrain(
    out: _Measured,
    space: SearchSpace,
    policy: Any,
    arch: Any,
    ctx: Context,
    splits: DataSplits,
) -> None:
    """The retrain track: the shared QAT finetune from the FP checkpoint, then top-1."""
    out.quant, out.finetune = quant_json(space, None), Timer()
    batch = ctx.preset.data.eval_batch_size
    with out.finetune:
        model, _ = finetune_qat(
            space, policy, ctx.fp_state, splits, ctx.preset, arch=arch, seed=ctx.task.seed,
            device=ctx.device,
        )  # fmt: skip
    with out.evaluation:
        out.top1_val = evaluate(model, splits.val, device=ctx.device, batch_size=batch)
        out.top1_test = evaluate(model, splits.test, device=ctx.device, batch_size=batch)


def _inherit(
    out: _Measured,
    space: SearchSpace,
    policy: Any,
    arch: Any,
    candidate: Candidate,
    ctx: Context,
    splits: DataSplits,
) -> None:
    """The inherit track: the method's own weights, BN recalibration only, then top-1."""
    out.quant = quant_json(space, candidate.quant)
    with out.evaluation:
        model = space.build(arch, policy=policy, quant=candidate.quant)
        model.load_state_dict(dict(candidate.weights))
        scores, _ = recalibrate_and_evaluate(
            model,
            splits.train,
            {"val": splits.val, "test": splits.test},
            ctx.preset.recalibration,
            eval_batch_size=ctx.preset.data.eval_batch_size,
            device=ctx.device,
            seed=ctx.task.seed,
        )
    out.top1_val, out.top1_test = scores["val"], scores["test"]


def quant_json(space: SearchSpace, quant: QuantConfig | None) -> str:
    """JSON of the quantizer config ``space`` builds a track's model with (``None``: the
    shared default), as :meth:`SearchSpace.layer_quant` completes it."""
    if quant is not None and not isinstance(quant, QuantConfig):
        raise TypeError(f"Candidate.quant must be a QuantConfig or None, got {quant!r}")
    return json.dumps(space.layer_quant(quant).to_dict())
