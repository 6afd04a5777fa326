"""``hawq``: HAWQ-V3 bit allocation (Yao et al., ICML 2021, arXiv 2011.10680).

Hessian-aware sensitivity and an integer linear program, on the space's reference
architecture, from the FP checkpoint, no training (on an elastic space the reference
subnet's BN statistics are re-estimated first, ``ctx.subnet(..., recalibrated=True)``,
charged: with the FP supernet's own, the eval-mode probe saw a far worse model, and most
trace estimates came out negative). Notes: ``docs/methods/hawq.md``; the
public code: Zhen-Dong/HAWQ (``ILP.ipynb``); the Hessian code HAWQ used is PyHessian
(GPL-3.0), not used here: the estimator is the arena's own (:mod:`benchmark.arena.hessian`).

Kept from the paper / notebook:

- **Sensitivity** ``Ω_i(b) = T̄r_i·‖Q_b(W_i) − W_i‖²`` per searched layer ``i`` and bit-width
  ``b``, with ``T̄r_i`` the Hessian trace of the training loss (cross-entropy, eval-mode BN)
  with respect to layer ``i``'s weight divided by its parameter count (the notebook: traces
  "are already normalized, i.e., Trace / # parameters"). Traces by Hutchinson's estimator
  with Rademacher vectors restricted to the layer's weight (MQBench's and NNCF's per-layer
  versions), ``Hv`` by double backward, stopped when the running mean's relative change is
  below ``tol``, the denominator ``|m|`` (PyHessian's test, with NNCF's abs() fix,
  nncf#2155 / PR #2159) or after ``max_iter`` vectors; ``max_iter = 100`` and
  ``tol = 1e-3`` are PyHessian's defaults.
- **ILP** (:mod:`methods.hawq_ilp`): one binary per (layer, choice), one choice per layer,
  minimise ``Σ Ω``, one constraint: the task's (BitOPs ``Σ MACs·b_w·b_a`` or size
  ``Σ params·b_w``, from the space's cost table) at its absolute limit (``ctx.limit``)
  minus the fixed layers' cost. Solver CBC bundled with PuLP (the notebook: GLPK).
- **Bits** ``{4, 8}`` with activations at the weights' bits (``bits=[4, 8]``,
  ``activations="tied"``: the paper's W = A setting, the default).
- **Tied layers**: layers the space ties (``space.tied_layers(arch)``: a shortcut conv and
  its main-path conv, the notebook's ``x4 == x6``) share one variable. ``resnet20``
  (option-A shortcuts) and ``mbv3-cifar`` (identity shortcuts) tie none.
- **First / last layers** are not searched: the space's fixed-precision convention keeps
  them (both spaces: 8 bits, the paper's choice), costed at those bits.

Differs from the paper, stated:

- ``Q_b`` is the arena's weight quantizer (LSQ, per-tensor step at its initial value
  ``2·mean|W|/sqrt(Qp)``: what the shared QAT finetune starts from), one fresh quantizer
  per (layer, bits); HAWQ-V3 quantizes per channel, symmetric min/max.
- Extensions (options, each a separate leaderboard entry): ``bits="space"`` (the space's
  full bit set: resnet20 {2,3,4,8}, mbv3-cifar {2,3,4}) or any list of allowed bits;
  ``activations="free"``: activation bits chosen per layer independently of the weights,
  with HAWQ-V2's activation term (arXiv 1911.03852, Hessian analysis extended to
  activations): ``Ω_i(b_w, b_a) = T̄r^W_i·‖Q_{b_w}(W_i) − W_i‖² + T̄r^A_i·‖Q_{b_a}(A_i) −
  A_i‖²``, ``A_i`` the layer's input activations on the probe's batches and ``T̄r^A_i`` the
  trace of the loss's Hessian with respect to them per entry (our formulation; the
  paper's V3 has no activation term).
- Scaled down: a few train batches (``batches`` × ``batch_size`` images; HAWQ-V3's batch
  is not stated in the spec), fewer vectors on the small presets (below).

Hessian settings (``batches``, ``batch_size``, ``max_iter``, ``tol``) are keys of
:class:`HAWQConfig` like the others: its defaults (2 × 32 images, 100, 1e-3), then the
preset's ``[methods.hawq]`` section (e.g. the tiny presets' ``max_iter = 10``), then
``--method-options``; every row records the merged config (``method_config``).

Budget: the probe charges its images for the forward passes and again for every
Hessian-vector product (``ctx.hessian_probe``); the traces are estimated round by round
(one vector per unfinished target per round) and after rounds 1, 2, 4, 8, ... the ILP is
solved on the estimates so far and its answer offered (``ctx.offer``), so a budget that
ends the search still gets a HAWQ allocation evaluated. The ILP's own time counts in the
search seconds the harness meters.

A limit the cheapest choices already exceed is refused before the run
(:meth:`HAWQ.unreachable`), and by the search itself with the same line before any image
is processed. The log: bit set, activation
mode, choices, groups, Hessian settings and every trace, ``Ω``, the constraint, the
solver status, objective and cost, and the rounds offered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, Strict
from torch import Tensor, nn

from benchmark.arena import (
    Candidate,
    Context,
    LayerBits,
    Method,
    QuantConfig,
    QuantLayer,
    SearchResult,
    SearchSpace,
    TaskLimit,
    TraceEstimate,
    hutchinson_traces,
    jsonable_arch,
    method_config,
    quant_layers,
    symmetric_minmax,
)
from methods import register_method
from methods.hawq_ilp import Allocation, AllocationProblem, solve

ACTIVATION_MODES = ("tied", "free")
PAPER_BITS = (4, 8)
HESSIAN_KEYS = (
    "batches",
    "batch_size",
    "max_iter",
    "min_iter",
    "tol",
)  # how the traces are estimated


# --- the config -------------------------------------------------------------------------
Bits = Annotated[int, Strict(), Field(ge=1, le=31)]
Ratio = Annotated[float, Strict(), Field(ge=0, le=1)]


@method_config
class HAWQConfig:
    """HAWQ-V3's settings (``--method-options '{"hawq": {...}}'`` or ``[methods.hawq]``).

    Attributes:
        bits: the bit-widths to choose from: ``[4, 8]`` (the paper, default), ``"space"``
            (the space's bit choices) or a list of the space's allowed bits (below 32).
        activations: ``"tied"`` (activation bits = weight bits, the paper) or ``"free"``
            (chosen independently, with HAWQ-V2's activation Hessian term).
        batches, batch_size: train batches of the Hessian probe and their size (images).
        max_iter, min_iter: most and fewest Rademacher vectors per trace; tol: the stopping
            test's tolerance, the trace's standard error over its magnitude
            (:mod:`benchmark.arena.hessian`; 0: always ``max_iter`` vectors).
        ratios: the paper's family of budgets (``ILP.ipynb``): for each r, one more
            candidate labelled ``hawq-r<r>``, the ILP optimum under ``all-min + r·(all-max
            − all-min)`` of the searched layers' cost (e.g. ``[0.25, 0.5, 0.75]``); a
            budget above the task's limit is skipped (logged). Default none: only the
            optimum under the task's limit.
    """

    bits: tuple[Bits, ...] | Literal["space"] = PAPER_BITS
    activations: Literal["tied", "free"] = "tied"
    batches: Annotated[int, Strict(), Field(ge=1)] = 2
    batch_size: Annotated[int, Strict(), Field(ge=1)] = 32
    max_iter: Annotated[int, Strict(), Field(ge=1)] = 200
    min_iter: Annotated[int, Strict(), Field(ge=1)] = 10
    tol: Annotated[float, Strict(), Field(ge=0)] = 0.03
    ratios: tuple[Ratio, ...] = ()

    def __post_init__(self) -> None:
        if not self.bits:
            raise ValueError("bits must be a non-empty list of bit-widths, or 'space'")
        if self.bits != "space":  # a set: order and repeats do not make a variant
            object.__setattr__(self, "bits", tuple(sorted(set(self.bits))))
        object.__setattr__(self, "ratios", tuple(sorted(set(self.ratios))))


# --- quantization errors ----------------------------------------------------------------
@torch.no_grad()
def weight_errors(model: nn.Module, layers: Sequence[str], bits: Sequence[int]) -> np.ndarray:
    """``‖Q_b(W) − W‖²`` (squared weight units), shape ``(layers, bits)``, with HAWQ-V3's
    quantizer for Ω: symmetric min/max per output channel (:func:`symmetric_minmax`), not
    the training quantizer (LSQ's initial per-tensor step made the 4-bit/8-bit error ratio
    about 18 where this one's is about 290, so the ILP traded bits at the wrong rates)."""
    found = quant_layers(model)
    out = np.zeros((len(layers), len(bits)))
    for i, name in enumerate(layers):
        weight = found[name].weight.detach().double()
        for j, b in enumerate(bits):
            out[i, j] = float(((symmetric_minmax(weight, int(b)) - weight) ** 2).sum())
    return out


@torch.no_grad()
def input_errors(
    model: nn.Module,
    layer_inputs: Mapping[str, Sequence[Tensor]],
    layers: Sequence[str],
    bits: Sequence[int],
    quant: QuantConfig,
) -> np.ndarray:
    """``‖Q_b(A) − A‖²`` over the probe's batches (squared activation units), shape
    ``(layers, bits)``: ``A`` the layer's input activations, each with a fresh activation
    quantizer of ``quant`` (the layer's grid sign, step initialised on ``A``)."""
    found: Mapping[str, QuantLayer] = quant_layers(model)
    out = np.zeros((len(layers), len(bits)))
    for i, name in enumerate(layers):
        acts = torch.cat([a.detach() for a in layer_inputs[name]])
        signed = found[name].act_quantizer.signed
        for j, b in enumerate(bits):
            quantizer = quant.make_act_quantizer(signed).to(acts.device)
            out[i, j] = float(((quantizer(acts, int(b)) - acts).double() ** 2).sum())
    return out


# --- layer groups ---------------------------------------------------------------------
def layer_groups(space: SearchSpace, arch: Any, searchable: Sequence[str]) -> list[tuple[str, ...]]:
    """The ILP's variables: the space's tied groups and every other searchable layer alone,
    in network order (of each group's first layer). Raises ``ValueError`` for a tie that
    names a layer that is not searchable or is in two groups."""
    order = {n: i for i, n in enumerate(searchable)}
    groups: list[tuple[str, ...]] = []
    taken: set[str] = set()
    for tie in space.tied_layers(arch):
        tie = tuple(tie)
        bad = [n for n in tie if n not in order]
        if bad:
            raise ValueError(f"hawq: {space.name} ties {bad[0]!r}, which is not a searched layer")
        again = [n for n in tie if n in taken]
        if again or len(set(tie)) != len(tie):
            raise ValueError(f"hawq: {space.name} ties {(again or list(tie))[0]!r} twice")
        taken.update(tie)
        groups.append(tuple(sorted(tie, key=order.__getitem__)))
    groups += [(n,) for n in searchable if n not in taken]
    return sorted(groups, key=lambda g: order[g[0]])


# --- the method -----------------------------------------------------------------------
@register_method
class HAWQ(Method):
    """HAWQ-V3: Hutchinson Hessian traces and an ILP over per-layer bits.

    Settings: :class:`HAWQConfig`.
    """

    name = "hawq"
    searches = "bits"
    config_class = HAWQConfig

    @classmethod
    def unreachable(cls, config: HAWQConfig, limit: TaskLimit) -> str | None:
        """Before the run: the cheapest policy the ILP can choose (every searched layer at
        the cheapest (W, A) choice) over the limit."""
        space, method = limit.space, cls(config)
        arch = space.reference_arch
        try:
            pairs = method.choices(method.bit_set(space))
            w, a = min(pairs, key=lambda p: p[0] * p[1] if limit.metric == "bitops" else p[0])
            policy = {n: LayerBits(w, a) for n in space.searchable_layers(arch)}
            if limit.met(policy, arch):
                return None
            ratio = limit.ratio_of(limit.cost(policy, arch))
        except ValueError:  # bits the space does not allow: the search says so itself
            return None
        hint = ""
        if config.bits != "space" and min(space.bit_choices) < w:
            hint = """, or offer lower bits (--method-options '{"hawq": {"bits": "space"}}')"""
        return (
            f"its cheapest policy, every searched layer at W{w}A{a}, costs {ratio:.4f}x W8A8; "
            f"loosen the limit to at least {ratio:.4f}{hint}"
        )

    # --- pieces ---------------------------------------------------------------------
    def bit_set(self, space: SearchSpace) -> tuple[int, ...]:
        """The bit-widths chosen from, checked against the space's allowed bits."""
        if self.config.bits == "space":
            return tuple(sorted(space.bit_choices))
        allowed = [b for b in space.allowed_bits() if b < 32]
        bad = [b for b in self.config.bits if b not in allowed]
        if bad:
            raise ValueError(
                f"hawq: {bad[0]} bits is not allowed on {space.name} (allowed: {allowed})"
            )
        return tuple(self.config.bits)

    def choices(self, bits: Sequence[int]) -> list[tuple[int, int]]:
        """``(w_bits, a_bits)`` pairs: ``(b, b)`` tied, every pair free (weight bits outer)."""
        if self.config.activations == "tied":
            return [(b, b) for b in bits]
        return [(w, a) for w in bits for a in bits]

    # --- search ---------------------------------------------------------------------
    def search(self, ctx: Context) -> SearchResult:
        space, arch = ctx.space, ctx.space.reference_arch
        bits = self.bit_set(space)
        pairs = self.choices(bits)
        self.refuse_unreachable(ctx)  # before any image is processed
        searchable = space.searchable_layers(arch)
        groups = layer_groups(space, arch, searchable)
        budget = _Budget.of(ctx, arch, groups, pairs)
        settings = self.config

        # FP weights, every layer at 32 bits; an elastic space's subnet gets its own BN
        # statistics first (the probe runs in eval mode)
        model = ctx.subnet(arch, recalibrated=True)
        free = settings.activations == "free"
        probe = ctx.hessian_probe(
            model, searchable, inputs=free, batches=settings.batches,
            batch_size=settings.batch_size, seed=ctx.task.seed,
        )  # fmt: skip
        quant = space.layer_quant()
        w_err = weight_errors(model, searchable, bits)
        a_err = input_errors(model, probe.layer_inputs, searchable, bits, quant) if free else None
        log = self._log_header(ctx, arch, bits, pairs, groups, probe, w_err, a_err, budget)

        def omega(estimates: Mapping[str, TraceEstimate]) -> np.ndarray:
            return sensitivities(estimates, searchable, bits, pairs, w_err, a_err)

        def allocate(estimates: Mapping[str, TraceEstimate], rounds: int) -> Candidate:
            per_layer = omega(estimates)
            problem = AllocationProblem(budget.group_omega(per_layer), budget.costs, budget.free)
            allocation = solve(problem)
            return self._candidate(ctx, arch, groups, pairs, allocation, budget, rounds)

        offered: dict[int, Candidate] = {}

        def on_round(rounds: int, estimates: Mapping[str, TraceEstimate]) -> None:
            if rounds & (rounds - 1) == 0:  # 1, 2, 4, 8, ...: the answer so far
                offered[rounds] = allocate(estimates, rounds)
                log["offers"].append(rounds)
                ctx.offer(offered[rounds], log=log)

        estimates = hutchinson_traces(
            probe, max_iter=settings.max_iter, min_iter=settings.min_iter, tol=settings.tol,
            seed=ctx.task.seed, on_round=on_round,
        )  # fmt: skip
        del probe  # its gradient graph
        rounds = max(e.iterations for e in estimates.values())
        candidate = offered.get(rounds) or allocate(estimates, rounds)
        per_layer = omega(estimates)
        _log_result(ctx, log, estimates, rounds, per_layer, candidate, searchable)
        ctx.offer(candidate, log=log)
        candidates = [candidate, *self._ratio_candidates(ctx, arch, groups, pairs, per_layer,
                                                         budget, rounds, log)]  # fmt: skip
        return SearchResult(candidates, log=log)

    def _log_header(
        self,
        ctx: Context,
        arch: Any,
        bits: Sequence[int],
        pairs: Sequence[tuple[int, int]],
        groups: Sequence[tuple[str, ...]],
        probe: Any,
        w_err: np.ndarray,
        a_err: np.ndarray | None,
        budget: _Budget,
    ) -> dict[str, Any]:
        """The search log before the traces: the choices, groups, the Hessian probe's
        settings, the quantization errors and the constraint."""
        space, settings, free = ctx.space, self.config, a_err is not None
        searchable = space.searchable_layers(arch)
        log: dict[str, Any] = {
            "arch": jsonable_arch(arch),
            "bits": list(bits),
            "activations": settings.activations,
            "activation_note": (
                "tied: a_bits = w_bits (the paper)"
                if not free
                else "free: a_bits chosen per layer, HAWQ-V2 activation term (an extension)"
            ),
            "choices": [list(p) for p in pairs],
            "groups": [list(g) for g in groups],
            "fixed_layers": space.fixed_layer_names(arch),
            "hessian": {**{k: getattr(settings, k) for k in HESSIAN_KEYS}, "images": probe.images,
                        "loss": probe.loss, "seed": ctx.task.seed},
            "weight_sq_error": {n: w_err[i].tolist() for i, n in enumerate(searchable)},
            "constraint": budget.to_dict(ctx),
            "offers": [],
        }  # fmt: skip
        if a_err is not None:
            log["input_sq_error"] = {n: a_err[i].tolist() for i, n in enumerate(searchable)}
        return log

    def _ratio_candidates(
        self,
        ctx: Context,
        arch: Any,
        groups: Sequence[tuple[str, ...]],
        pairs: Sequence[tuple[int, int]],
        per_layer: np.ndarray,
        budget: _Budget,
        rounds: int,
        log: dict[str, Any],
    ) -> list[Candidate]:
        """The ILP optimum under each of the paper's budgets ``all-min + r·(all-max −
        all-min)`` that the task's limit allows (``ILP.ipynb``), labelled ``hawq-r<r>``."""
        low, high = int(budget.costs.min(axis=1).sum()), int(budget.costs.max(axis=1).sum())
        found: list[Candidate] = []
        log["ratios"] = {}
        for r in self.config.ratios:
            limit = low + r * (high - low)
            if limit > budget.free:
                log["ratios"][f"{r:g}"] = "skipped: above the task's limit"
                continue
            problem = AllocationProblem(budget.group_omega(per_layer), budget.costs, limit)
            candidate = self._candidate(ctx, arch, groups, pairs, solve(problem), budget, rounds)
            candidate.label, candidate.meta["ratio"] = f"hawq-r{r:g}", r
            log["ratios"][f"{r:g}"] = candidate.meta["cost"]
            found.append(candidate)
        return found

    def _candidate(
        self,
        ctx: Context,
        arch: Any,
        groups: Sequence[tuple[str, ...]],
        pairs: Sequence[tuple[int, int]],
        allocation: Allocation,
        budget: _Budget,
        rounds: int,
    ) -> Candidate:
        """The full policy of ``allocation``, checked with the shared cost model."""
        policy = {
            name: LayerBits(*pairs[k]) for group, k in zip(groups, allocation.picks, strict=True)
            for name in group
        }  # fmt: skip
        policy = ctx.space.full_policy(policy, arch)
        if not ctx.feasible(policy, arch):
            raise RuntimeError("hawq: the ILP's answer is over the constraint (internal error)")
        meta = {
            "bits": list(sorted({b for p in pairs for b in p})),
            "activations": self.config.activations,
            "status": allocation.status,
            "objective": allocation.objective,
            "cost": allocation.cost + budget.fixed,
            "constraint_ratio_w8a8": (allocation.cost + budget.fixed) / budget.reference,
            "trace_rounds": rounds,
        }
        return Candidate(policy, arch, label="hawq", meta=meta)


@dataclass(frozen=True)
class _Budget:
    """The task's limit split into the fixed layers' share and the groups' (BitOPs per
    image or bits), with each group's cost per choice."""

    metric: str
    limit: float
    reference: float
    fixed: int
    costs: np.ndarray  # (groups, choices), int64
    rows: tuple[tuple[int, ...], ...]  # per group: its layers' rows among the searchable

    @classmethod
    def of(
        cls,
        ctx: Context,
        arch: Any,
        groups: Sequence[tuple[str, ...]],
        pairs: Sequence[tuple[int, int]],
    ) -> _Budget:
        limit = ctx.limit
        table = limit.table(arch)
        row = {n: i for i, n in enumerate(table.searchable)}
        per_layer = limit.pair_coefficients(pairs, arch)
        rows = tuple(tuple(row[n] for n in g) for g in groups)
        costs = np.stack([per_layer[list(r)].sum(axis=0) for r in rows])
        fixed = table.fixed_total(limit.metric)  # int: the ILP's integer re-check
        return cls(limit.metric, limit.absolute, float(limit.reference), fixed, costs, rows)

    @property
    def free(self) -> float:
        """What the searched groups may cost together."""
        return self.limit - self.fixed

    @property
    def unit(self) -> str:
        return "BitOPs" if self.metric == "bitops" else "bits"

    def group_omega(self, per_layer: np.ndarray) -> np.ndarray:
        """``(groups, choices)``: each group's ``Ω`` summed over its layers."""
        return np.stack([per_layer[list(r)].sum(axis=0) for r in self.rows])

    def to_dict(self, ctx: Context) -> dict[str, Any]:
        return {
            "text": ctx.constraint.text,
            "metric": self.metric,
            "unit": self.unit,
            "limit": self.limit,
            "reference_w8a8": self.reference,
            "fixed_layers": self.fixed,
            "for_searched": self.free,
            "group_costs": self.costs.tolist(),
        }


def _pair(bits: LayerBits) -> tuple[int, int]:
    return bits.w_bits, bits.a_bits


__all__ = ["HAWQ", "HAWQConfig", "input_errors", "layer_groups", "weight_errors"]


def sensitivities(
    estimates: Mapping[str, TraceEstimate],
    searchable: Sequence[str],
    bits: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    w_err: np.ndarray,
    a_err: np.ndarray | None,
) -> np.ndarray:
    """Ω per layer and (weight, activation) choice, shape ``(layers, pairs)``: the
    normalised weight Hessian trace times the weight's squared quantization error at the
    pair's weight bits, plus (free activations) the input's trace times the input's error."""
    index = {b: j for j, b in enumerate(bits)}
    per_layer = np.zeros((len(searchable), len(pairs)))
    for i, name in enumerate(searchable):
        tr_w = estimates[f"{name}:weight"].normalised
        for k, (w, a) in enumerate(pairs):
            value = tr_w * w_err[i, index[w]]
            if a_err is not None:
                value += estimates[f"{name}:input"].normalised * a_err[i, index[a]]
            per_layer[i, k] = value
    return per_layer


def _log_result(
    ctx: Context,
    log: dict[str, Any],
    estimates: Mapping[str, TraceEstimate],
    rounds: int,
    per_layer: np.ndarray,
    candidate: Candidate,
    searchable: Sequence[str],
) -> None:
    """The search log's traces, Ω, the ILP's answer and the images used; a warning for
    negative trace estimates (kept, as HAWQ does)."""
    negative = [t for t, e in estimates.items() if e.trace < 0]
    if negative:
        ctx.log.warning("hawq: negative trace estimates (kept, as HAWQ does): %s", negative)
    log.update(
        traces={t: e.to_dict() for t, e in estimates.items()},
        negative_traces=negative,
        rounds=rounds,
        omega={n: per_layer[i].tolist() for i, n in enumerate(searchable)},
        ilp={k: candidate.meta[k] for k in ("status", "objective", "cost")},
        bits_chosen={n: list(_pair(candidate.policy[n])) for n in searchable},
        samples=ctx.budget.samples,
    )
