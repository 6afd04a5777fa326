"""Method registry: ``@register_method``, ``get_method``, ``list_methods``, ``check_options``.

A user's own method joins from outside the package by spec, ``module:Class`` (an
importable module, e.g. ``my.module:MyMethod``) or ``path/to/file.py:Class`` (a file), or
through the entry-point group ``mpqbench.methods`` (``my_method = "my.module:MyMethod"``
in its pyproject). Every problem loading one is a :class:`MethodError` with a one-line
message naming the spec and what to do.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import inspect
import pkgutil
import sys
import types
import warnings
from importlib.metadata import entry_points
from pathlib import Path

from benchmark.arena import SEARCHES, Method, Preset, PresetError

_METHODS: dict[str, type[Method]] = {}
ENTRY_POINT_GROUP = "mpqbench.methods"


class MethodError(ValueError):
    """Unknown or unloadable method, or options it does not take (one-line message)."""


def _same_class(a: type, b: type) -> bool:
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def check_method_class(cls: object, where: str) -> type[Method]:
    """``cls`` if it is a concrete :class:`Method` with a ``name`` and a valid ``searches``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise MethodError(f"{where} is not a Method subclass (subclass benchmark.arena.Method)")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise MethodError(f"{where} is abstract: implement {missing}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise MethodError(f"{where} has no name: set the class attribute name = '...'")
    if getattr(cls, "searches", None) not in SEARCHES:
        raise MethodError(
            f"{where}: searches must be one of {', '.join(SEARCHES)}, "
            f"got {getattr(cls, 'searches', None)!r}"
        )
    return cls


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register a concrete :class:`Method` subclass under ``cls.name``.

    A second, different class under a name already taken is refused.
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError("register_method expects a Method subclass")
    if getattr(cls, "searches", None) not in SEARCHES:
        raise TypeError(f"{cls.__name__}.searches must be one of {SEARCHES}")
    taken = _METHODS.get(cls.name)
    if taken is not None and not _same_class(taken, cls):
        raise MethodError(
            f"method name {cls.name!r} is taken by {taken.__module__}.{taken.__qualname__}; "
            f"give {cls.__module__}.{cls.__qualname__} another name"
        )
    _METHODS[cls.name] = cls
    return cls


def _load_builtins() -> None:
    """Import every module and package of this package: the built-in methods are the ones
    that register themselves there (``@register_method``); no list to keep in step."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def _load_entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_methods() -> list[str]:
    """Built-in and entry-point method names; a plugin that fails to load is left out
    with one warning line."""
    _load_builtins()
    names = set(_METHODS)
    for name, value in _load_entry_points().items():
        try:
            get_method(value)
            names.add(name)
        except MethodError as err:
            warnings.warn(f"entry point {name!r} ({value}) skipped: {err}", stacklevel=2)
    return sorted(names)


def _is_file_spec(module: str) -> bool:
    return module.endswith(".py") or "/" in module or "\\" in module


def split_spec(spec: str) -> tuple[str, str]:
    """``(module or file, class name)`` of a ``module:Class`` or ``file.py:Class`` spec."""
    module, sep, attr = spec.rpartition(":")
    if not sep or not module or not attr.isidentifier():
        raise MethodError(
            f"cannot read method spec {spec!r}: write module:Class (e.g. my.module:MyMethod) "
            "or path/to/file.py:Class"
        )
    if not _is_file_spec(module) and not all(p.isidentifier() for p in module.split(".")):
        raise MethodError(
            f"cannot read method spec {spec!r}: {module!r} is not an importable module name "
            "(no relative imports); give a dotted module name or a .py file path"
        )
    return module, attr


def _import(module: str, spec: str):
    """Import ``module`` (a dotted name or a .py file); any failure is a MethodError."""
    try:
        if not _is_file_spec(module):
            return importlib.import_module(module)
        path = Path(module).expanduser().resolve()
        if not path.is_file():
            raise MethodError(f"method file {module} of {spec!r} does not exist: check the path")
        name = f"mpqbench_user_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
        if name in sys.modules:
            return sys.modules[name]
        loaded = types.ModuleType(name)
        loaded.__file__ = str(path)
        code = compile(path.read_text(encoding="utf-8"), str(path), "exec")  # no __pycache__
        sys.modules[name] = loaded
        try:
            exec(code, loaded.__dict__)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return loaded
    except MethodError:
        raise
    except KeyboardInterrupt:
        raise
    except SystemExit as err:
        raise MethodError(
            f"method module {module!r} of {spec!r} exited while importing (exit {err.code}): "
            "a method module must not call sys.exit at import"
        ) from None
    except BaseException as err:  # noqa: BLE001 - SyntaxError, ImportError, anything raised
        text = " ".join(str(err).split()) or "no message"
        raise MethodError(
            f"cannot import method module {module!r} of {spec!r}: {type(err).__name__}: {text}"
        ) from None


def _load_spec(spec: str) -> type[Method]:
    module_name, attr = split_spec(spec)
    module = _import(module_name, spec)
    if not hasattr(module, attr):
        raise MethodError(f"{module_name!r} has no {attr!r} (method spec {spec!r})")
    return check_method_class(getattr(module, attr), repr(spec))


def get_method(name: str) -> type[Method]:
    """A method class by registry name, entry-point name or spec (``module:Class``,
    ``file.py:Class``)."""
    if not isinstance(name, str) or not name.strip():
        raise MethodError(f"a method is a name or a module:Class spec, got {name!r}")
    if ":" in name:
        return _load_spec(name)
    _load_builtins()
    if name in _METHODS:
        return _METHODS[name]
    external = _load_entry_points()
    if name in external:
        return _load_spec(external[name])
    raise MethodError(f"unknown method {name!r}; choose one of {', '.join(list_methods())}")


def config_fields(cls: type[Method]) -> list[str]:
    """The keys a method's config takes (its ``config_class``'s fields); none without one."""
    if cls.config_class is None:
        return []
    return [f.name for f in dataclasses.fields(cls.config_class)]


def check_options(cls: type[Method], options: dict, where: str) -> None:
    """Refuse an option that is not a key of the method's config, naming the accepted ones
    (the values are checked with the preset's section: :meth:`Method.configure`)."""
    accepted = config_fields(cls)
    for key in options:
        if key not in accepted:
            takes = f"it takes {', '.join(accepted)}" if accepted else "it takes no options"
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise MethodError(f"method {where} has no option {key!r}: {hint}{takes}")


def changed_options(cls: type[Method], preset: Preset, options: dict) -> dict:
    """The ``options`` whose validated value differs from the preset's config: what names
    a variant (``ompq[beta=1]``); an option equal to the preset's value names none."""
    if not options or cls.config_class is None:
        return {}
    base, full = cls.configure(preset), cls.configure(preset, options)
    return {k: v for k, v in options.items() if getattr(full, k) != getattr(base, k)}


def check_preset_sections(preset: Preset, given: list[type[Method]] | None = None) -> None:
    """Validate every ``[methods.<name>]`` section of ``preset`` against that method's
    config class. ``given`` adds methods from outside the registry (specs).

    Raises:
        PresetError: a section naming no known method, for a method without a config
            class, or with a bad key (one line).
    """
    classes = {cls.name: cls for cls in given or []}
    for name in preset.methods:
        cls = classes.get(name)
        if cls is None:
            try:
                cls = get_method(name)
            except MethodError:
                raise PresetError(
                    f"preset {preset.name}: [methods.{name}] names no method; registered: "
                    f"{', '.join(list_methods())}"
                ) from None
        cls.configure(preset)


__all__ = [
    "Method",
    "MethodError",
    "changed_options",
    "check_method_class",
    "check_options",
    "check_preset_sections",
    "config_fields",
    "get_method",
    "list_methods",
    "register_method",
    "split_spec",
]
