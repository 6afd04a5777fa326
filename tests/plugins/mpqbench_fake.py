"""Methods that misbehave on purpose, loaded from outside the package by path."""

from __future__ import annotations

from benchmark.protocol import Candidate, Context, SearchResult
from methods.base import Method


class Raising(Method):
    """Raises inside search."""

    name = "raising"
    searches = "bits"

    def search(self, ctx: Context) -> SearchResult:
        raise RuntimeError("boom from a broken method")


class Greedy(Method):
    """Keeps charging samples and ignores ``exhausted()``."""

    name = "greedy"
    searches = "bits"

    def search(self, ctx: Context) -> SearchResult:
        while True:
            ctx.budget.charge(1000)


class AllW4(Method):
    """Proposes W4A4 on every searchable layer, with options."""

    name = "allw4"
    searches = "bits"

    def __init__(self, bits: int = 4) -> None:
        self.bits = bits

    def search(self, ctx: Context) -> SearchResult:
        policy = ctx.space.uniform_policy(self.bits, self.bits, ctx.space.reference_arch)
        return SearchResult([Candidate(policy, label=f"all{self.bits}")])
