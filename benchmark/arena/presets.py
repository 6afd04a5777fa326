"""Presets: the frozen recipes as data (``benchmark/presets/<name>.toml``).

A preset fixes the dataset default, the data split, the FP pretraining and QAT
finetune recipes, BN recalibration and the search budget. Comparisons differ
only in the method, never in these.

Every section is a pydantic dataclass, so a preset is validated against its schema when
it is read (and a recipe a method builds, when it is built): unknown sections or keys,
wrong types (TOML's types are kept: ``epochs = "2"`` is text, not a number) and values
out of range raise :class:`PresetError` with one line naming the key and what it
accepts. Methods' own sections live under ``[methods.<name>]``; each is checked against
that method's config class (``Method.config_class``) by the method registry
(:func:`methods.check_preset_sections`), since the arena does not know the methods.
"""

from __future__ import annotations

import difflib
import tomllib
import types
from collections.abc import Sequence
from dataclasses import asdict, field, fields
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import ConfigDict, Field, Strict, ValidationError
from pydantic.dataclasses import dataclass

from benchmark.arena.files import config_hash

MAX_SECONDS = 366 * 24 * 3600.0
"""Longest time limit a preset or flag may set (seconds; one year): every timer holds it."""

SCHEMA = ConfigDict(extra="forbid", allow_inf_nan=False)
"""Every section: no unknown keys, no NaN or infinity."""

Real = Annotated[float, Strict()]  # TOML float or integer; never text or a boolean
Whole = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]


def preset_schema(cls: type) -> type:
    """Class decorator: a frozen pydantic dataclass validated like the preset's own sections
    (no unknown keys, no NaN; use ``Annotated[float, Strict(), Field(gt=0)]`` for bounds;
    checks across fields go in ``__post_init__``, raising ``ValueError`` with one line).
    A method's config class (:data:`method_config`) is one."""
    return dataclass(frozen=True, config=SCHEMA)(cls)


method_config = preset_schema
"""Class decorator of a method's one typed config (``<Method>Config``): its defaults are
overridden by the preset's ``[methods.<name>]`` section, then by ``--method-options``."""


def parse_section(schema: type, values: dict[str, Any], source: str, section: str) -> Any:
    """``values``, the section ``[section]`` of preset ``source`` (``""``: not a table of
    a preset, e.g. options), validated into ``schema`` (a :func:`preset_schema` class).

    Raises:
        PresetError: one line naming the first bad key and what it accepts.
    """
    if not isinstance(values, dict):
        where = f"[{section}]" if section else "it"
        raise PresetError(f"{source}: {where} must be a table of keys, got {values!r}")
    try:
        return schema(**values)
    except ValidationError as err:
        raise PresetError(f"{source}: {schema_error(schema, err, section)}") from None


class PresetError(ValueError):
    """Unknown preset or malformed preset file (the message is one line)."""


@dataclass(frozen=True, config=SCHEMA)
class Recipe:
    """One SGD training recipe (epochs over the train split; lr per 1 batch; wd per step)."""

    epochs: Annotated[Real, Field(gt=0)]
    batch_size: Annotated[Whole, Field(ge=1)]
    lr: Annotated[Real, Field(gt=0)]
    momentum: Annotated[Real, Field(ge=0, lt=1)] = 0.9
    nesterov: Flag = True
    weight_decay: Annotated[Real, Field(ge=0)] = 5e-4
    warmup_epochs: Annotated[Real, Field(ge=0)] = 0.0
    label_smoothing: Annotated[Real, Field(ge=0, lt=1)] = 0.0
    max_steps: Annotated[Whole, Field(ge=1)] | None = None


@dataclass(frozen=True, config=SCHEMA)
class DataConfig:
    val_fraction: Annotated[Real, Field(gt=0, lt=1)] = 0.1
    train_subset: Annotated[Whole, Field(ge=1)] | None = None
    augment: Flag = True
    eval_batch_size: Annotated[Whole, Field(ge=1)] = 256


@dataclass(frozen=True, config=SCHEMA)
class RecalibrationConfig:
    """BN (and activation-range) recalibration: ``batches`` × ``batch_size`` train images."""

    batches: Annotated[Whole, Field(ge=1)] = 4
    batch_size: Annotated[Whole, Field(ge=1)] = 64


