"""``ompq``: Orthogonal Mixed Precision Quantization (Ma et al., AAAI 2023, arXiv 2109.07865).

One forward pass of the FP checkpoint on ONE training batch (``benchmark.arena.fixed_batch``,
charged to the budget), no training. BatchNorm normalises with the batch's own statistics,
as the original does (it never calls ``eval()``); option ``bn="running"`` takes the running
statistics in eval mode instead (then an elastic space's reference subnet gets its own
first, ``ctx.subnet(..., recalibrated=True)``, charged: the FP supernet's are not the
subnet's). The two modes can order the objective's coefficients differently.

1. **Feature taps**, where the space says its layers' features are
   (:meth:`~benchmark.arena.SearchSpace.feature_taps`), hooked; one LP variable each. Per
   residual block, every conv's output after its BN + activation, the block's last
   conv being tapped at the block output (after the add / final activation):

   - ResNet ``BasicBlock`` (``conv1, bn1, conv2, bn2``; resnet20's ``layerX.Y``):
     ``relu(bn1(conv1 x))`` → sets ``conv1``; block output → sets ``conv2`` *and* any
     other searchable layer inside the block (a shortcut conv shares conv2's bits);
   - inverted residual ``MBConv`` (``[pw_expand, expand_bn,] dw, dw_bn, pw_project, act``;
     mbv3-cifar's ``blocks.N``): ``act(expand_bn(pw_expand x))`` → ``pw_expand``;
     ``act(dw_bn(dw ·))`` (before SE) → ``dw``; block output → ``pw_project`` (the
     original's per-conv taps for MobileNetV2);
   - ``conv, bn, act`` modules (mbv3's head) → their output sets ``conv``.

   A searchable layer no declared block covers gets a tap of its own (its raw
   output); a space that declares no block layout runs entirely in this fallback,
   and the log says so (``tap_mode``). Layers fixed by the space's convention
   (``space.fixed_layer_names()``: first conv, classifier) are never tapped.
2. **ORM** (centred linear CKA) between taps, ``γ``, ``θ = exp(−β γ)``, suffix-mean
   objective (:mod:`methods.ompq_orm`).
3. **Constraint from the task**: ``Σ_taps u_t · b_t ≤ limit − cost of the fixed layers``,
   with ``limit = ctx.limit`` (the task's absolute limit) and ``u_t = Σ MACs·a_bits``
   (BitOPs per weight bit) or ``Σ params`` (bits per weight bit) over the tap's layers and
   the fixed layers' cost both from the space's cost table (``space.cost_table(arch)``).
   Activation bits are uniform (``a_bits``, default 8).
4. **Bits**: the paper's LP in ``x = b/8`` with bounds ``[min, max]/8`` of the space's
   weight-bit choices (resnet20 {2,3,4,8} → [0.25, 1]; mbv3-cifar {2,3,4} → [0.25, 0.5];
   ``bit_bounds`` narrows them, e.g. ``[4, 8]`` for the paper's QAT [0.5, 1]), solved by
   PuLP/CBC, then floor/ceil rounding onto the allowed choices: each variable goes to the
   allowed bit-width just below or above its LP value, the combination leaving the least
   budget unused winning (the original's DFS_bit criterion; ties: higher objective).
   Variant ``solver="ilp"``: the exact integer program over the allowed bits (label
   ``ompq-ilp``); ``"both"`` gives both candidates.

Candidates: the policy for ``beta`` (default 10, the paper's ResNet-18 QAT value: no CIFAR
value was published), then (options) one per extra ``betas`` and the ORM-off ablation
(β = 0, every θ = 1), each labelled, ``meta`` holding β and the variant. The log keeps the
ORM, γ, θ, the tap → layer mapping and each solve's status and objective. A limit the
lowest bits already exceed is refused before the run (:meth:`OMPQ.unreachable`), and by the
search itself with the same line before the forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, Strict, field_validator
from torch import Tensor, nn

from benchmark.arena import (
    Candidate,
    Context,
    FeatureTap,
    LayerBits,
    Method,
    SearchResult,
    SearchSpace,
    TaskLimit,
    fixed_batch,
    jsonable_arch,
    method_config,
)
from methods import register_method
from methods.ompq_orm import (
    BitProblem,
    Solution,
    gamma,
    importance,
    objective_coefs,
    orm_from_grams,
    round_floor_ceil,
    solve_ilp,
    solve_lp,
)


# --- features at the space's taps --------------------------------------------------
def feature_gram(features: Tensor) -> np.ndarray:
    """``(HX)(HX)ᵀ`` of features flattened per sample, scaled to unit Frobenius norm of
    ``HX`` (CKA is scale-invariant; this keeps tiny or huge activations well inside
    float32). Centring is in float64, the product in float32. Features constant over the
    batch (centred norm ≤ 1e-6 of the raw norm: float32 round-off) give a zero matrix,
    which :func:`~methods.ompq_orm.orm_from_grams` reports as degenerate.
    """
    x = features.detach().reshape(features.shape[0], -1).double()
    centred = x - x.mean(dim=0, keepdim=True)
    norm, raw = float(centred.norm()), float(x.norm())
    n = x.shape[0]
    if not norm > 1e-6 * raw:
        return np.zeros((n, n))
    unit = (centred / norm).float()
    return (unit @ unit.T).double().cpu().numpy()


@torch.no_grad()
def tap_grams(
    model: nn.Module, taps: Sequence[FeatureTap], images: Tensor, *, batch_stats: bool = False
) -> list[np.ndarray]:
    """One forward of ``images``; each tap's centred linear Gram (N × N, float64).

    ``batch_stats``: BatchNorm normalises with the batch's own statistics (train mode, as
    the original, which never calls ``eval()``; the model's running statistics are put back
    afterwards), else with its running statistics (eval mode). Features are centred over
    the batch before the product (:func:`feature_gram`), so the Gram is
    ``(HX)(HX)ᵀ = H X Xᵀ H``, the ORM's centring done where it loses no digits. Grams are
    formed inside the hooks so that no feature map is kept. A tap whose module does not run
    exactly once is an error.
    """
    grams: dict[str, list[np.ndarray]] = {t.name: [] for t in taps}

    def hook(tap: FeatureTap, post: Callable[[Tensor], Tensor]) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            grams[tap.name].append(feature_gram(post(output)))

        return record

    handles = [
        model.get_submodule(t.module).register_forward_hook(hook(t, t.post_fn(model))) for t in taps
    ]
    was_training = model.training
    kept = {k: v.clone() for k, v in model.state_dict().items() if _bn_buffer(k)}
    model.train(batch_stats)
    try:
        model(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        if kept:
            model.load_state_dict(kept, strict=False)
    bad = [name for name, got in grams.items() if len(got) != 1]
    if bad:
        raise RuntimeError(f"OMPQ tap {bad[0]!r} ran {len(grams[bad[0]])} times in one forward")
    return [grams[t.name][0] for t in taps]


def _bn_buffer(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


# --- the constraint -----------------------------------------------------------------
@dataclass(frozen=True)
class CostBudget:
    """The task's limit split into the fixed layers' share and the taps' (BitOPs or bits)."""

    metric: str
    limit: float  # absolute: BitOPs per image or bits of weight storage
    reference: float  # the space's W8A8 value of the metric (relative limits' base)
    fixed: float  # cost of the layers OMPQ does not set
    unit_costs: np.ndarray  # per tap: cost of one weight bit

    @property
    def unit(self) -> str:
        return "BitOPs" if self.metric == "bitops" else "bits"

    def ratio(self, value: float) -> float:
        """``value`` (this metric's unit) as a ratio to the space's W8A8 reference."""
        return value / self.reference

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "unit": self.unit,
            "limit": self.limit,
            "reference_w8a8": self.reference,
            "fixed_layers": self.fixed,
            "for_taps": self.limit - self.fixed,
            "unit_costs": self.unit_costs.tolist(),
        }


