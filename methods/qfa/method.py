"""``qfa``: QFA / BatchQuant (Bai et al., NeurIPS 2021, arXiv 2105.08952; code
apple/ml-batchquant), a mixed-precision once-for-all supernet searched with an accuracy
predictor and NSGA-II. Notes: ``docs/methods/qfa.md``.

Kept from the paper / code:

- quantizers (``benchmark.arena``): BatchQuant activations (:class:`BatchQuantConfig`:
  batch range from the detached input, softplus α from 1, offset β, no EMA, running range
  set by recalibration, which ``ctx.score`` performs) and LSQ weights with a step per
  (layer, bit) over one shared FP weight, the full weight quantized then sliced
  (:class:`LSQFullConfig`), every state per (layer, bit) (``per_bit_*``);
- precision convention: first conv and squeeze-excite FP, classifier 8-bit
  (``Candidate.fixed``; ``qfa_mbv3.py`` ``override_quantizer`` keeps the first conv at 32
  and the classifier at ≥ 8; SE stays FP, spec), whenever the task's limit allows it (the
  protocol's rule, :func:`~benchmark.arena.fit_fixed`; option ``fixed``);
- training from the cached FP supernet with the toolkit's sandwich step: two stages, bits
  {2,3,4,32} with the stage-0 override rule (p = 0.2), then {2,3,4}
  (:mod:`methods.qfa.sampler`); each step the max and min subnets (one random uniform bit)
  and ``random_subnets`` random subnets (independent per-layer bits), gradients accumulated,
  one SGD step, grad-norm clip 500; label-smoothed (0.1) CE + soft CE from the FP teacher
  (the FP supernet's largest subnet, BN recalibrated); SGD Nesterov, cosine LR with
  warm-up, wd 3e-5 not on BN / bias / quantizers (``main.py``);
- search: an MLP predictor on the one-hot encoding (:mod:`methods.qfa.encoding`) trained on
  sampled subnets (``collect_network_info.py``'s strata: 30% at full depth, 30% at one
  uniform bit-width; :meth:`QFASampler.predictor_sample`), every one scored by
  ``ctx.score`` after recalibrating on the same training images (``RECALIBRATION_SEED``);
  NSGA-II (pymoo) on (predicted top-1, cost) under the task's constraint, its first
  population the Pareto layers of the measured samples (``nsgaii_search.py``); the front
  scored exactly (same recalibration images), candidates best first by measured top-1.
  The sandwich's trained extremes (smallest and largest architecture at each uniform
  bit-width) are the first predictor samples: this benchmark's choice, so that a few
  hundred samples still cover both ends of the cost range.

Scaled down (preset ``[methods.qfa]``, :class:`QFAConfig`): stage lengths (paper 60 + 120
ImageNet epochs; lr 2.5e-3 per GPU there, here the preset's ``[finetune]`` lr), random
subnets per step (paper 4), predictor samples (paper ~8k on 10k images; here hundreds on
the validation split), NSGA-II population and generations (paper 500 × 1000), resolution
fixed at 32 (no resolution gene), predictor size (the original's MLP: 3 hidden layers
of 600 units, ``nsgaii_search.py``).
Cost is the task's metric (BitOPs = Σ MACs·b_w·b_a or weight bits) from the shared cost
model, not the paper's ``MACs·min(b_w,8)·min(b_a,8)/64``, so that every method is
constrained alike. On ``resnet20`` (bits only) the one model serves every policy; its
"min" and "max" subnets are uniform random bits on the same architecture.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, Strict
from torch import nn

from benchmark.arena import (
    BatchQuantConfig,
    Candidate,
    Context,
    ElasticSearchSpace,
    FixedFit,
    LayerBits,
    LSQConfig,
    LSQFullConfig,
    Method,
    QuantConfig,
    Recipe,
    SearchResult,
    SearchSpace,
    apply_policy,
    fit_fixed,
    method_config,
    policy_from_dict,
    policy_to_dict,
    sandwich_step,
)
from methods import register_method
from methods.qfa.encoding import Encoding
from methods.qfa.nsga import pareto_seeds, search_front
from methods.qfa.predictor import AccuracyPredictor, kendall_tau, rmse
from methods.qfa.sampler import OVERRIDE_PROB, QFASampler

STAGE_BITS: tuple[tuple[int, ...], tuple[int, ...]] = ((2, 3, 4, 32), (2, 3, 4))
"""The two stages' bit sets (``main.py``: ``bits_list`` per stage)."""
QFA_FIXED_BITS = {"stem": 32, "se": 32, "classifier": 8}
"""QFA's convention for the never-searched roles a space has (spec; ``override_quantizer``)."""
QFA_FIXED_LABEL = "first conv and SE FP, classifier 8-bit"
CLIP_GRAD_NORM = 500.0
"""``progressive_shrinking.py``: ``clip_grad_norm_(net.parameters(), 500)``."""
RECALIBRATION_SEED = 0
"""Every subnet of the predictor's data and of the front is scored after recalibrating on
one and the same subset of training images (the original caches one sub-train subset,
drawn with a fixed sub-seed); only the held-out rescoring uses other images."""

