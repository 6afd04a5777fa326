"""``uniform``: the fixed-precision baselines W8A8, W4A4, W3A3 and W2A2.

No search: one candidate per bit-width on the space's reference architecture. The
harness records the ones over the constraint as infeasible.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict

from benchmark.arena import Candidate, Context, Method, SearchResult, method_config
from methods import register_method


@method_config
class UniformConfig:
    """``uniform``'s settings.

    Attributes:
        bits: the bit-widths, one W{b}A{b} candidate each (in this order).
    """

    bits: tuple[Annotated[int, Strict(), Field(ge=1, le=31)], ...] = Field(
        default=(8, 4, 3, 2), min_length=1
    )

    def __post_init__(self) -> None:
        repeated = sorted({b for b in self.bits if self.bits.count(b) > 1})
        if repeated:
            raise ValueError(
                f"bits lists {repeated} more than once: each bit-width gives one W{{b}}A{{b}} "
                "candidate, so list each once"
            )


@register_method
class Uniform(Method):
    """Fixed-precision baselines: one W{b}A{b} candidate per bit-width (no search)."""

    name = "uniform"
    searches = "bits"
    config_class = UniformConfig

    def search(self, ctx: Context) -> SearchResult:
        arch = ctx.space.reference_arch
        bits = self.config.bits
        candidates = [
            Candidate(policy=ctx.space.uniform_policy(b, b, arch), arch=arch, label=f"W{b}A{b}")
            for b in bits
        ]
        return SearchResult(candidates, log={"bits": list(bits)})