def task_budget(ctx: Context, arch: Any, taps: Sequence[FeatureTap], a_bits: int) -> CostBudget:
    """Per-tap unit costs and the fixed layers' cost (the space's cost table) under the
    task's limit (``ctx.limit``)."""
    limit = ctx.limit
    metric, table = limit.metric, limit.table(arch)
    if _governed(taps) != set(table.searchable):
        raise RuntimeError("ompq: the taps do not cover the searchable layers (internal error)")
    units = [sum(table.weight_bit_cost(n, metric, a_bits) for n in t.layers) for t in taps]
    return CostBudget(
        metric, limit.absolute, float(limit.reference), limit.fixed(arch), np.array(units, float)
    )


# --- the method ---------------------------------------------------------------------
NonNegative = Annotated[float, Strict(), Field(ge=0)]


@method_config
class OMPQConfig:
    """OMPQ's settings (``--method-options '{"ompq": {...}}'`` or ``[methods.ompq]``).

    Attributes:
        beta: β of ``θ = exp(−β γ)`` (default 10, the paper's ResNet QAT setting).
        betas: extra β values, one candidate each (``ompq-beta<β>``); one number or a list.
        orm_off: add the ORM-off ablation (β = 0), candidate ``ompq-orm-off``.
        solver: ``"lp"`` (the paper: LP + floor/ceil rounding, ``ompq``), ``"ilp"`` (exact
            integer program, ``ompq-ilp``) or ``"both"``.
        a_bits: uniform activation bits of the searched layers (default 8).
        batch_size: images in the one FP forward pass (default 32; CKA centres over the
            batch, so at least 2).
        batch_seed: which images (default: the task seed).
        bit_bounds: ``[low, high]`` weight bits; the allowed choices are the space's
            ``bit_choices`` inside them (default: all of them).
        bn: how BatchNorm normalises in the feature pass: ``"batch"`` (default: the batch's
            own statistics, as the original, which never calls ``eval()``) or ``"running"``
            (the running statistics in eval mode; an elastic space's subnet is
            recalibrated first, charged).
    """

    beta: NonNegative = 10.0
    betas: tuple[NonNegative, ...] = ()
    orm_off: Annotated[bool, Strict()] = False
    solver: Literal["lp", "ilp", "both"] = "lp"
    a_bits: Annotated[int, Strict(), Field(ge=1, le=31)] = 8
    batch_size: Annotated[int, Strict(), Field(ge=2)] = 32
    batch_seed: Annotated[int, Strict(), Field(ge=0)] | None = None
    bit_bounds: tuple[Annotated[int, Strict(), Field(ge=1, le=31)], ...] | None = None
    bn: Literal["batch", "running"] = "batch"

    @field_validator("betas", mode="before")
    @classmethod
    def _one_beta(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) and not isinstance(value, bool) else value

    def __post_init__(self) -> None:
        bounds = self.bit_bounds
        if bounds is not None and (len(bounds) != 2 or bounds[0] > bounds[1]):
            raise ValueError(f"bit_bounds must be [low, high], got {list(bounds)}")


