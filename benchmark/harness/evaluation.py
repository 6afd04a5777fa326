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
from collections.abc import Callable
from dataclasses import replace

from benchmark.arena.context import Context
from benchmark.arena.data import DataSplits
from benchmark.arena.protocol import Candidate, SearchResult
from benchmark.arena.quant.base import QuantConfig
from benchmark.arena.recipes.finetune import finetune_qat
from benchmark.arena.recipes.scoring import evaluate, recalibrate_and_evaluate
from benchmark.arena.spaces.base import SearchSpace
from benchmark.harness.outcome import Timer, error_text, status_of
from benchmark.harness.progress import stage_inherit, stage_retrain
from benchmark.harness.records import ResultRow
from benchmark.harness.spec import TrialSpec

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
    space: SearchSpace = ctx.space
    row = replace(base, candidate=candidate.label or f"candidate{index}", candidate_index=index)
    try:
        space = space.with_fixed(candidate.fixed)
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
        fixed=json.dumps(space.fixed.to_dict()),
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
    ft, ev = Timer(), Timer()
    retrain_quant = quant_json(space, None)
    k = index + 1
    n = len(result.candidates) if result is not None else k  # a lone candidate
    stage(stage_retrain(k, n))
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
                quant=retrain_quant,
                top1_val=val,
                top1_test=test,
                **finetune_cost(ft, base.device_share),
                eval_seconds=ev.seconds,
            )
        )
    except Exception as err:  # noqa: BLE001 - recorded, the run goes on
        rows.append(
            replace(
                row,
                track="retrain",
                quant=retrain_quant,
                status=status_of(err),
                error=error_text(err),
                **finetune_cost(ft, base.device_share),
            )
        )
    # inherit track: the method's own weights, recalibration only
    if candidate.weights is not None:
        ev = Timer()
        inherit_quant = ""
        stage(stage_inherit(k, n))
        try:
            inherit_quant = quant_json(space, candidate.quant)
            with ev:
                model = space.build(arch, policy=policy, quant=candidate.quant)
                model.load_state_dict(dict(candidate.weights))
                scores, _ = recalibrate_and_evaluate(
                    model,
                    splits.train,
                    {"val": splits.val, "test": splits.test},
                    preset.recalibration,
                    eval_batch_size=batch,
                    device=device,
                    seed=seed,
                )
                val, test = scores["val"], scores["test"]
            rows.append(
                replace(
                    row,
                    track="inherit",
                    quant=inherit_quant,
                    top1_val=val,
                    top1_test=test,
                    **NO_FINETUNE,
                    eval_seconds=ev.seconds,
                )
            )
        except Exception as err:  # noqa: BLE001
            rows.append(
                replace(
                    row,
                    track="inherit",
                    quant=inherit_quant,
                    status="failed",
                    error=error_text(err),
                )
            )
    return rows


def quant_json(space: SearchSpace, quant: QuantConfig | None) -> str:
    """JSON of the quantizer config ``space`` builds a track's model with (``None``: the
    shared default), as :meth:`SearchSpace.layer_quant` completes it."""
    if quant is not None and not isinstance(quant, QuantConfig):
        raise TypeError(f"Candidate.quant must be a QuantConfig or None, got {quant!r}")
    return json.dumps(space.layer_quant(quant).to_dict())
