"""``uniform``: the fixed-precision baselines W8A8, W4A4, W3A3 and W2A2.

No search: one candidate per bit-width on the space's reference architecture. The
harness records the ones over the constraint as infeasible.
"""

from __future__ import annotations

from typing import Any

from benchmark.arena import Candidate, Context, Method, SearchResult
from methods import register_method


@register_method
class Uniform(Method):
    name = "uniform"
    searches = "bits"

    def __init__(self, bits: tuple[int, ...] | list[int] = (8, 4, 3, 2), **options: Any) -> None:
        super().__init__(**options)
        self.bits = tuple(int(b) for b in bits)

    def search(self, ctx: Context) -> SearchResult:
        arch = ctx.space.reference_arch
        candidates = [
            Candidate(policy=ctx.space.uniform_policy(b, b, arch), arch=arch, label=f"W{b}A{b}")
            for b in self.bits
        ]
        return SearchResult(candidates, log={"bits": list(self.bits)})