Pos = Annotated[float, Strict(), Field(gt=0)]
NonNeg = Annotated[float, Strict(), Field(ge=0)]
Count = Annotated[int, Strict(), Field(ge=1)]


@method_config
class QFAConfig:
    """QFA's settings (``--method-options '{"qfa": {...}}'`` or ``[methods.qfa]``): its
    schedule and search sizes (epochs over the method's train split; counts of subnets),
    and:

    Attributes:
        override_prob: the stage-0 rule's probability that a layer with one 32 of (W, A)
            goes fully FP (default 0.2, ``qfa_mbv3.py``).
        teacher: ``"fp"`` (default: KD from the FP supernet's largest subnet) or ``"none"``
            (labels only, an ablation).
        fixed: the never-searched layers' convention, the protocol's rule
            (:func:`~benchmark.arena.fit_fixed`, docs/protocol.md "Fixed layers under a
            tight limit"): ``"auto"`` (default: QFA's own, first conv and SE FP and
            classifier 8-bit, unless its cheapest subnet misses the task's limit, since
            the shared cost model counts an FP layer at 32×32 BitOPs; then the space's),
            ``"method"`` (QFA's own; an unreachable limit is refused before training) or
            ``"space"`` (the space's). The log, the search log's ``fixed_why`` and each
            row's ``fixed`` column say which.
    """

    override_prob: Annotated[float, Strict(), Field(ge=0, le=1)] = OVERRIDE_PROB
    teacher: Literal["fp", "none"] = "fp"
    fixed: Literal["auto", "method", "space"] = "auto"
    stage0_epochs: Pos = 1.0  # bits {2,3,4,32}; paper 60 ImageNet epochs
    stage1_epochs: Pos = 2.0  # bits {2,3,4}; paper 120
    max_steps: Count | None = None  # per stage, cuts the epochs (tiny presets)
    warmup_epochs: NonNeg = 0.0  # paper 5 (of 60 / 120)
    random_subnets: Count = 4  # besides the max and min subnets; paper 4
    label_smoothing: Annotated[float, Strict(), Field(ge=0, lt=1)] = 0.1  # main.py
    weight_decay: NonNeg = 3e-5  # main.py
    predictor_samples: Annotated[int, Strict(), Field(ge=4)] = 100  # paper ~8k
    holdout_fraction: Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.2
    predictor_width: Count = 128
    predictor_depth: Count = 2
    predictor_epochs: Count = 300
    population: Annotated[int, Strict(), Field(ge=4)] = 40  # paper 500
    generations: Count = 20  # paper 1000
    max_front: Count = 8  # front members scored exactly
    # score the held-out subnets again (other recalibration images) and log how well the
    # two scorings agree (Kendall τ): the ceiling of the predictor's held-out τ
    rescore_held_out: Annotated[bool, Strict()] = False
    # the activation quantizer: "batchquant" (the paper's) or "lsq" (the paper's ablation,
    # a learned range per (layer, bit): what BatchQuant is claimed to make trainable)
    act_quantizer: Literal["batchquant", "lsq"] = "batchquant"


