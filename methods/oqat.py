"""``oqat``: Once Quantization-Aware Training (Shen et al., ICCV 2021, arXiv 2010.04354).

OQAT's training code was never published (LaVieEnRoseSMZ/OQA holds evaluation code only;
its issue #3 asks for the training code), so this is rebuilt from the paper's description
and the evaluation code's modules. Each choice says where it comes from.

Kept from the paper:

- **Quantized supernet with shared step sizes.** The mbv3-cifar supernet starts from the
  cached FP supernet and is trained with LSQ (the arena's ``LSQConfig``: ``s`` initialised
  to ``2·mean|x|/sqrt(Qp)``, gradient scale ``1/sqrt(numel·Qp)`` on the *sliced* tensor)
  at uniform ``W = A = b`` bits. Every physical conv owns ONE ``(s_w, s_a)`` pair, used by
  every subnet whatever its width or kernel, applied to the sliced (and, for 3×3,
  kernel-transformed) weight: ``QuantConfig`` with shared state (``per_bit_*`` off), as
  ``elastic_nn/modules/dynamic_quant_op.py`` does.
- **Precision convention** (``elastic_nn/networks/ofa_lsq_mbv3.py``): stem conv, SE convs
  and classifier full precision (``Candidate.fixed = 32``: every fixed layer of the space
  at FP; the shared cost model counts them at 32×32 BitOPs), every other conv quantized;
  every quantized conv input on the **unsigned** grid ``Qn = 0, Qp = 2^b − 1``
  (``lsq_conv.py`` ``quantize(..., isActivation=True)``), through
  ``QuantConfig(act_grid="unsigned")``, although mbv3's expand convs read the residual
  stream, which can be negative (clipped to 0, as in the original). Each row's ``fixed``
  and ``quant`` columns state both.
- **Sandwich rule** per step: the largest, the smallest and random subnets (all at the
  stage's bits), in-place distillation from the largest (soft targets, detached), through
  the arena's ``sandwich_step``. The paper builds on BigNAS/OFA training; the exact loss
  could not be checked against the paper's text here ([unverified], as the spec says).
- **Bit inheritance** (the rule of the repository's issue #1): the ``(b−1)``-bit supernet
  starts from the ``b``-bit one, every weight, BN statistic and kernel-transform matrix
  kept, both step sizes of every searched layer doubled (``2^(b_prev − b)`` for a drop of
  more than one bit), so the clipping range ``Qp·s`` stays about the same; the fixed
  layers (stem, SE convs, classifier), whose bits do not change, keep their steps. Option
  ``inherit_steps="reinit"`` (not the paper's) inherits the weights but initialises the
  searched layers' steps again (:meth:`OQAT.inherit`).
  Default chain 4 → 3 → 2; later stages train shorter (the preset's ``stage_epochs``). A
  later stage whose loss becomes NaN (seen at 2 bits on the smoke preset,
  docs/benchmarks.md) ends the chain: the finished bit-widths' candidates stand, the log
  warns and the search log holds ``diverged_at_bits`` (this benchmark's choice; a first
  stage that diverges makes the trial ``diverged``).
- **Evaluation**: every subnet is scored after BN recalibration on training images
  (``ctx.score``; ``eval_oqa_net.py`` recalibrates on 2000 images), never retrained; the
  candidates carry their extracted weights and quantizer state, so the harness evaluates
  them on the ``inherit`` track (recalibration only, as published) and the ``retrain``
  track.

Chosen here (not published):

- **Subnet selection.** The paper's search algorithm was never released. Per bit-width,
  the arena's evolutionary search (``benchmark.arena.evolve``: Once-for-All's elitist
  mutation + crossover loop, which OQAT's code base descends from) over architectures,
  scored by ``ctx.score`` (validation top-1 after per-subnet BN recalibration), under the
  task's constraint costed with OQAT's convention. Population, generations and the best
  score per generation are logged. The best ``candidates_per_bits`` architectures of the
  final population become candidates.
- **Stage recipe**: the preset's ``[finetune]`` QAT recipe (SGD, cosine, no warm-up) with
  the stage's epochs / step cap from ``[methods.oqat]``; a fresh schedule per stage.

Scaled down: epochs (the preset's ``[methods.oqat]`` section), subnets per step, population
and generations; resolution fixed at 32×32; OFA-MobileNetV3's k {3,5,7}, e {3,4,6},
d {2,3,4} become mbv3-cifar's k {3,5}, e {3,4,6}, d {2,3}.

On ``resnet20`` (a fixed architecture) OQAT degenerates to uniform-bit QAT with bit
inheritance: one model, trained with cross-entropy at each bit-width in turn (no sandwich,
no architecture search), its first conv and classifier FP; the log says so.

Fixed layers under a tight limit (the protocol's rule, ``benchmark.arena.fit_fixed``): the
shared cost model counts an FP layer at 32×32 BitOPs, and the FP stem alone costs 0.65× the
W8A8 reference on mbv3-cifar (the paper costs FP layers as 8-bit ones). With the default
option ``fixed="auto"`` OQAT keeps its FP convention whenever its cheapest subnet meets the
limit and otherwise takes the space's (stem, SE and classifier 8-bit); the log, the search
log's ``fixed_why`` and every row's ``fixed`` column say which. ``fixed="method"`` insists on
the FP convention (an unreachable limit is refused before training, with the minimum
achievable value); ``fixed="space"`` always uses the space's. Bit-widths at which no subnet is
feasible are trained (the chain needs them) but give no candidate.

Checkpoints: after each finished stage (training + selection) the model, the candidates
so far and the log are saved with ``ctx.save_checkpoint``; a resumed trial continues at the
next stage (its spend restored by the harness). The candidates so far are offered after
each stage, so a budget stop keeps what exists.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import Field, Strict
from torch import nn

from benchmark.arena import (
    FP_BITS,
    Candidate,
    Context,
    DivergedError,
    ElasticSearchSpace,
    FixedFit,
    Method,
    QuantConfig,
    Recipe,
    SandwichSampler,
    SearchResult,
    SearchSpace,
    apply_policy,
    evolve,
    fit_fixed,
    method_config,
    reset_quant_ranges,
    sandwich_step,
    scale_quant_ranges,
)
from methods import register_method

CHECKPOINT_VERSION = 2  # 2: candidates as plain data (weights_only loads)
PosReal = Annotated[float, Strict(), Field(gt=0)]
PosInt = Annotated[int, Strict(), Field(ge=1)]


@method_config
class OQATConfig:
    """OQAT's settings (``--method-options '{"oqat": {...}}'`` or ``[methods.oqat]``): the
    bit-widths, the recipe of its stages and of its subnet selection.

    Attributes:
        bits: the bit-widths to produce, in inheritance order (default ``[4, 3, 2]``; each
            lower than the one before).
        candidates_per_bits: candidates per bit-width from the final population.
        fixed: ``"auto"`` (default), ``"method"`` or ``"space"``: which convention the
            never-searched layers follow (see the module doc, "Fixed layers").
        stage_epochs: epochs over the train split of each stage, in order (the first from
            the FP supernet, then one per inheritance step); one entry per bit-width the
            method produces (default 4, 3, 2). The paper trains lower bits shorter.
        stage_max_steps: optional cap on each stage's optimiser steps (same order).
        lr: the stages' learning rate (default: the preset's ``[finetune]`` one).
        subnets_per_step: subnets of one sandwich step (largest, smallest and
            ``subnets_per_step − 2`` random ones).
        population: individuals per generation of the evolutionary selection.
        generations: generations after the initial population.
        mutate_prob: probability of resampling each gene in a mutation.
        clip_grad_norm: optional cap on each step's gradient norm (summed over the step's
            subnets). Not in the paper (its training code is unpublished; the OFA code it
            descends from does not clip): a choice offered here because the first step
            after inheriting 2 bits can see a gradient far larger than the steps that
            follow, and diverge (2 of 3 seeds on digits/smoke, ``scripts/bench_oqat.py
            --fidelity``; docs/benchmarks.md). Default: off.
        inherit_steps: what a lower bit-width's supernet takes of its quantizers' steps:
            ``"scale"`` (default, the paper's: the steps × 2 per bit dropped) or
            ``"reinit"`` (weights inherited, the searched layers' steps
            initialised again by LSQ's rule on the stage's first batch): offered because at
            short stages the inherited 2-bit supernet lost to one trained from FP
            (docs/methods/oqat.md).
    """

    bits: tuple[Annotated[int, Strict(), Field(ge=1, lt=FP_BITS)], ...] = (4, 3, 2)
    candidates_per_bits: PosInt = 1
    fixed: Literal["auto", "method", "space"] = "auto"
    stage_epochs: tuple[PosReal, ...] = (3.0, 2.0, 1.0)
    stage_max_steps: tuple[PosInt, ...] | None = None
    lr: PosReal | None = None
    subnets_per_step: Annotated[int, Strict(), Field(ge=2)] = 4
    population: Annotated[int, Strict(), Field(ge=2)] = 16
    generations: Annotated[int, Strict(), Field(ge=0)] = 4
    mutate_prob: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.1
    clip_grad_norm: PosReal | None = None
    inherit_steps: Literal["scale", "reinit"] = "scale"

    def __post_init__(self) -> None:
        bits = list(self.bits)
        if not bits:
            raise ValueError("bits must be a non-empty list like [4, 3, 2]")
        if any(a <= b for a, b in zip(bits, bits[1:], strict=False)):
            raise ValueError(
                f"bits must decrease (each supernet inherits from the one before), got {bits}"
            )
        if len(self.stage_epochs) != len(bits):
            raise ValueError(
                f"bits {bits} need {len(bits)} stage lengths; stage_epochs has "
                f"{len(self.stage_epochs)}"
            )
        caps = self.stage_max_steps
        if caps is not None and len(caps) != len(bits):
            raise ValueError(
                f"bits {bits} need {len(bits)} step caps; stage_max_steps has {len(caps)}"
            )


def check_bits_allowed(bits: Sequence[int], space: SearchSpace) -> None:
    """``ValueError`` (one line) for a bit-width ``space`` does not allow."""
    for b in bits:
        if b not in space.allowed_bits():
            raise ValueError(
                f"oqat: {b}-bit is not allowed on {space.name} "
                f"(allowed: {list(space.allowed_bits())})"
            )


def oqat_quant() -> QuantConfig:
    """OQAT's quantizers: LSQ weights and activations, one state per layer shared by every
    subnet and bit-width, every input on the unsigned grid."""
    return QuantConfig(act_grid="unsigned")


@register_method
class OQAT(Method):
    """Quantized supernet with shared LSQ step sizes, bit inheritance 4→3→2, evolutionary
    subnet selection per bit-width (resnet20: uniform bits with inheritance).

    Settings: :class:`OQATConfig`.
    """

    name = "oqat"
    searches = "arch+uniform-bits"
    config_class = OQATConfig

    @classmethod
    def prepare_config(cls, config: OQATConfig, spaces: Sequence[SearchSpace]) -> OQATConfig:
        """Every bit-width allowed on every space of the run (before anything starts)."""
        for space in spaces:
            check_bits_allowed(config.bits, space)
        return config

    # --- the search -------------------------------------------------------------------
    def search(self, ctx: Context) -> SearchResult:
        keys = self.config
        check_bits_allowed(keys.bits, ctx.space)
        recipes = self._recipes(ctx, keys)
        fit = fit_fixed(  # OQAT: stem, SE and classifier FP when the limit allows it
            ctx.space,
            ctx.constraint,
            FP_BITS,
            mode=keys.fixed,
            method="oqat",
            own_label="stem, SE convs and classifier FP",
            low_bits=min(keys.bits),
        )
        quant = oqat_quant()
        model, log = self._start(ctx, fit, quant, recipes)
        candidates: list[Candidate] = []
        start = 0
        saved = ctx.load_checkpoint()
        if self._usable(saved):
            model.load_state_dict(saved["model"])
            candidates = [Candidate.from_state(c, fit.space) for c in saved["candidates"]]
            log, start = saved["log"], saved["done"]
            ctx.log.info("oqat: resuming after stage %d of %d", start, len(keys.bits))
        for index in range(start, len(keys.bits)):
            found = self._stage(ctx, fit, model, index, recipes[index], quant, log, candidates)
            if found is None:  # diverged after an earlier bit-width finished
                break
            candidates += found
            candidates.sort(key=lambda c: -c.meta["val_top1"])
            ctx.offer(*candidates, log=log)
            ctx.save_checkpoint(
                {
                    "version": CHECKPOINT_VERSION,
                    "bits": list(keys.bits),
                    "done": index + 1,
                    "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                    "candidates": [c.to_state() for c in candidates],
                    "log": log,
                }
            )
        if not candidates:
            raise ValueError(f"oqat: no subnet meets {ctx.constraint.text} at any bit-width")
        return SearchResult(candidates, log=log)

    def _start(
        self, ctx: Context, fit: FixedFit, quant: QuantConfig, recipes: Sequence[Recipe]
    ) -> tuple[nn.Module, dict[str, Any]]:
        """The model the stages train (the FP supernet, or the FP model of a fixed space)
        with OQAT's quantizers, and the search log's header (also logged)."""
        keys, space = self.config, fit.space
        elastic = isinstance(space, ElasticSearchSpace)
        mode = "supernet" if elastic else "uniform bits with inheritance (fixed architecture)"
        ctx.log.info(
            "oqat on %s: %s, bits %s, stage epochs %s, quantizers %s, fixed layers: %s",
            space.name,
            mode,
            list(keys.bits),
            [r.epochs for r in recipes],
            quant.to_dict(),
            fit.why,
        )
        model = (
            ctx.fp_supernet(quant)
            if elastic
            else space.build_from_fp(ctx.fp_state, None, None, quant)
        )
        log: dict[str, Any] = {
            "mode": mode,
            "bits": list(keys.bits),
            "quant": quant.to_dict(),
            "fixed": fit.fixed,
            "fixed_why": fit.why,
            "selection": "evolution (OFA-style; OQAT's own search was never published)",
            "population": keys.population,
            "generations": keys.generations,
            "stages": [],
        }
        return model.to(ctx.device), log

    def _stage(
        self,
        ctx: Context,
        fit: FixedFit,
        model: nn.Module,
        index: int,
        recipe: Recipe,
        quant: QuantConfig,
        log: dict[str, Any],
        finished: Sequence[Candidate],
    ) -> list[Candidate] | None:
        """One bit-width: inherit from the one before (steps × 2 per bit dropped), train,
        select; its record joins ``log["stages"]``. ``None`` when it diverged after an
        earlier bit-width finished (those stand); a divergence before that raises."""
        keys, space = self.config, fit.space
        bits = keys.bits[index]
        seed = ctx.task.seed * 7919 + index
        stage: dict[str, Any] = {"bits": bits}
        if index > 0:
            stage.update(self.inherit(model, space, keys.bits[index - 1], bits))
        began = time.perf_counter()
        try:
            stats = self._train_stage(ctx, space, model, bits, recipe, keys, seed)
        except DivergedError as err:
            if not finished:  # nothing finished: the trial is `diverged`
                raise
            # this benchmark's choice (the paper's training code is unpublished): the
            # finished bit-widths stand; the later ones would inherit from a NaN model
            stage.update(diverged=str(err), train_seconds=time.perf_counter() - began)
            log["stages"].append(stage)
            log["diverged_at_bits"] = bits
            ctx.log.warning(
                "oqat W%dA%d stage diverged (%s): the search ends with the %d "
                "candidate(s) of the finished bit-widths %s",
                bits, bits, err, len(finished), list(keys.bits[:index]),
            )  # fmt: skip
            return None
        stage.update(train_seconds=time.perf_counter() - began, **stats.to_dict())
        ctx.report(stage_bits=bits, loss=stats.final_loss, steps=stats.steps)
        began = time.perf_counter()
        found = self._select(ctx, space, model, bits, keys, seed, quant, stage, fit.fixed)
        stage["select_seconds"] = time.perf_counter() - began
        ctx.log.info(
            "oqat W%dA%d stage: %d steps in %.1f s, selection %.1f s, %d candidate(s)",
            bits, bits, stats.steps, stage["train_seconds"], stage["select_seconds"], len(found),
        )  # fmt: skip
        for cand in found:  # the row's `extra` column: where its time went
            cand.meta.update(
                stage_steps=stats.steps,
                stage_train_seconds=round(stage["train_seconds"], 2),
                stage_select_seconds=round(stage["select_seconds"], 2),
            )
        log["stages"].append(stage)
        return found

    # --- pieces ---------------------------------------------------------------------------
    def _recipes(self, ctx: Context, keys: OQATConfig) -> list[Recipe]:
        """One SGD recipe per stage: the preset's ``[finetune]`` one with the stage's length."""
        caps = keys.stage_max_steps  # as many as bits (checked by the config)
        base = ctx.preset.finetune
        return [
            replace(
                base,
                epochs=float(epochs),
                max_steps=None if caps is None else caps[i],
                warmup_epochs=0.0,
                lr=base.lr if keys.lr is None else keys.lr,
            )
            for i, epochs in enumerate(keys.stage_epochs)
        ]

    def _usable(self, saved: Any) -> bool:
        return (
            isinstance(saved, dict)
            and saved.get("version") == CHECKPOINT_VERSION
            and saved.get("bits") == list(self.config.bits)
        )

    def inherit(
        self, model: nn.Module, space: SearchSpace, previous_bits: int, bits: int
    ) -> dict[str, Any]:
        """Make ``model`` (trained at ``previous_bits``) the start of the ``bits`` stage: the
        searched layers' quantizer steps × ``2^(previous_bits − bits)`` (``inherit_steps``
        ``"scale"``) or initialised again on first use (``"reinit"``). Only the layers
        whose bits drop: the fixed layers keep their convention's bits and steps. Returns
        what the stage's log records."""
        searched = set(
            space.searchable_layers(
                space.max_arch() if isinstance(space, ElasticSearchSpace) else None
            )
        )
        record: dict[str, Any] = {"inherited_from": previous_bits}
        if self.config.inherit_steps == "reinit":
            record["quantizers_reinitialised"] = reset_quant_ranges(model, searched)
            return record
        factor = 2.0 ** (previous_bits - bits)
        record["step_scale"] = factor
        record["quantizers_scaled"] = scale_quant_ranges(model, factor, searched)
        return record

    def _train_stage(
        self,
        ctx: Context,
        space: SearchSpace,
        model: nn.Module,
        bits: int,
        recipe: Recipe,
        keys: OQATConfig,
        seed: int,
    ) -> Any:
        """Train ``model`` at uniform ``W = A = bits`` for one stage (charged by ``ctx``)."""
        desc = f"oqat W{bits}A{bits}"
        if not isinstance(space, ElasticSearchSpace):
            apply_policy(model, space.uniform_policy(bits, bits))
            return ctx.train(
                model, recipe=recipe, seed=seed, desc=desc, clip_grad_norm=keys.clip_grad_norm
            )

        def uniform(arch: Any, rng: random.Random) -> Any:
            return space.uniform_policy(bits, bits, arch)

        sampler = SandwichSampler(space, num_random=keys.subnets_per_step - 2, policy=uniform)
        step = sandwich_step(space, sampler, seed=seed, label_smoothing=recipe.label_smoothing)
        return ctx.train(
            model,
            step,
            recipe=recipe,
            seed=seed,
            desc=f"{desc} supernet",
            clip_grad_norm=keys.clip_grad_norm,
        )

    def _select(
        self,
        ctx: Context,
        space: SearchSpace,
        model: nn.Module,
        bits: int,
        keys: OQATConfig,
        seed: int,
        quant: QuantConfig,
        stage: dict[str, Any],
        fixed: Any,
    ) -> list[Candidate]:
        """The best feasible subnets at ``bits`` with their weights (``stage`` gets the log):
        on a fixed space its one architecture, if it meets the limit; on a joint space the
        best of an evolutionary search."""
        limit = ctx.limit.on(space)  # under this stage's fixed-layer convention

        def feasible(arch: Any) -> bool:
            return limit.met(space.uniform_policy(bits, bits, arch), arch)

        def candidate(arch: Any, net: nn.Module, score: float, rank: int) -> Candidate:
            return Candidate.from_model(
                net,
                space.uniform_policy(bits, bits, arch),
                arch,
                label=f"W{bits}A{bits}" + (f"-{rank}" if rank else ""),
                quant=quant,
                fixed=fixed,
                meta={"bits": bits, "val_top1": score, "rank": rank},
            )

        if not isinstance(space, ElasticSearchSpace):
            arch = space.reference_arch
            if not feasible(arch):
                stage["selected"] = []
                ctx.log.info("oqat W%dA%d: over %s, no candidate", bits, bits, ctx.constraint)
                return []
            net = copy.deepcopy(model)
            score = ctx.score(copy.deepcopy(net), seed=seed)
            stage["selected"] = [{"arch": None, "val_top1": score}]
            return [candidate(arch, net, score, 0)]
        chosen = self._evolve(ctx, space, model, bits, keys, seed, feasible, stage)
        out = []
        for rank, member in enumerate(chosen):
            net = space.extract(model, member.arch, space.uniform_policy(bits, bits, member.arch))
            out.append(candidate(member.arch, net, member.score, rank))
        return out

    def _evolve(
        self,
        ctx: Context,
        space: ElasticSearchSpace,
        model: nn.Module,
        bits: int,
        keys: OQATConfig,
        seed: int,
        feasible: Callable[[Any], bool],
        stage: dict[str, Any],
    ) -> list[Any]:
        """The evolutionary selection at ``bits``: the final population's best
        ``candidates_per_bits`` distinct architectures, best first (``stage`` gets the
        history; none when no subnet meets the limit)."""

        def score(arch: Any) -> float:
            policy = space.uniform_policy(bits, bits, arch)
            return ctx.score(space.extract(model, arch, policy), seed=seed)

        def report(entry: dict[str, Any]) -> None:
            ctx.log.info(
                "oqat W%dA%d selection: generation %d, best %.2f%%, mean %.2f%%, %d scored",
                bits, bits, entry["generation"], entry["best"], entry["mean"], entry["evaluated"],
            )  # fmt: skip

        result = evolve(
            space,
            score,
            feasible,
            random.Random(seed),
            population=keys.population,
            generations=keys.generations,
            mutate_prob=keys.mutate_prob,
            on_generation=report,
        )
        if result is None:
            stage["selected"] = []
            ctx.log.info("oqat W%dA%d: no subnet meets %s", bits, bits, ctx.constraint)
            return []
        stage["history"] = result.history
        stage["evaluations"] = result.evaluations
        chosen, seen = [], set()
        for member in result.population:
            if repr(member.arch) not in seen and len(chosen) < self.config.candidates_per_bits:
                seen.add(repr(member.arch))
                chosen.append(member)
        stage["selected"] = [{"arch": m.arch.to_dict(), "val_top1": m.score} for m in chosen]
        return chosen
