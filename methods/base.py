"""The method contract: one ``search(ctx) -> SearchResult`` per method."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from benchmark.arena import Context, SearchResult

SEARCHES = ("bits", "arch+uniform-bits", "arch+bits")


class Method(ABC):
    """Base class of every search method.

    Class attributes:
        name: registry name (``"ompq"``).
        searches: what the method searches: ``"bits"`` (fixed architecture; on a joint
            space it works on the space's reference architecture), ``"arch+uniform-bits"``
            or ``"arch+bits"``.

    Options come from ``--method-options`` as keyword arguments to ``__init__``.
    """

    name: ClassVar[str]
    searches: ClassVar[str] = "bits"

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"method {self.name!r} takes no options, got {sorted(options)}")

    @abstractmethod
    def search(self, ctx: Context) -> SearchResult:
        """Search under ``ctx.budget``; return candidates best first."""
