"""``random``: random mixed-precision policies (and architectures on joint spaces).

Each sample draws per-layer W/A bits uniformly from the space's choices (and, on an
``arch+bits`` space, a random architecture), rejecting samples over the constraint.
A feasible sample is scored on the validation split without training: FP weights,
quantizers initialised and BN recalibrated on ``calib_batches`` train batches. The
``top_k`` best by validation top-1 are the candidates. ``ctx.score`` charges the
calibration and validation images to the budget; the search stops at ``num_samples`` or
when the budget is spent, and offers its best ``top_k`` after every sample (what is
evaluated when the budget ends the search).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, Strict

from benchmark.arena import (
    Candidate,
    Context,
    ElasticSearchSpace,
    LayerBits,
    Method,
    SearchResult,
    method_config,
)
from methods import register_method

Count = Annotated[int, Strict(), Field(ge=1)]


@method_config
class RandomConfig:
    """``random``'s settings.

    Attributes:
        num_samples: feasible samples to score (the budget may end the search sooner).
        top_k: candidates: the best ``top_k`` by validation top-1.
        max_tries: draws per sample before giving up on finding a feasible one.
        calib_batches: train batches that recalibrate each sample before it is scored.
    """

    num_samples: Count = 16
    top_k: Count = 2
    max_tries: Count = 2000
    calib_batches: Count = 2


@register_method
class RandomSearch(Method):
    """Random per-layer bits (and architectures), scored untrained; the best are offered."""

    name = "random"
    searches = "arch+bits"
    config_class = RandomConfig

    def _sample(self, ctx: Context) -> tuple[Any, dict[str, LayerBits]] | None:
        space, rng = ctx.space, ctx.rng
        for _ in range(self.config.max_tries):
            elastic = isinstance(space, ElasticSearchSpace) and space.searches != "bits"
            arch = space.sample_arch(rng) if elastic else space.reference_arch
            bits = space.bit_choices
            policy = {
                name: LayerBits(rng.choice(bits), rng.choice(bits))
                for name in space.searchable_layers(arch)
            }
            full = space.full_policy(policy, arch)
            if ctx.feasible(full, arch):
                return arch, full
        return None

    def search(self, ctx: Context) -> SearchResult:
        scored: list[tuple[float, Candidate]] = []
        for i in range(self.config.num_samples):
            if ctx.budget.exhausted():
                break
            sample = self._sample(ctx)
            if sample is None:
                ctx.log.warning("no feasible random sample in %d tries", self.config.max_tries)
                break
            arch, policy = sample
            acc = ctx.score(ctx.subnet(arch, policy), seed=i, batches=self.config.calib_batches)
            ctx.report(sample=i, val_top1=acc)
            scored.append(
                (acc, Candidate(policy, arch, label=f"sample{i}", meta={"proxy_val_top1": acc}))
            )
            scored.sort(key=lambda item: -item[0])  # stable: ties keep their sampling order
            best = [c for _, c in scored[: self.config.top_k]]
            ctx.offer(*best, log=self._log(scored))  # the answer if the budget ends the search
        return SearchResult([c for _, c in scored[: self.config.top_k]], log=self._log(scored))

    @staticmethod
    def _log(scored: list[tuple[float, Candidate]]) -> dict[str, Any]:
        """The samples scored so far and their proxy top-1 (percent), best first."""
        return {"samples": len(scored), "proxy_val_top1": [a for a, _ in scored]}