@register_method
class OMPQ(Method):
    """OMPQ bit allocation on the space's reference architecture (no training).

    Settings: :class:`OMPQConfig`.
    """

    name = "ompq"
    searches = "bits"
    config_class = OMPQConfig

    # --- pieces ---------------------------------------------------------------------
    def weight_choices(self, space: SearchSpace) -> tuple[int, ...]:
        """The allowed weight bits: the space's choices inside ``bit_bounds``."""
        lo, hi = self.config.bit_bounds or (min(space.bit_choices), max(space.bit_choices))
        choices = tuple(sorted(b for b in space.bit_choices if lo <= b <= hi))
        if not choices:
            raise ValueError(
                f"ompq: no bit choice of {space.name} {space.bit_choices} in bit_bounds {lo}-{hi}"
            )
        return choices

    def _variants(self) -> list[tuple[str, float]]:
        """``(label suffix, β)`` of each ORM setting, the main β first."""
        runs = [("", self.config.beta)]
        runs += [(f"-beta{b:g}", b) for b in self.config.betas if b != self.config.beta]
        if self.config.orm_off:
            runs.append(("-orm-off", 0.0))
        return runs

    @classmethod
    def unreachable(cls, config: OMPQConfig, limit: TaskLimit) -> str | None:
        """Before the run: the cheapest policy OMPQ can return (every searched layer at
        the lowest weight bits and ``a_bits``) over the limit."""
        space = limit.space
        arch = space.reference_arch
        try:
            low = cls(config).weight_choices(space)[0]
            policy = {n: LayerBits(low, config.a_bits) for n in space.searchable_layers(arch)}
            if limit.met(policy, arch):
                return None
            ratio = limit.ratio_of(limit.cost(policy, arch))
        except ValueError:  # bits the space does not allow: the search says so itself
            return None
        hint = ""
        if limit.metric == "bitops" and config.a_bits > low:
            hint = f""", or lower a_bits (--method-options '{{"ompq": {{"a_bits": {low}}}}}')"""
        return (
            f"its cheapest policy, every searched layer at W{low}A{config.a_bits}, costs "
            f"{ratio:.4f}x W8A8; loosen the limit to at least {ratio:.4f}{hint}"
        )

    # --- search ---------------------------------------------------------------------
    def search(self, ctx: Context) -> SearchResult:
        space, arch = ctx.space, ctx.space.reference_arch
        choices = self.weight_choices(space)
        self.refuse_unreachable(ctx)  # before the forward pass
        # FP weights; with running BN statistics, an elastic space's subnet gets its own
        # first (the supernet's are not the subnet's)
        model = ctx.subnet(arch, recalibrated=self.config.bn == "running")
        taps, mode = space.feature_taps(model, arch)
        note = TAP_NOTES[mode](sorted(_own_taps(taps)))
        if mode != "blocks":
            ctx.log.info("ompq: %s", note)
        budget = task_budget(ctx, arch, taps, self.config.a_bits)
        orm, log = self._orm(ctx, model, taps)
        gammas = gamma(orm)
        log.update(
            arch=jsonable_arch(arch),
            tap_mode=mode,
            tap_note=note,
            taps=[t.to_dict() for t in taps],
            fixed_layers=[n for n in space.layer_names(arch) if n not in _governed(taps)],
            orm=orm.tolist(),
            gamma=gammas.tolist(),
            a_bits=self.config.a_bits,
            weight_bits=list(choices),
            x_bounds=[choices[0] / 8, choices[-1] / 8],
            constraint={"text": ctx.constraint.text, **budget.to_dict()},
            runs=[],
        )
        candidates = []
        for suffix, beta in self._variants():
            for variant, solution, run_log in self._solve(beta, gammas, budget, choices):
                label = f"ompq{'-ilp' if variant == 'ilp' else ''}{suffix}"
                candidate = self._candidate(ctx, arch, taps, budget, solution, label, variant)
                candidate.meta.update(beta=beta, orm=beta > 0, a_bits=self.config.a_bits)
                run_log.update(
                    label=label,
                    bits={t.name: b for t, b in zip(taps, solution.bits, strict=True)},
                    constraint_ratio_w8a8=candidate.meta["constraint_ratio_w8a8"],
                )
                log["runs"].append(run_log)
                candidates.append(candidate)
                ctx.offer(*candidates, log=log)  # the answer so far, if the budget ends it
        return SearchResult(candidates, log=log)

    def _orm(
        self, ctx: Context, model: nn.Module, taps: Sequence[FeatureTap]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The one forward pass (charged) and the ORM of its taps; the log's batch part."""
        seed = ctx.task.seed if self.config.batch_seed is None else int(self.config.batch_seed)
        images, _ = fixed_batch(ctx.train_set, self.config.batch_size, seed)
        grams = tap_grams(model, taps, images.to(ctx.device), batch_stats=self.config.bn == "batch")
        ctx.budget.charge(self.config.batch_size)
        orm, degenerate = orm_from_grams(grams)
        names = [taps[i].name for i in degenerate]
        if names:
            ctx.log.warning("ompq: taps constant over the batch (ORM 0 by convention): %s", names)
        return orm, {
            "batch": {"size": self.config.batch_size, "seed": seed, "bn": self.config.bn},
            "degenerate_taps": names,
        }

    def _candidate(
        self,
        ctx: Context,
        arch: Any,
        taps: Sequence[FeatureTap],
        budget: CostBudget,
        solution: Solution,
        label: str,
        variant: str,
    ) -> Candidate:
        """The full policy of ``solution``, checked with the shared cost model."""
        policy = {
            n: LayerBits(int(b), self.config.a_bits)
            for t, b in zip(taps, solution.bits, strict=True)
            for n in t.layers
        }
        policy = ctx.space.full_policy(policy, arch)
        over = ctx.limit.check(policy, arch)
        if over is not None:
            raise RuntimeError(f"ompq: {label} {over} (internal error)")
        value = ctx.limit.cost(policy, arch)
        meta = {
            "variant": "ilp" if variant == "ilp" else "lp+floor/ceil",
            "objective": solution.objective,
            "constraint_ratio_w8a8": budget.ratio(float(value)),
        }
        return Candidate(policy, arch, label=label, meta=meta)

    def _solve(
        self, beta: float, gammas: np.ndarray, budget: CostBudget, choices: tuple[int, ...]
    ) -> list[tuple[str, Solution, dict[str, Any]]]:
        """The LP + rounding and/or ILP answers for one β, with their logs."""
        raw, scaled = importance(gammas, beta)
        coefs = objective_coefs(scaled)
        problem = BitProblem(coefs, budget.unit_costs, budget.limit - budget.fixed, choices)
        base = {
            "beta": beta,
            "theta": raw.tolist(),
            "theta_scaled": scaled.tolist(),
            "objective_coefs": coefs.tolist(),
        }
        lp_bits, lp_info = solve_lp(problem)
        rounded = round_floor_ceil(problem, lp_bits)
        base.update(lp={**lp_info, "bits": lp_bits.tolist()}, rounding=rounded.info)
        out = []
        if self.config.solver in ("lp", "both"):
            out.append(("lp", rounded, {**base, "variant": "lp", "objective": rounded.objective}))
        if self.config.solver in ("ilp", "both"):
            exact = solve_ilp(problem, incumbent=rounded.bits)
            ilp_log = {
                **base,
                "variant": "ilp",
                "ilp": exact.info,
                "objective": exact.objective,
                "rounded_lp_objective": rounded.objective,
            }
            out.append(("ilp", exact, ilp_log))
        return out


def _governed(taps: Sequence[FeatureTap]) -> set[str]:
    return {n for t in taps for n in t.layers}


def _own_taps(taps: Sequence[FeatureTap]) -> list[str]:
    """Layers tapped at their own raw output (outside every declared block)."""
    return [t.layers[0] for t in taps if t.module == t.layers[0]]


TAP_NOTES: dict[str, Callable[[list[str]], str]] = {
    "blocks": lambda _: "every tap from a recognised block (BasicBlock / MBConv / conv-bn-act)",
    "mixed": lambda names: f"layers outside recognised blocks, tapped at their own output: {names}",
    "fallback": lambda _: (
        "no known block structure: one tap per searchable layer, at its raw output"
    ),
}
"""The log's human-readable line for each tap mode of ``SearchSpace.feature_taps``."""
