"""The method contract: one ``search(ctx) -> SearchResult`` per method.

A method subclasses :class:`Method` (``from benchmark.arena import Method``), sets ``name``
and ``searches``, and registers with ``methods.register_method`` (or joins from outside by
spec, ``--methods ./file.py:Class``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from benchmark.arena.context import Context
from benchmark.arena.protocol import SearchResult
from benchmark.arena.spaces.base import SearchSpace

SEARCHES = ("bits", "arch+uniform-bits", "arch+bits")
"""What a method may search: a fixed architecture's bits, an architecture at one uniform
bit-width, or both."""


class Method(ABC):
    """Base class of every search method.

    Class attributes:
        name: registry name (``"ompq"``).
        searches: what the method searches: ``"bits"`` (fixed architecture; on a joint
            space it works on the space's reference architecture), ``"arch+uniform-bits"``
            or ``"arch+bits"``.

        preset_section: the schema of the method's own preset keys, ``[methods.<name>]``
            in a preset file (a class decorated with ``benchmark.arena.preset_schema``), or
            ``None`` when it has none. The harness validates the section before the run
            starts and hands the parsed one to the search as ``ctx.preset_section``
            (the schema's defaults when the preset has no such section).

    Options come from ``--method-options`` as keyword arguments to ``__init__``; before a
    run starts, :meth:`prepare_options` checks them against the run's spaces.
    """

    name: ClassVar[str]
    searches: ClassVar[str] = "bits"
    preset_section: ClassVar[type | None] = None

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"method {self.name!r} takes no options, got {sorted(options)}")

    @classmethod
    def prepare_options(
        cls, options: dict[str, Any], spaces: Sequence[SearchSpace]
    ) -> dict[str, Any]:
        """Check ``options`` (what ``__init__`` will get) against the run's ``spaces`` before
        anything starts, and return them as the trials should get them (e.g. a file path
        made absolute: trials may run in another working directory).

        Raise ``ValueError`` with one line for options that cannot work (the run then exits
        2 with that line). The default returns ``options`` unchanged.
        """
        return options

    @abstractmethod
    def search(self, ctx: Context) -> SearchResult:
        """Search under ``ctx.budget``; return candidates best first."""
