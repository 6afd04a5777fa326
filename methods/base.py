"""The method contract, kept importable from here for methods written against it; it lives
in the arena (``from benchmark.arena import Method``)."""

from benchmark.arena import SEARCHES, Method

__all__ = ["SEARCHES", "Method"]