@dataclass(frozen=True, config=SCHEMA)
class BudgetConfig:
    """Default search budget: wall seconds on the trial's device and training samples."""

    max_search_seconds: Annotated[Real, Field(gt=0, le=MAX_SECONDS)] = 120.0
    max_search_samples: Annotated[Whole, Field(ge=1)] = 200_000
    # a trial (search + every candidate's finetune and evaluation) still running after
    # this many wall seconds is stopped and recorded as ``timeout``
    max_trial_seconds: Annotated[Real, Field(gt=0, le=MAX_SECONDS)] = 3600.0


@dataclass(frozen=True, config=SCHEMA)
class Preset:
    """A whole preset file. ``methods`` maps a method's name to its own section (raw
    TOML values here; validated against the method's schema by the method registry)."""

    name: Text
    description: Text
    dataset: Text
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: Recipe = field(default_factory=lambda: Recipe(epochs=1, batch_size=64, lr=0.1))
    finetune: Recipe = field(default_factory=lambda: Recipe(epochs=1, batch_size=64, lr=0.01))
    supernet: Recipe | None = None  # FP supernet pretraining (elastic spaces); None: pretrain
    recalibration: RecalibrationConfig = field(default_factory=RecalibrationConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    methods: dict[Text, dict[Text, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def recipe_hash(self) -> str:
        """16 hex digits identifying the recipe by content: every value but the name and
        description (a run's trials and ``--resume`` must use the same recipe)."""
        data = self.to_dict()
        data.pop("name"), data.pop("description")
        return config_hash(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "preset") -> Preset:
        """Validate ``data`` (a parsed TOML file) against the schema.

        Raises:
            PresetError: one line naming the first bad key and what it accepts.
        """
        if not isinstance(data, dict):
            raise PresetError(f"{source}: a preset is a TOML table, got {type(data).__name__}")
        try:
            return cls(**data)
        except ValidationError as err:
            raise PresetError(f"{source}: {schema_error(cls, err)}") from None
        except TypeError as err:  # pragma: no cover - pydantic reports these itself
            raise PresetError(f"{source}: {err}") from None


def schema_error(cls: type, err: ValidationError, section: str = "") -> str:
    """The first problem of ``err`` as one line: the key, what is wrong, what it accepts
    (``section``: the TOML table ``cls`` was read from, if not the top level)."""
    problems = err.errors(include_url=False)
    unknown = ("unexpected_keyword_argument", "extra_forbidden")
    problems.sort(key=lambda p: p["type"] not in unknown)  # a typo'd key explains the rest
    first = problems[0]
    loc = [str(part) for part in first["loc"]]
    keys = {tuple(p for p in map(str, q["loc"]) if p.isidentifier()) for q in problems}
    more = f" (and {len(keys) - 1} more problem(s))" if len(keys) > 1 else ""  # union: one
    if not loc:  # a check across fields (``__post_init__``): its own line
        return first["msg"].removeprefix("Value error, ") + more
    loc = [p for p in loc if p.isidentifier() or p.isdigit()]  # no union-member tags
    index = ""
    while len(loc) > 1 and loc[-1].isdigit():  # an element of a list: ``bits[0]``
        index = f"[{loc.pop()}]{index}"
    owner = _section_class(cls, loc[:-1])
    is_table = len(loc) == 1 and isinstance(first.get("input"), dict) and not section
    key = f"[{loc[0]}]" if is_table else _key_text([section, *loc] if section else loc) + index
    if first["type"] in unknown:
        known = [f.name for f in fields(owner)] if owner is not None else []
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = ""
        if close:
            near = [section, *loc[:-1], close[0]] if section else [*loc[:-1], close[0]]
            hint = f"did you mean {_key_text(near)}? "
        what = "section" if is_table else "key"
        return f"unknown {what} {key}: {hint}known: {', '.join(known)}{more}"
    if first["type"] in ("missing", "missing_argument"):
        return f"{key} is missing: add it{more}"
    accepted = _accepted(owner, loc[-1]) if owner is not None else ""
    value = first.get("input")
    shown = f" = {value!r}" if not isinstance(value, dict | list) else ""
    message = first["msg"][0].lower() + first["msg"][1:]
    if first["type"] in _RANGE_ERRORS and index:  # a list's element: its own bound
        reason, accepted = f"is out of range: {message}", ""
    elif first["type"] in _RANGE_ERRORS:
        reason = "is out of range"
    else:
        reason = f"is wrong: {message}"
    accepts = f"; accepted: {accepted}" if accepted else ""
    return f"{key}{shown} {reason}{accepts}{more}"


_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _section_class(cls: type, path: list[str]) -> type | None:
    """The dataclass at ``path`` below ``cls`` (``[]`` is ``cls``), else ``None``."""
    current: Any = cls
    for part in path:
        if not _is_dataclass(current) or part not in current.__pydantic_fields__:
            return None
        hint = current.__pydantic_fields__[part].annotation
        current = next(
            (a for a in (hint, *getattr(hint, "__args__", ())) if _is_dataclass(a)), None
        )
        if current is None:
            return None
    return current if _is_dataclass(current) else None


def _is_dataclass(obj: object) -> bool:
    return isinstance(obj, type) and hasattr(obj, "__pydantic_fields__")


def _key_text(loc: list[str]) -> str:
    """``[finetune] epochs`` for a key of a section, ``[finetune]`` for a section."""
    if len(loc) == 1:
        return f"[{loc[0]}]" if loc[0] in _SECTION_NAMES else loc[0]
    return f"[{'.'.join(loc[:-1])}] {loc[-1]}"


_SECTION_NAMES = {"data", "pretrain", "finetune", "supernet", "recalibration", "budget", "methods"}


def _accepted(cls: type, name: str) -> str:
    """What field ``name`` of ``cls`` accepts, from its type and bounds (``a number > 0``)."""
    info = cls.__pydantic_fields__.get(name)
    return "" if info is None else _describe(info.annotation, list(info.metadata))


_KINDS = {float: "a number", int: "a whole number", bool: "true or false", str: "text"}
_BOUNDS = {Gt: ">", Ge: "≥", Lt: "<", Le: "≤"}


def _describe(hint: Any, metadata: list[Any]) -> str:
    """``hint`` (with ``Annotated`` bounds in it or in ``metadata``) in words."""
    args = getattr(hint, "__args__", ())
    if type(None) in args:  # Optional
        inner = [a for a in args if a is not type(None)]
        kind = _describe(inner[0], metadata) if len(inner) == 1 else _describe_any(inner)
        return f"{kind}, or leave it out"
    if isinstance(hint, types.UnionType) or getattr(hint, "__origin__", None) is Union:
        return _describe_any(args)
    if hasattr(hint, "__metadata__"):  # Annotated[base, ...]
        return _describe(hint.__origin__, [*metadata, *hint.__metadata__])
    if getattr(hint, "__origin__", None) is dict:
        return "a table"
    if getattr(hint, "__origin__", None) is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if getattr(hint, "__origin__", None) is tuple:
        return "a list, each " + _describe(args[0], []) if args else "a list"
    bounds: list[str] = []
    for meta in metadata:
        for item in (meta, *getattr(meta, "metadata", ())):  # a Field(...) holds its bounds
            for bound, symbol in _BOUNDS.items():
                if isinstance(item, bound):
                    bounds.append(f"{symbol} {_number_text(getattr(item, bound.__name__.lower()))}")
    kind = _KINDS.get(hint, getattr(hint, "__name__", str(hint)))
    return " ".join([kind, " and ".join(bounds)]).strip()


def _describe_any(hints: Sequence[Any]) -> str:
    return " or ".join(_describe(h, []) for h in hints)


def _number_text(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() and abs(value) >= 1e4 else f"{value:g}"


def list_presets() -> list[str]:
    files = resources.files("benchmark").joinpath("presets").iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def load_preset(name: str) -> Preset:
    """A built-in preset by name, or a user's preset from a ``.toml`` file path.

    Unknown names, unreadable files and files that do not match the schema raise
    :class:`PresetError` (one line: the valid names, or the bad key and its range).
    """
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise PresetError(f"preset file {name} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise PresetError(f"preset file {name} is not valid TOML ({err})") from None
        except RecursionError:  # thousands of nested arrays or tables
            raise PresetError(
                f"preset file {name} nests too deeply to read: a preset is a few flat tables"
            ) from None
        except OSError as err:
            raise PresetError(f"cannot read preset file {name} ({err.strerror})") from None
        return Preset.from_dict(data, source=f"preset file {name}")
    if name not in list_presets():
        raise PresetError(f"unknown preset {name!r}; choose one of {', '.join(list_presets())}")
    text = resources.files("benchmark").joinpath("presets", f"{name}.toml").read_text()
    return Preset.from_dict(tomllib.loads(text), source=f"preset {name}")