@register_method
class QFA(Method):
    """QFA / BatchQuant on ``mbv3-cifar`` (architecture + per-layer W/A bits) or a fixed
    space (bits only).

    Settings: :class:`QFAConfig`.
    """

    name = "qfa"
    searches = "arch+bits"
    config_class = QFAConfig

    # --- pieces ---------------------------------------------------------------------
    @staticmethod
    def quant(act: Literal["batchquant", "lsq"] = "batchquant") -> QuantConfig:
        """BatchQuant activations (``act="lsq"``: LSQ's learned step instead, the ablation)
        and full-weight LSQ, every state per (layer, bit)."""
        act_config = BatchQuantConfig() if act == "batchquant" else LSQConfig()
        return QuantConfig(
            weight=LSQFullConfig(), act=act_config, per_bit_weight=True, per_bit_act=True
        )

    @staticmethod
    def qfa_fixed(space: SearchSpace) -> dict[str, int]:
        """QFA's convention restricted to the roles ``space`` has."""
        roles = space.fixed_roles(space.reference_arch)
        return {role: bits for role, bits in QFA_FIXED_BITS.items() if role in roles}

    def fit(self, ctx: Context) -> FixedFit:
        """The fixed layers' convention for this task (the protocol's rule, ``fit_fixed``)."""
        return fit_fixed(
            ctx.space,
            ctx.constraint,
            self.qfa_fixed(ctx.space),
            mode=self.config.fixed,
            method="qfa",
            own_label=QFA_FIXED_LABEL,
            low_bits=min(STAGE_BITS[-1]),
        )

    def stage_recipe(self, ctx: Context, section: QFAConfig, epochs: float) -> Recipe:
        """The preset's ``[finetune]`` SGD recipe with QFA's stage length and regularisers."""
        return replace(
            ctx.preset.finetune,
            epochs=float(epochs),
            max_steps=section.max_steps,
            warmup_epochs=min(section.warmup_epochs, float(epochs)),
            label_smoothing=section.label_smoothing,
            weight_decay=section.weight_decay,
        )

    # --- search ---------------------------------------------------------------------
    def search(self, ctx: Context) -> SearchResult:
        fit = self.fit(ctx)
        ctx.log.info("qfa: fixed layers at %s", fit.why)
        state = ctx.load_checkpoint() or {}
        log = state.get("log") or {"phases": {}, "fixed": fit.fixed, "fixed_why": fit.why}
        run = _Search(ctx, fit.space, self.quant(self.config.act_quantizer), fit.fixed, state, log)
        with _phase(log, "train_s", accumulate=True):
            self._supernet(run)
        with _phase(log, "predictor_data_s"):
            data = self._predictor_data(run)
        with _phase(log, "predictor_s"):
            samples, predictor, best = self._predictor(run, data)
        with _phase(log, "search_s"):
            candidates = self._front(run, predictor, samples)
        candidates = candidates or ([best] if best is not None else [])
        return SearchResult(candidates, log=log)

    def _supernet(self, run: _Search) -> None:
        """1. The supernet, trained stage by stage from the FP start (``run.supernet``),
        resumed after the last finished stage."""
        ctx, space, state = run.ctx, run.space, run.state
        if run.elastic:
            run.supernet = ctx.fp_supernet(run.quant)
        else:
            run.supernet = ctx.subnet(None, None, quant=run.quant)
        if "supernet" in state:
            run.supernet.load_state_dict(state["supernet"])
        stages_done = int(state.get("stages_done", 0))
        if stages_done >= len(STAGE_BITS):
            return
        teacher = self._teacher(ctx, space, run.log)
        for stage in range(stages_done, len(STAGE_BITS)):
            run.log.setdefault("stages", []).append(
                self._train_stage(ctx, self.config, space, run.supernet, teacher, stage)
            )
            state.update(
                supernet=_cpu(run.supernet.state_dict()), stages_done=stage + 1, log=run.log
            )
            ctx.save_checkpoint(state)

    def _predictor_data(self, run: _Search) -> list[dict[str, Any]]:
        """2. Sampled subnets scored exactly (the stage-1 distribution), the sandwich's
        trained extremes first; the best feasible sample so far is offered every 10."""
        ctx, space, state = run.ctx, run.space, run.state
        data = state.setdefault("data", [])
        sampler = QFASampler(space, bits=STAGE_BITS[-1])
        offered: float | None = None  # top-1 of the sample offered last
        extremes = self._extremes(space, run.encoding)
        while len(data) < self.config.predictor_samples:
            if len(data) < len(extremes):
                arch, policy = extremes[len(data)]
            else:
                arch, policy = sampler.predictor_sample(_rng(ctx.task.seed, len(data)))
            net = self._materialise(space, run.supernet, arch, policy)
            top1 = ctx.score(net, seed=RECALIBRATION_SEED)
            data.append({"arch": _arch_dict(arch), "policy": policy_to_dict(policy), "top1": top1})
            if len(data) % 10 == 0 or len(data) == self.config.predictor_samples:
                ctx.save_checkpoint(state)
                offered = self._offer_best_sample(
                    ctx, space, data, run.fixed, run.quant, run.supernet, offered, run.log
                )
        run.log["extremes_val_top1"] = {  # the sandwich's trained min / max subnets
            _extreme_label(space, arch, policy): d["top1"]
            for (arch, policy), d in zip(extremes, data, strict=False)
        }
        return data

    def _predictor(
        self, run: _Search, data: list[dict[str, Any]]
    ) -> tuple[list[Any], AccuracyPredictor, Candidate | None]:
        """3. The predictor and its held-out rank correlation; the best feasible sample
        is offered. Returns the samples, the predictor and that sample's candidate."""
        ctx, space, state, encoding = run.ctx, run.space, run.state, run.encoding
        samples = [(_arch(space, d["arch"]), _policy(d["policy"]), d["top1"]) for d in data]
        features = np.stack([encoding.features(a, p) for a, p, _ in samples])
        top1 = np.array([t for _, _, t in samples], float)
        predictor, fit = self._fit_predictor(ctx, self.config, encoding, features, top1)
        if self.config.rescore_held_out and "rescore" not in state:
            state["rescore"] = [
                ctx.score(self._materialise(space, run.supernet, *samples[k][:2]), seed=10**6 + k)
                for k in fit["held_out_index"]
            ]
        if "rescore" in state:
            again = np.array(state["rescore"], float)
            fit["rescore_kendall_tau"] = kendall_tau(again, top1[fit["held_out_index"]])
            fit["predictor_vs_rescore_kendall_tau"] = kendall_tau(
                predictor.predict(features[fit["held_out_index"]]), again
            )
        run.log["predictor"] = fit
        state["predictor"] = predictor.state()
        ctx.save_checkpoint(state)
        ctx.report(predictor_kendall_tau=fit["kendall_tau"], predictor_rmse=fit["rmse"])
        _log_predictor(ctx, fit)
        found = _best_feasible(ctx, space, samples)
        best = None
        if found is not None:
            best = self._sample_candidate(space, run.supernet, found, run.fixed, run.quant)
            ctx.offer(best, log=run.log)
        return samples, predictor, best

    def _front(
        self, run: _Search, predictor: AccuracyPredictor, samples: list[Any]
    ) -> list[Candidate]:
        """4. NSGA-II on (predicted top-1, cost), its first population the Pareto layers
        of the measured ``samples``; up to ``max_front`` members spread over the front's
        cost range are scored exactly and offered, best first."""
        ctx, space, encoding = run.ctx, run.space, run.encoding
        metric = ctx.constraint.metric
        limit = ctx.limit.on(space)
        seeds = pareto_seeds(
            np.stack([encoding.genome(a, p) for a, p, _ in samples]),
            np.array([t for _, _, t in samples], float),
            np.array([limit.cost(p, a) for a, p, _ in samples], float),
            self.config.population,
        )
        front = search_front(
            encoding.upper,
            self._objectives(space, encoding, predictor, metric),
            ctx.limit.absolute,
            population=self.config.population,
            generations=self.config.generations,
            seed=ctx.task.seed,
            seeds=seeds,
        )
        run.log["nsga_seeds"] = len(seeds)
        order = np.argsort(-front.predicted)
        picked = _spread(order, front.cost, self.config.max_front)
        candidates, front_log = [], []
        for rank, k in enumerate(picked):
            arch, policy = encoding.decode(front.genomes[k])
            net = self._materialise(space, run.supernet, arch, policy)
            measured = ctx.score(net, seed=RECALIBRATION_SEED)
            candidate = self._candidate(
                space, net, arch, policy, run.fixed, run.quant, f"qfa-{rank}"
            )
            candidate.meta.update(predicted_top1=float(front.predicted[k]), val_top1=measured)
            candidates.append(candidate)
            front_log.append(
                {
                    "arch": _arch_dict(arch),
                    "policy": policy_to_dict(policy),
                    metric: float(front.cost[k]),
                    "predicted_top1": float(front.predicted[k]),
                    "val_top1": measured,
                }
            )
            ctx.offer(*_best_first(candidates), log=run.log)
        run.log["front"] = front_log
        run.log["nsga"] = {
            "population": self.config.population,
            "generations": self.config.generations,
            "evaluations": front.evaluations,
            "front_size": len(front.genomes),
            "scored": len(picked),
            "limit": ctx.limit.absolute,
            "metric": metric,
        }
        if front_log:
            costs = [f[metric] for f in front_log]
            ctx.log.info(
                "qfa NSGA-II: population %d x %d generations, front of %d, %d scored: "
                "%s %.4g-%.4g (%.2fx)",
                self.config.population, self.config.generations, len(front.genomes),
                len(picked), metric, min(costs), max(costs),
                max(costs) / max(min(costs), 1e-12),
            )  # fmt: skip
        return _best_first(candidates)

    def _teacher(self, ctx: Context, space: SearchSpace, log: dict) -> nn.Module | None:
        """The FP supernet's largest subnet (FP fixed layers too), BN recalibrated."""
        if self.config.teacher == "none":
            return None
        arch = space.max_arch() if isinstance(space, ElasticSearchSpace) else None
        teacher = ctx.subnet(arch, None)
        log["teacher_val_top1"] = ctx.score(teacher)
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher.eval()

    def _train_stage(
        self,
        ctx: Context,
        section: QFAConfig,
        space: SearchSpace,
        supernet: nn.Module,
        teacher: nn.Module | None,
        stage: int,
    ) -> dict[str, Any]:
        epochs = (section.stage0_epochs, section.stage1_epochs)[stage]
        recipe = self.stage_recipe(ctx, section, epochs)
        sampler = QFASampler(
            space,
            num_random=section.random_subnets,
            bits=STAGE_BITS[stage],
            override_prob=self.config.override_prob,
        )
        step = sandwich_step(
            space,
            sampler,
            seed=ctx.rng.randrange(2**31),
            label_smoothing=recipe.label_smoothing,
            teacher=teacher,
            accumulate=True,
        )

        curve: list[list[float]] = []  # [step, loss] every 10 steps: the search log's

        def report(i: int, loss: float, samples: int) -> None:
            if i % 10 == 0:
                curve.append([i, round(float(loss), 5)])
                ctx.report(stage=stage, step=i, train_loss=loss)

        stats = ctx.train(
            supernet,
            step,
            recipe=recipe,
            clip_grad_norm=CLIP_GRAD_NORM,
            on_step=report,
            desc=f"qfa stage {stage}",
        )
        return {
            "stage": stage,
            "bits": list(STAGE_BITS[stage]),
            **stats.to_dict(),
            "loss_curve": curve,
        }

    @staticmethod
    def _materialise(
        space: SearchSpace, supernet: nn.Module, arch: Any, policy: dict[str, LayerBits]
    ) -> nn.Module:
        """A standalone copy of subnet ``(arch, policy)`` with the supernet's weights and
        quantizer state (the supernet is not changed)."""
        if isinstance(space, ElasticSearchSpace):
            return space.extract(supernet, arch, policy)
        net = copy.deepcopy(supernet)
        apply_policy(net, space.full_policy(policy, arch))
        return net

    def _candidate(
        self,
        space: SearchSpace,
        net: nn.Module,
        arch: Any,
        policy: dict[str, LayerBits],
        fixed: dict[str, Any] | None,
        quant: QuantConfig,
        label: str,
    ) -> Candidate:
        full = space.full_policy(policy, arch)
        searchable = {n: b for n, b in full.items() if n in set(space.searchable_layers(arch))}
        return Candidate.from_model(net, searchable, arch, label=label, quant=quant, fixed=fixed)

    def _fit_predictor(
        self,
        ctx: Context,
        section: QFAConfig,
        encoding: Encoding,
        features: np.ndarray,
        top1: np.ndarray,
    ) -> tuple[AccuracyPredictor, dict[str, Any]]:
        """Train on all but a seeded held-out part; τ and RMSE on the held-out part."""
        n = len(top1)
        held = max(2, round(section.holdout_fraction * n))
        order = np.random.default_rng((ctx.task.seed, 17)).permutation(n)
        test, train = order[:held], order[held:]
        predictor = AccuracyPredictor(
            encoding.num_features,
            width=section.predictor_width,
            depth=section.predictor_depth,
            epochs=section.predictor_epochs,
            seed=ctx.task.seed,
        )
        train_rmse = predictor.fit(features[train], top1[train])
        pred = predictor.predict(features[test])
        fit = {
            "train": len(train),
            "held_out": len(test),
            "kendall_tau": kendall_tau(pred, top1[test]),
            "rmse": rmse(pred, top1[test]),
            "train_rmse": train_rmse,
            "top1_min": float(top1.min()),
            "top1_max": float(top1.max()),
            "top1_std": float(top1.std()),
            "held_out_index": [int(k) for k in test],
        }
        return predictor, fit

    @staticmethod
    def _extremes(space: SearchSpace, encoding: Encoding) -> list[tuple[Any, dict[str, LayerBits]]]:
        """The smallest and the largest architecture at each uniform bit-width of the search
        (the sandwich's min and max subnets): the first predictor samples, so the predictor
        sees both ends of the cost range (this benchmark's choice)."""
        archs = [space.min_arch(), space.max_arch()] if encoding.elastic else [None]
        return [
            (arch, {n: LayerBits(b, b) for n in space.searchable_layers(arch)})
            for arch in archs
            for b in encoding.bit_choices
        ]

    def _objectives(
        self, space: SearchSpace, encoding: Encoding, predictor: AccuracyPredictor, metric: str
    ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        def evaluate(genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            decoded = [encoding.decode(g) for g in genomes]
            feats = np.stack([encoding.features(a, p) for a, p in decoded])
            costs = [space.cost(p, a) for a, p in decoded]
            value = [c.bitops if metric == "bitops" else c.size_bits for c in costs]
            return predictor.predict(feats), np.array(value, float)

        return evaluate

    def _offer_best_sample(
        self,
        ctx: Context,
        space: SearchSpace,
        data: list[dict[str, Any]],
        fixed: dict[str, Any] | None,
        quant: QuantConfig,
        supernet: nn.Module,
        offered: float | None,
        log: dict[str, Any],
    ) -> float | None:
        """Offer the best feasible scored sample so far when it beats the one offered last
        (a budget that ends the search while predictor data is collected then still has a
        candidate); returns the top-1 offered last."""
        samples = [(_arch(space, d["arch"]), _policy(d["policy"]), d["top1"]) for d in data]
        best = _best_feasible(ctx, space, samples)
        if best is None or (offered is not None and best[2] <= offered):
            return offered
        ctx.offer(self._sample_candidate(space, supernet, best, fixed, quant), log=log)
        return best[2]

    def _sample_candidate(
        self,
        space: SearchSpace,
        supernet: nn.Module,
        sample: tuple[Any, dict[str, LayerBits], float],
        fixed: dict[str, Any] | None,
        quant: QuantConfig,
    ) -> Candidate:
        """A scored predictor sample as a candidate with its weights."""
        arch, policy, top1 = sample
        net = self._materialise(space, supernet, arch, policy)
        candidate = self._candidate(space, net, arch, policy, fixed, quant, "qfa-sample")
        candidate.meta.update(val_top1=top1)
        return candidate


def _extreme_label(space: SearchSpace, arch: Any, policy: dict[str, LayerBits]) -> str:
    """``"min W2A2"``, ``"max W4A4"`` (elastic spaces) or ``"W3A3"`` (a fixed one)."""
    bits = next(iter(policy.values())).w_bits
    if not isinstance(space, ElasticSearchSpace):
        return f"W{bits}A{bits}"
    end = "min" if space.validate_arch(arch) == space.validate_arch(space.min_arch()) else "max"
    return f"{end} W{bits}A{bits}"


def _best_feasible(
    ctx: Context, space: SearchSpace, samples: list[tuple[Any, dict[str, LayerBits], float]]
) -> tuple[Any, dict[str, LayerBits], float] | None:
    """The best-scored sample that meets the task's constraint (``None``: none does)."""
    limit = ctx.limit.on(space)
    feasible = [s for s in samples if limit.met(s[1], s[0])]
    return max(feasible, key=lambda s: s[2]) if feasible else None


def _spread(order: np.ndarray, cost: np.ndarray, limit: int) -> list[int]:
    """At most ``limit`` front members, best predicted first: the most accurate always
    (``order[0]``; with ``limit`` 1, it alone), then the cheapest and the rest evenly spaced
    in cost, so the scored front spans the whole cost range."""
    if len(order) <= limit:
        return [int(k) for k in order]
    best = int(order[0])
    if limit == 1:
        return [best]
    by_cost = np.argsort(cost)
    picks = np.unique(np.linspace(0, len(by_cost) - 1, limit).round().astype(int))
    # the costliest pick gives way to the most accurate (on a front they are one member)
    chosen = {int(by_cost[i]) for i in picks[:-1]} | {best}
    return [int(k) for k in order if int(k) in chosen]


def _best_first(candidates: list[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: -c.meta["val_top1"])


def _rng(seed: int, index: int) -> random.Random:
    """The generator of predictor sample ``index`` (the same on a resumed search)."""
    return random.Random(f"qfa-predictor-{seed}-{index}")


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _arch_dict(arch: Any) -> Any:
    return None if arch is None else arch.to_dict()


def _arch(space: SearchSpace, data: Any) -> Any:
    return None if data is None else space.validate_arch(data)


def _policy(data: dict) -> dict[str, LayerBits]:
    return dict(policy_from_dict(data))


@dataclass
class _Search:
    """One QFA search's working state, shared by its four phases."""

    ctx: Context
    space: SearchSpace
    quant: QuantConfig
    fixed: dict[str, Any] | None
    state: dict[str, Any]  # the checkpointed state (supernet, stages, data, predictor)
    log: dict[str, Any]
    supernet: nn.Module | None = None
    encoding: Encoding = field(init=False)

    def __post_init__(self) -> None:
        self.encoding = Encoding(self.space, bits=STAGE_BITS[-1])

    @property
    def elastic(self) -> bool:
        return isinstance(self.space, ElasticSearchSpace)


@contextmanager
def _phase(log: dict[str, Any], key: str, *, accumulate: bool = False) -> Iterator[None]:
    """Time the enclosed phase into ``log["phases"][key]`` when it finishes (seconds; added
    to the time of earlier attempts when ``accumulate``, as a resumed supernet's is)."""
    timer = time.perf_counter()
    yield
    spent = time.perf_counter() - timer
    log["phases"][key] = (log["phases"].get(key, 0.0) if accumulate else 0.0) + spent


def _log_predictor(ctx: Context, fit: dict[str, Any]) -> None:
    """The predictor's one or two log lines: its fit, and the rescoring's agreement."""
    ctx.log.info(
        "qfa predictor: %d train / %d held-out subnets, held-out Kendall tau %.3f, "
        "RMSE %.2f points (train %.2f); measured top-1 %.1f-%.1f (sd %.2f)",
        fit["train"], fit["held_out"], fit["kendall_tau"], fit["rmse"], fit["train_rmse"],
        fit["top1_min"], fit["top1_max"], fit["top1_std"],
    )  # fmt: skip
    if "rescore_kendall_tau" in fit:
        ctx.log.info(
            "qfa predictor: the held-out subnets scored twice agree at Kendall tau %.3f "
            "(the predictor against the second scoring: %.3f)",
            fit["rescore_kendall_tau"], fit["predictor_vs_rescore_kendall_tau"],
        )  # fmt: skip
