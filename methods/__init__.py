"""Method registry: ``@register_method``, ``get_method``, ``list_methods``.

A user's own method joins from outside the package either by path
(``--methods my.module:MyMethod``) or through the entry-point group
``mpqbench.methods`` (``my_method = "my.module:MyMethod"`` in its pyproject).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from methods.base import SEARCHES, Method

_METHODS: dict[str, type[Method]] = {}
_BUILTINS = ("methods.uniform", "methods.random_search", "methods.ompq")
ENTRY_POINT_GROUP = "mpqbench.methods"


class MethodError(ValueError):
    """Unknown or unloadable method."""


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register a :class:`Method` subclass under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError("register_method expects a Method subclass")
    if getattr(cls, "searches", None) not in SEARCHES:
        raise TypeError(f"{cls.__name__}.searches must be one of {SEARCHES}")
    _METHODS[cls.name] = cls
    return cls


def _load_builtins() -> None:
    for module in _BUILTINS:
        importlib.import_module(module)


def _load_entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_methods() -> list[str]:
    """Built-in and entry-point method names."""
    _load_builtins()
    return sorted(set(_METHODS) | set(_load_entry_points()))


def _load_path(path: str) -> type[Method]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise MethodError(f"cannot import {module_name!r} for method {path!r}: {err}") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise MethodError(f"{path!r} is not a Method subclass (mpqbench methods.base.Method)")
    return cls


def get_method(name: str) -> type[Method]:
    """A method class by registry name, entry-point name or ``module:Class`` path."""
    if ":" in name:
        return _load_path(name)
    _load_builtins()
    if name in _METHODS:
        return _METHODS[name]
    external = _load_entry_points()
    if name in external:
        return _load_path(external[name])
    raise MethodError(f"unknown method {name!r}; choose one of {', '.join(list_methods())}")


__all__ = ["Method", "MethodError", "get_method", "list_methods", "register_method"]
