"""The method contract: one ``search(ctx) -> SearchResult`` per method.

A method subclasses :class:`Method` (``from benchmark.arena import Method``), sets ``name``
and ``searches``, and registers with ``methods.register_method`` (or joins from outside by
spec, ``--methods ./file.py:Class``). Its settings are one typed config class
(``config_class``, a :func:`~benchmark.arena.presets.method_config`), read as ``self.config``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, ClassVar

from benchmark.arena.context import Context
from benchmark.arena.limit import TaskLimit
from benchmark.arena.presets import Preset, PresetError, parse_section
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
        config_class: the method's one typed config (a :func:`method_config` class, named
            ``<Method>Config``: every setting with its default and bounds), or ``None`` for
            a method without settings.

    A run configures a method once, before anything starts (:meth:`configure`): the
    config class's defaults, then the preset's ``[methods.<name>]`` section, then
    ``--method-options``; the merged config is validated (one line for a bad key, type or
    range), checked against the run's spaces (:meth:`prepare_config`), recorded in every row and
    handed to the method as ``self.config``. ``Method(config)`` or ``Method(key=value)``
    (a config class's defaults with those keys) build one directly.
    """

    name: ClassVar[str]
    searches: ClassVar[str] = "bits"
    config_class: ClassVar[type | None] = None

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        self.config = self.make_config(config, overrides)

    @classmethod
    def make_config(cls, config: Any = None, overrides: Mapping[str, Any] | None = None) -> Any:
        """``config`` (default: the config class's defaults) with ``overrides`` applied,
        validated; ``None`` for a method without a config class.

        Raises:
            PresetError: a bad key or value (one line naming it).
        """
        overrides = dict(overrides or {})
        if cls.config_class is None:
            if config is not None or overrides:
                raise PresetError(f"method {cls.name!r} takes no options: remove them")
            return None
        if config is not None and not isinstance(config, cls.config_class):
            raise TypeError(f"{cls.name}: config must be a {cls.config_class.__name__}")
        if config is None and not overrides:
            return cls.config_class()
        base = asdict(config) if config is not None else {}
        return parse_section(cls.config_class, {**base, **overrides}, f"method {cls.name}", "")

    @classmethod
    def configure(cls, preset: Preset, options: Mapping[str, Any] | None = None) -> Any:
        """The method's config for a run on ``preset``: the config class's defaults, then
        the preset's ``[methods.<name>]`` section, then ``options`` (``--method-options``).

        Raises:
            PresetError: a bad preset section, or a bad option (one line naming which).
        """
        section = preset.methods.get(cls.name)
        if cls.config_class is None:
            if section is not None:
                raise PresetError(
                    f"preset {preset.name}: method {cls.name!r} takes no "
                    f"[methods.{cls.name}] section: remove it"
                )
            if options:
                raise PresetError(f"method {cls.name!r} takes no options, got {sorted(options)}")
            return None
        source = f"preset {preset.name}"
        defaults = parse_section(cls.config_class, section or {}, source, f"methods.{cls.name}")
        if not options:
            return defaults
        merged = {**(section or {}), **dict(options)}
        return parse_section(cls.config_class, merged, f"--method-options for {cls.name}", "")

    @classmethod
    def prepare_config(cls, config: Any, spaces: Sequence[SearchSpace]) -> Any:
        """Check ``config`` against the run's ``spaces`` before anything starts, and return
        it as the trials should get it (e.g. a file path made absolute: trials may run in
        another working directory).

        Raise ``ValueError`` with one line for a config that cannot work (the run then
        exits 2 with that line). The default returns ``config`` unchanged.
        """
        return config

    @classmethod
    def unreachable(cls, config: Any, limit: TaskLimit) -> str | None:
        """Why no candidate of this method, with ``config``, can meet ``limit`` (the task's
        constraint on one space of the run), as one line naming what would make it
        reachable; ``None`` when it can, or when the method cannot tell before it runs
        (the default). The harness asks before anything starts and refuses the run (exit
        2) with that line, so a method that cannot meet a limit fails before, not during,
        its trials."""
        return None

    def refuse_unreachable(self, ctx: Context) -> None:
        """The search's own guard, for a trial started without the harness's pre-run
        check: a one-line ``ValueError`` with :meth:`unreachable`'s reason when this
        method's config cannot meet the task's limit (call it before any image)."""
        reason = type(self).unreachable(self.config, ctx.limit)
        if reason is not None:
            raise ValueError(
                f"{self.name}: constraint {ctx.constraint.text} is infeasible on "
                f"{ctx.space.name}: {reason}"
            )

    @abstractmethod
    def search(self, ctx: Context) -> SearchResult:
        """Search under ``ctx.budget``; return candidates best first."""
