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

from typing import Any

from benchmark.arena import Candidate, Context, ElasticSearchSpace, LayerBits, Method, SearchResult
from methods import register_method


@register_method
class RandomSearch(Method):
    name = "random"
    searches = "arch+bits"

    def __init__(
        self,
        num_samples: int = 16,
        top_k: int = 2,
        max_tries: int = 2000,
        calib_batches: int = 2,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.num_samples, self.top_k, self.max_tries = num_samples, top_k, max_tries
        self.calib_batches = calib_batches

    def _sample(self, ctx: Context) -> tuple[Any, dict[str, LayerBits]] | None:
        space, rng = ctx.space, ctx.rng
        for _ in range(self.max_tries):
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
        for i in range(self.num_samples):
            if ctx.budget.exhausted():
                break
            sample = self._sample(ctx)
            if sample is None:
                ctx.log.warning("no feasible random sample in %d tries", self.max_tries)
                break
            arch, policy = sample
            acc = ctx.score(ctx.subnet(arch, policy), seed=i, batches=self.calib_batches)
            ctx.report(sample=i, val_top1=acc)
            scored.append(
                (acc, Candidate(policy, arch, label=f"sample{i}", meta={"proxy_val_top1": acc}))
            )
            scored.sort(key=lambda item: -item[0])  # stable: ties keep their sampling order
            ctx.offer(*(c for _, c in scored[: self.top_k]))  # the answer if the budget ends
        return SearchResult(
            [c for _, c in scored[: self.top_k]],
            log={"samples": len(scored), "proxy_val_top1": [a for a, _ in scored]},
        )
