"""The ``dnas`` method: options, the search (super-net, alternating updates, final
sampling) and its log. See :mod:`methods.dnas` for what is kept from the paper."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmark.arena import (
    BudgetExceeded,
    Candidate,
    Context,
    DoReFaConfig,
    Method,
    PACTConfig,
    Phase,
    QuantConfig,
    SearchResult,
    SearchSpace,
    TaskLimit,
    apply_policy,
)
from methods import register_method
from methods.dnas.config import DNASConfig
from methods.dnas.loss import LossControl
from methods.dnas.selection import Sample, choose, unique
from methods.dnas.steps import EpochStats, SearchState, Steering, theta_step, weight_step
from methods.dnas.supernet import SuperNet

QUANT = QuantConfig(weight=DoReFaConfig(), act=PACTConfig(), per_bit_weight=True, per_bit_act=True)
"""DoReFa weights and PACT activations (spec: Quantizers [unverified]), one PACT clip per
bit-width (each branch's own activation quantizer; DoReFa has no state)."""


@dataclass
class SearchRun:
    """One search's state between :meth:`DNAS.prepare`, :meth:`DNAS.train_supernet` and
    :meth:`DNAS.finish`.

    Attributes:
        variant: what runs (weights, categorical, bits, how a layer computes).
        arch: the architecture searched (the space's reference).
        net / control / state: the super-net, the loss's β and γ, τ and the noise.
        limit / ref_value: the task's absolute limit and the space's W8A8 value of the
            constrained metric (BitOPs per image or weight bits).
        start_cost: the expected cost at uniform θ.
        epochs: one record per finished epoch (the log's ``epochs``).
    """

    variant: dict[str, Any]
    arch: Any
    net: SuperNet
    control: LossControl
    state: SearchState
    limit: float
    ref_value: float
    start_cost: float
    epochs: list[dict[str, Any]] = field(default_factory=list)


@register_method
class DNAS(Method):
    """DNAS (Wu et al. 2018) on the space's reference architecture.

    Settings: :class:`~methods.dnas.config.DNASConfig`.
    """

    name = "dnas"
    searches = "bits"
    config_class = DNASConfig

    @classmethod
    def prepare_config(cls, config: DNASConfig, spaces: Sequence[SearchSpace]) -> DNASConfig:
        """``bits`` checked against each space before the run starts (one-line
        ``ValueError``: the run exits 2 with it)."""
        for space in spaces:
            _check_bits_allowed(config.bits, space)
        return config

    # --- set-up -----------------------------------------------------------------------
    def _variant(self, ctx: Context) -> dict[str, Any]:
        weights = self.config.weights
        categorical = self.config.categorical or ("factorised" if weights == "shared" else "pairs")
        bits = self.config.bits or tuple(sorted(ctx.space.bit_choices))
        _check_bits_allowed(bits, ctx.space)
        return {
            "weights": weights,
            "categorical": categorical,
            "bits": bits,
            "layer_op": (
                "one conv per layer (set_bit_mixture)"
                if (weights, categorical) == ("shared", "factorised")
                else "one conv per activation bit-width (set_branch_mixture)"
            ),
        }

    @classmethod
    def unreachable(cls, config: DNASConfig, limit: TaskLimit) -> str | None:
        """Before the run: the cheapest architecture the super-net can sample (every
        searched layer at the lowest candidate bit-width, W and A) over the limit."""
        space = limit.space
        arch = space.reference_arch
        bits = config.bits or tuple(sorted(space.bit_choices))
        try:
            _check_bits_allowed(bits, space)
        except ValueError:  # bits the space does not allow: the config check says so
            return None
        low = min(bits)
        policy = space.uniform_policy(low, low, arch)
        if limit.met(policy, arch):
            return None
        ratio = limit.ratio_of(limit.cost(policy, arch))
        hint = ""
        if config.bits and min(space.bit_choices) < low:
            offered = sorted({*config.bits, *(b for b in space.bit_choices if b < low)})
            hint = (
                f""", or offer lower bits (--method-options '{{"dnas": {{"bits": {offered}}}}}')"""
            )
        return (
            f"its cheapest architecture, every searched layer at W{low}A{low} (the lowest "
            f"candidate), costs {ratio:.4f}x W8A8; loosen the limit to at least {ratio:.4f}"
            f"{hint}"
        )

    def _weight_recipe(self, ctx: Context, recipe: DNASConfig):
        base = ctx.preset.finetune
        return dataclasses.replace(
            base,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size or base.batch_size,
            lr=recipe.lr or base.lr,
            max_steps=None,
        )

    # --- search -----------------------------------------------------------------------
    def search(self, ctx: Context) -> SearchResult:
        run = self.prepare(ctx)
        self.train_supernet(ctx, run)
        return self.finish(ctx, run)

    def prepare(self, ctx: Context) -> SearchRun:
        """The super-net on the reference architecture, warm-started from the FP checkpoint
        (fixed layers at their convention's bits), θ at zero, the loss's coefficients."""
        recipe = self.config
        space, arch = ctx.space, ctx.space.reference_arch
        variant = self._variant(ctx)
        self.refuse_unreachable(ctx)  # before any training
        ctx.log.info("dnas: %s", variant)
        limit = ctx.limit
        table, metric = limit.table(arch), limit.metric
        model = ctx.subnet(arch, None, quant=QUANT)
        apply_policy(model, space.fixed_policy(arch))
        net = SuperNet(
            model,
            table,
            table.searchable,
            variant["bits"],
            variant["categorical"],
            variant["weights"],
            metric,
        )
        start_cost = expected_cost(net)
        control = LossControl.create(
            self.config.beta,
            self.config.gamma,
            start_cost=start_cost,
            gamma_start=recipe.gamma_start,
            rate=recipe.gamma_rate,
        )
        generator = torch.Generator().manual_seed(ctx.rng.randrange(2**31))
        state = SearchState(tau=recipe.tau0, generator=generator)
        return SearchRun(
            variant, arch, net, control, state, limit.absolute, limit.reference, start_cost
        )

    def train_supernet(self, ctx: Context, run: SearchRun) -> None:
        """The recipe's epochs through ``ctx.train``: weights on 80% of the train split (θ
        fixed; ``weight_fraction`` of it), then θ on the other 20% (weights fixed), then τ
        annealed, each epoch."""
        recipe = self.config
        net, state, control = run.net, run.state, run.control
        weight_data, theta_data = ctx.split(0.8)
        if recipe.weight_fraction < 1:
            weight_data = ctx.subset(weight_data, recipe.weight_fraction)
        weight_recipe = self._weight_recipe(ctx, recipe)
        theta_opt = torch.optim.Adam(
            net.theta.parameters(), lr=recipe.theta_lr, weight_decay=recipe.theta_weight_decay
        )

        generator = torch.Generator().manual_seed(ctx.rng.randrange(2**31))

        def steer(share: float) -> None:  # within an epoch: γ to the draws' quantile
            costs = net.sampled_costs(FEASIBLE_DRAWS, generator)
            quantile = float(torch.quantile(costs, recipe.feasible_target))
            control.update(expected_cost(net), run.limit, steer=quantile, share=share)

        steering = Steering(math.ceil(len(theta_data) / weight_recipe.batch_size), steer)

        def end_of_epoch(epoch: int) -> None:
            run.epochs.append(self._epoch_record(ctx, run, epoch))
            steering.end_epoch()  # the epoch's last θ steps steer too
            state.tau = recipe.tau0 * math.exp(-recipe.tau_decay * (epoch + 1))
            state.stats = EpochStats()

        phase = Phase(
            theta_data,
            theta_opt,
            theta_step(net, state, control, steering),
            every="epoch",
            batch_size=weight_recipe.batch_size,
            name="dnas-theta",
        )
        try:
            ctx.train(
                net.module,
                weight_step(net, state, weight_recipe.label_smoothing),
                recipe=weight_recipe,
                data=weight_data,
                phases=[phase],
                on_epoch=end_of_epoch,
                desc="dnas-weights",
            )
        finally:
            net.clear()
            net.set_weights_trainable(True)

    def finish(self, ctx: Context, run: SearchRun) -> SearchResult:
        """Sample from ``P_θ`` and choose the candidates: the first feasible draws
        (``select="sampled"``) or the best by the proxy score (``"proxy"``)."""
        metric, limit, ref_value = ctx.constraint.metric, run.limit, run.ref_value
        share = feasible_share(draw_costs(run.net, ctx.rng.randrange(2**31)), run.limit)
        ctx.log.info("dnas: %.1f%% of %d draws from P_theta meet the limit", 100 * share,
                     FEASIBLE_DRAWS)  # fmt: skip
        samples = self._final_samples(ctx, run.net, run.arch, ref_value)
        feasible = [s for s in samples if s.feasible]
        if not feasible:
            cheapest = min(samples, key=lambda s: s.cost)
            raise ValueError(
                f"dnas: none of the {len(samples)} architectures sampled from P_theta meets "
                f"{ctx.constraint.text} (limit {limit:.6g} {metric}, ratio "
                f"{limit / ref_value:.4f} to W8A8); the cheapest reached {cheapest.cost:.6g} "
                f"(ratio {cheapest.ratio:.4f}, {cheapest.name}). Search longer, use "
                "gamma='auto' or a larger gamma, or loosen the limit."
            )
        if self.config.select == "proxy":
            self._score(ctx, run, feasible)
            chosen = choose(samples, self.config.candidates)
            if not chosen:  # what was offered (an epoch's feasible argmax) is evaluated
                raise BudgetExceeded("dnas: the budget ran out before any sample was scored")
        else:
            chosen = [("sampled", s) for s in feasible[: self.config.candidates]]
            for _, sample in chosen:
                sample.weights = run.net.plain_state(sample.policy)
        candidates = self._candidates(run, chosen)
        log = {
            **self._log_so_far(run),
            "constraint": {
                "text": ctx.constraint.text,
                "metric": metric,
                "limit": limit,
                "reference_w8a8": ref_value,
            },
            "feasible_share": share,
            "feasible_draws": FEASIBLE_DRAWS,
            "samples": [s.to_dict() for s in samples],
            "chosen": [{"role": role, "name": s.name} for role, s in chosen],
        }
        return SearchResult(candidates, log=log)

    def _log_so_far(self, run: SearchRun, samples: list[Sample] | None = None) -> dict[str, Any]:
        """The search log's parts known while the search runs (offered with each answer,
        so a budget that ends the search keeps them); ``samples``: those scored so far."""
        log = {
            "variant": run.variant,
            "recipe": dataclasses.asdict(self.config),
            "sources": SOURCES,
            "start_expected_cost": run.start_cost,
            "select": self.config.select,
            "loss": run.control.to_dict(),
            "epochs": run.epochs,
        }
        if samples is not None:
            log["samples"] = [s.to_dict() for s in samples if s.val_top1 is not None]
        return log

    # --- per epoch ----------------------------------------------------------------------
    def _epoch_record(self, ctx: Context, run: SearchRun, epoch: int) -> dict[str, Any]:
        """θ, τ and the expected cost after ``epoch``: logged, reported, and the argmax
        policy offered when it is feasible."""
        net, control, state, arch = run.net, run.control, run.state, run.arch
        limit, ref_value = run.limit, run.ref_value
        expected = expected_cost(net)
        argmax = ctx.space.full_policy(net.argmax_policy(), arch)
        argmax_cost = float(net.table.total(argmax, net.metric))
        feasible = ctx.feasible(argmax, arch)
        costs = draw_costs(net, ctx.rng.randrange(2**31))
        share = feasible_share(costs, limit)
        quantile = float(torch.quantile(costs, self.config.feasible_target))
        record = {
            "epoch": epoch,
            "tau": state.tau,
            **control.to_dict(),
            "expected_cost": expected,
            "expected_cost_ratio": expected / ref_value,
            "argmax_cost_ratio": argmax_cost / ref_value,
            "argmax_feasible": feasible,
            "feasible_share": share,
            "quantile_cost": quantile,
            "quantile_cost_ratio": quantile / ref_value,
            **state.stats.summary(),
            "theta": net.theta_table(),
        }
        ctx.log.info(
            "dnas epoch %d: tau %.3f beta %.4g gamma %.4g E[cost] ratio %.4f (limit %.4f), "
            "argmax ratio %.4f%s, %.0f%% of draws feasible (%.0f%% quantile ratio %.4f)",
            epoch,
            state.tau,
            control.beta,
            control.gamma,
            expected / ref_value,
            limit / ref_value,
            argmax_cost / ref_value,
            " (offered)" if feasible else "",
            100 * share,
            100 * self.config.feasible_target,
            quantile / ref_value,
        )
        ctx.report(**{k: v for k, v in record.items() if k != "theta"}, theta=record["theta"])
        if feasible:
            weights = net.plain_state(argmax)
            ctx.offer(
                Candidate(
                    argmax,
                    arch,
                    label="dnas-argmax",
                    weights=weights,
                    quant=QUANT,
                    meta={"epoch": epoch, "cost_ratio_w8a8": argmax_cost / ref_value},
                ),
                log=self._log_so_far(run),
            )
        return record

    # --- the end ------------------------------------------------------------------------
    def _final_samples(
        self, ctx: Context, net: SuperNet, arch: Any, ref_value: float
    ) -> list[Sample]:
        """``samples`` policies drawn from ``P_θ`` (plus its argmax for ``"proxy"``),
        without repeats, in draw order, costed with the space's cost table."""
        generator = torch.Generator().manual_seed(ctx.rng.randrange(2**31))
        drawn = [(f"sample{i}", net.sample_policy(generator)) for i in range(self.config.samples)]
        if self.config.select == "proxy":
            drawn.append(("argmax", net.argmax_policy()))
        samples = []
        for name, policy in drawn:
            full = ctx.space.full_policy(policy, arch)
            cost = float(net.table.total(full, net.metric))
            samples.append(
                Sample(
                    name,
                    full,
                    cost,
                    cost / ref_value,
                    ctx.feasible(full, arch),
                    net.log_prob(policy),
                )
            )
        return unique(samples)

    def _score(self, ctx: Context, run: SearchRun, samples: list[Sample]) -> None:
        """Validation top-1 of each feasible sample with the super-net's weights (BN
        recalibrated; charged), until the budget runs out; its state dict is kept. After
        each, the candidates so far are offered (the answer if the budget ends it)."""
        for i, sample in enumerate(samples):
            if ctx.budget.exhausted():
                ctx.log.warning("dnas: budget spent after scoring %d samples", i)
                return
            model = ctx.space.build(run.arch, sample.policy, QUANT)
            model.load_state_dict(run.net.plain_state(sample.policy))
            sample.val_top1 = ctx.score(model.to(ctx.device), seed=i)
            sample.weights = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
            ctx.report(sample=sample.name, val_top1=sample.val_top1, cost_ratio=sample.ratio)
            chosen = choose(samples, self.config.candidates)
            ctx.offer(*self._candidates(run, chosen), log=self._log_so_far(run, samples))

    def _candidates(self, run: SearchRun, chosen: list[tuple[str, Sample]]) -> list[Candidate]:
        return [self._candidate(run.arch, role, s, run.variant, run.control) for role, s in chosen]

    def _candidate(
        self,
        arch: Any,
        role: str,
        sample: Sample,
        variant: dict[str, Any],
        control: LossControl,
    ) -> Candidate:
        meta = {
            "role": role,
            "sample": sample.name,
            "proxy_val_top1": sample.val_top1,
            "cost_ratio_w8a8": sample.ratio,
            "log_prob": sample.log_prob,
            "weights": variant["weights"],
            "categorical": variant["categorical"],
            **control.to_dict(),
        }
        label = {"most-accurate": "dnas-accurate", "most-efficient": "dnas-efficient"}.get(
            role, f"dnas-{sample.name}"
        )
        return Candidate(
            sample.policy, arch, label=label, weights=sample.weights, quant=QUANT, meta=meta
        )


FEASIBLE_DRAWS = 1000
"""Policies drawn from ``P_θ`` to measure the share that meets the limit (after each epoch
and at the end; the standard error of a share near 0.9 is about 1 point)."""


def draw_costs(net: SuperNet, seed: int) -> torch.Tensor:
    """The costs of :data:`FEASIBLE_DRAWS` policies drawn from ``P_θ`` (BitOPs per image or
    weight bits, float64)."""
    return net.sampled_costs(FEASIBLE_DRAWS, torch.Generator().manual_seed(seed))


def expected_cost(net: SuperNet) -> float:
    """The expected cost under ``P_θ`` now (BitOPs per image or weight bits), no gradient."""
    with torch.no_grad():
        return float(net.expected_cost(net.probs()))


def feasible_share(costs: torch.Tensor, limit: float) -> float:
    """The share of ``costs`` at most ``limit`` (the protocol's 1e-9 round-off)."""
    return float((costs <= limit * (1 + 1e-9)).double().mean())


def _check_bits_allowed(bits: Sequence[int] | None, space: SearchSpace) -> None:
    """A one-line ``ValueError`` when ``bits`` has a bit-width ``space`` cannot run."""
    allowed = set(space.allowed_bits())
    if bits is not None and not set(bits) <= allowed:
        raise ValueError(
            f"bits {list(bits)} are not all allowed on {space.name} (allowed: {sorted(allowed)})"
        )


SOURCES = {
    "paper": "Wu et al. 2018, arXiv 1812.00090; only its abstract could be read here",
    "super-net, Gumbel-softmax masks, multiplicative loss, 80/20 alternation, sampling from "
    "P_theta": "docs/methods/dnas.md, from the paper [unverified]",
    "tau0=5, tau_decay=0.045/epoch, theta Adam lr 0.01 wd 5e-4, gamma_start 0.6": (
        "FBNet (arXiv 1812.03443) as the spec recalls it [unverified for DNAS]"
    ),
    "DoReFa weights, PACT activations": "the spec [unverified]",
    "gamma='auto' controller, beta='auto' normalisation, weights phase on plain CE": (
        "this benchmark's choices (methods/dnas/loss.py, steps.py)"
    ),
}
"""Where each value comes from (copied into every search log)."""
