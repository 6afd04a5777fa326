"""A user's per-layer hardware cost table (measured latency, energy, ...) as a file.

HAQ takes its hardware feedback from such a table: one cost per layer × weight bits ×
activation bits, in any unit (ms, mJ, cycles); a policy costs the sum over its layers. The
file is CSV or JSON and names the space it was measured for:

CSV (``#`` lines before the header hold ``key=value`` settings; ``space`` is required)::

    # space=resnet20 unit=ms
    layer,w_bits,a_bits,cost
    layer1.0.conv1,2,2,0.0123
    layer1.0.conv1,2,3,0.0131
    ...

JSON: ``{"space": "resnet20", "unit": "ms", "costs": {"layer1.0.conv1": {"w2a2": 0.0123,
"w2a3": 0.0131, ...}, ...}}``.

A table fits a space (:meth:`CostFile.check`) when it is for that space, every layer it
names is a quantizable layer of the space's architecture, every searchable layer has a
cost at every ``(w_bits, a_bits)`` over the space's bit choices and 8 (W8A8 is the
reference that relative limits are fractions of), and every cost is a finite number ≥ 0.
Fixed layers may be left out (their cost is the same for every policy); one listed needs
its cost at its fixed bits, which then counts in every total. Problems raise
:class:`CostFileError` with one line naming the file, the place and what to do.
:func:`cost_file_from_table` writes the shared BitOPs (or size) table in this format: a
template to fill with measurements.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from benchmark.arena.cost_table import CostTable
from benchmark.arena.policy import FP_BITS, LayerBits

HEADER = ("layer", "w_bits", "a_bits", "cost")
REFERENCE_BITS = 8
"""Bits of the reference policy (W8A8) a table must also price: relative limits refer to it."""

_PAIR_KEY = re.compile(r"^w(\d+)a(\d+)$")
_SETTING = re.compile(r"([A-Za-z_]+)\s*=\s*(\S+)")


class CostFileError(ValueError):
    """A cost table file that cannot be read or does not fit the space (one line)."""


Pair = tuple[int, int]


@dataclass(frozen=True)
class CostFile:
    """A per-layer cost table: ``costs[layer][(w_bits, a_bits)]`` in ``unit``.

    Attributes:
        space: the space the table was measured for (its registry name).
        unit: the costs' unit, free text for logs (``"ms"``, ``"mJ"``; may be empty).
        costs: layer name → ``(w_bits, a_bits)`` → cost (a finite number ≥ 0, bits).
        source: where it was read from, for messages.
        where: layer name → where it first appears in the file (``"line 5"``), for messages.
    """

    space: str
    unit: str
    costs: Mapping[str, Mapping[Pair, float]]
    source: str = field(default="cost table", compare=False)
    where: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        frozen = {name: MappingProxyType(dict(row)) for name, row in self.costs.items()}
        object.__setattr__(self, "costs", MappingProxyType(frozen))
        object.__setattr__(self, "where", MappingProxyType(dict(self.where)))

    def __reduce__(self) -> tuple:
        """Pickle through the constructor (mapping proxies do not pickle)."""
        costs = {name: dict(row) for name, row in self.costs.items()}
        return (type(self), (self.space, self.unit, costs, self.source, dict(self.where)))

    # --- fitting a space ----------------------------------------------------------------
    def check(self, space: str, table: CostTable) -> None:
        """Raise :class:`CostFileError` (one line, the first problem) unless this file fits
        ``table``, the cost table of ``space``'s architecture (see the module docstring)."""
        if self.space != space:
            raise CostFileError(
                f"{self.source} is for space {self.space!r}, not {space!r}: use a table "
                f"measured for {space} (or run --space {self.space})"
            )
        known = set(table.names)
        for name in self.costs:
            if name not in known:
                shown = ", ".join(table.names[:4])
                raise CostFileError(
                    f"{self.source} {self._at(name)}: unknown layer {name!r} for {space}; its "
                    f"layers are {shown}, ... (`python -m benchmark cost --space {space}`)"
                )
        allowed = set(table.bit_choices)
        for name, row in self.costs.items():
            for w, a in row:
                for kind, b in (("w_bits", w), ("a_bits", a)):
                    if b not in allowed:
                        raise CostFileError(
                            f"{self.source} {self._at(name)}: {kind} {b} of {name} is not a "
                            f"bit-width of {space} ({', '.join(map(str, sorted(allowed)))})"
                        )
        bits = required_bits(table)
        for name in table.searchable:
            row = self.costs.get(name)
            if row is None:
                raise CostFileError(
                    f"{self.source}: no costs for layer {name!r}; give every searchable layer "
                    f"a cost at each (w_bits, a_bits) over {_bits_text(bits)}"
                )
            for w in bits:
                for a in bits:
                    if (w, a) not in row:
                        raise CostFileError(
                            f"{self.source}: no cost for {name} at W{w}A{a}; give every "
                            f"searchable layer a cost at each (w_bits, a_bits) over "
                            f"{_bits_text(bits)}"
                        )
        for name, fixed in table.fixed.items():
            row = self.costs.get(name)
            if row is not None and (fixed.w_bits, fixed.a_bits) not in row:
                raise CostFileError(
                    f"{self.source}: {name} is fixed at W{fixed.w_bits}A{fixed.a_bits} by the "
                    f"space's convention, but the table has no cost for it at those bits: add "
                    "it or leave the layer out"
                )

    # --- lookups (after check) ----------------------------------------------------------
    def layer_cost(self, layer: str, w_bits: int, a_bits: int) -> float:
        """The cost of ``layer`` at ``w_bits``/``a_bits`` (in :attr:`unit`)."""
        try:
            return self.costs[layer][(w_bits, a_bits)]
        except KeyError:
            raise CostFileError(
                f"{self.source}: no cost for {layer} at W{w_bits}A{a_bits}"
            ) from None

    def coefficients(self, table: CostTable, bits: Sequence[int]) -> np.ndarray:
        """Costs of ``table``'s searchable layers, float64, shape ``(layers, len(bits),
        len(bits))``: entry ``[l, i, j]`` at ``w_bits = bits[i]``, ``a_bits = bits[j]``
        (the layout of :meth:`CostTable.coefficients`)."""
        return np.array(
            [[[self.layer_cost(n, w, a) for a in bits] for w in bits] for n in table.searchable],
            dtype=np.float64,
        ).reshape(len(table.searchable), len(bits), len(bits))

    def fixed_total(self, table: CostTable) -> float:
        """The listed fixed layers' cost at their fixed bits (0 for layers left out)."""
        return float(
            sum(
                self.layer_cost(n, b.w_bits, b.a_bits)
                for n, b in table.fixed.items()
                if n in self.costs
            )
        )

    def reference_total(self, table: CostTable) -> float:
        """Cost of every searchable layer at W8A8 plus :meth:`fixed_total` (in :attr:`unit`):
        what a relative limit is a fraction of."""
        ref = REFERENCE_BITS
        searched = sum(self.layer_cost(n, ref, ref) for n in table.searchable)
        return float(searched) + self.fixed_total(table)

    # --- writing ------------------------------------------------------------------------
    def to_csv(self) -> str:
        """The CSV form (settings line, header, one row per layer and bit pair)."""
        out = io.StringIO()
        unit = f" unit={self.unit}" if self.unit else ""
        out.write(f"# space={self.space}{unit}\n")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        for name, row in self.costs.items():
            for (w, a), cost in row.items():
                writer.writerow([name, w, a, repr(float(cost))])
        return out.getvalue()

    def to_json(self) -> str:
        """The JSON form (``{"space", "unit", "costs": {layer: {"w4a8": cost}}}``)."""
        costs = {
            name: {f"w{w}a{a}": float(c) for (w, a), c in row.items()}
            for name, row in self.costs.items()
        }
        return json.dumps({"space": self.space, "unit": self.unit, "costs": costs}, indent=1)

    def write(self, path: str | Path) -> Path:
        """Write the table to ``path``: JSON for a ``.json`` name, else CSV."""
        path = Path(path)
        path.write_text(self.to_json() if path.suffix.lower() == ".json" else self.to_csv())
        return path

    def _at(self, layer: str) -> str:
        return self.where.get(layer, f"layer {layer!r}")


def required_bits(table: CostTable) -> tuple[int, ...]:
    """The bit-widths every searchable layer of ``table`` needs costs at: the space's
    choices (``table.bit_choices`` below 32 = FP) and 8, ascending."""
    return tuple(sorted({b for b in table.bit_choices if b < FP_BITS} | {REFERENCE_BITS}))


def _bits_text(bits: Sequence[int]) -> str:
    return "{" + ", ".join(map(str, bits)) + "}"


def _number(text: object, what: str, source: str) -> float:
    """A finite cost ≥ 0 from ``text`` (a CSV cell or a JSON value)."""
    if isinstance(text, bool):
        raise CostFileError(f"{source} {what}: cost {text!r} is not a number")
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CostFileError(f"{source} {what}: cost {text!r} is not a number") from None
    if not math.isfinite(value):
        raise CostFileError(f"{source} {what}: cost {text!r} is not a finite number")
    if value < 0:
        raise CostFileError(f"{source} {what}: cost {value:g} is negative; costs are ≥ 0")
    return value


def _bits(text: object, what: str, kind: str, source: str) -> int:
    if isinstance(text, bool):
        raise CostFileError(f"{source} {what}: {kind} {text!r} is not a whole number of bits")
    try:
        value = int(str(text).strip())
    except ValueError:
        raise CostFileError(
            f"{source} {what}: {kind} {text!r} is not a whole number of bits"
        ) from None
    return value


def _add(
    costs: dict[str, dict[Pair, float]],
    first: dict[tuple[str, Pair], str],
    where: dict[str, str],
    name: str,
    pair: Pair,
    cost: float,
    at: str,
    source: str,
) -> None:
    if (name, pair) in first:
        raise CostFileError(
            f"{source} {at}: {name} at W{pair[0]}A{pair[1]} is given twice (first at "
            f"{first[(name, pair)]}): give each layer and bit pair once"
        )
    first[(name, pair)] = at
    where.setdefault(name, at)
    costs.setdefault(name, {})[pair] = cost


def parse_csv(text: str, source: str = "cost table") -> CostFile:
    """A :class:`CostFile` from CSV text (see the module docstring)."""
    settings: dict[str, str] = {}
    costs: dict[str, dict[Pair, float]] = {}
    first: dict[tuple[str, Pair], str] = {}
    where: dict[str, str] = {}
    header_seen = False
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if cells[0].startswith("#"):
            if header_seen:
                continue  # a comment among the rows
            settings.update(_SETTING.findall(",".join(row).lstrip("#")))
            continue
        at = f"line {number}"
        if not header_seen:
            if tuple(c.lower() for c in cells) != HEADER:
                raise CostFileError(
                    f"{source} {at}: the header must be {','.join(HEADER)}, got {','.join(cells)!r}"
                )
            header_seen = True
            continue
        if len(cells) != len(HEADER):
            raise CostFileError(
                f"{source} {at}: {len(cells)} fields, expected {len(HEADER)} ({','.join(HEADER)})"
            )
        name, w_text, a_text, cost_text = cells
        pair = (_bits(w_text, at, "w_bits", source), _bits(a_text, at, "a_bits", source))
        _add(costs, first, where, name, pair, _number(cost_text, at, source), at, source)
    if not header_seen:
        raise CostFileError(f"{source}: no header line {','.join(HEADER)} (an empty table?)")
    return _finish(settings, costs, where, source, "start the file with a line '# space=NAME'")


def parse_json(text: str, source: str = "cost table") -> CostFile:
    """A :class:`CostFile` from JSON text (see the module docstring)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise CostFileError(f"{source} is not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("costs"), dict):
        raise CostFileError(
            f'{source}: a JSON table is {{"space": ..., "unit": ..., "costs": {{layer: '
            f'{{"w4a8": cost, ...}}}}}}'
        )
    settings = {k: v for k, v in data.items() if k in ("space", "unit")}
    costs: dict[str, dict[Pair, float]] = {}
    first: dict[tuple[str, Pair], str] = {}
    where: dict[str, str] = {}
    for name, row in data["costs"].items():
        at = f"layer {name!r}"
        if not isinstance(row, dict):
            raise CostFileError(f'{source} {at}: expected {{"w4a8": cost, ...}}, got {row!r}')
        for key, value in row.items():
            match = _PAIR_KEY.match(str(key))
            if match is None:
                raise CostFileError(f"{source} {at}: key {key!r} is not a bit pair like 'w4a8'")
            pair = (int(match.group(1)), int(match.group(2)))
            _add(costs, first, where, name, pair, _number(value, f"{at} {key}", source), at, source)
    return _finish(settings, costs, where, source, 'add "space": NAME')


def _finish(
    settings: Mapping[str, object],
    costs: dict[str, dict[Pair, float]],
    where: dict[str, str],
    source: str,
    fix: str,
) -> CostFile:
    space = settings.get("space")
    if not isinstance(space, str) or not space:
        raise CostFileError(f"{source} does not say which space it is for: {fix}")
    unit = settings.get("unit", "")
    if not isinstance(unit, str):
        raise CostFileError(f"{source}: unit must be text, got {unit!r}")
    if not costs:
        raise CostFileError(f"{source} has no costs")
    return CostFile(space, unit, costs, source, where)


def load_cost_file(path: str | Path) -> CostFile:
    """Read a cost table file: JSON for a ``.json`` name, CSV otherwise.

    Raises:
        CostFileError: a missing or unreadable file, or one not in the format (one line).
    """
    path = Path(path)
    source = f"cost table {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CostFileError(f"{source} does not exist: check the path") from None
    except IsADirectoryError:
        raise CostFileError(f"{source} is a folder, not a file") from None
    except UnicodeDecodeError:
        raise CostFileError(f"{source} is not a text file (CSV or JSON)") from None
    except OSError as err:
        raise CostFileError(f"cannot read {source} ({err.strerror or err})") from None
    if path.suffix.lower() == ".json":
        return parse_json(text, source)
    return parse_csv(text, source)


def cost_file_from_table(
    table: CostTable, space: str, metric: str = "bitops", bits: Sequence[int] | None = None
) -> CostFile:
    """The shared cost model's table as a :class:`CostFile`: every searchable layer at each
    ``(w, a)`` over ``bits`` (default: the choices and 8) and every fixed layer at its bits,
    in BitOPs per 32×32 image (``bitops``) or weight bits (``size``). A template to replace
    with measured costs, and a round-trip check of the format."""
    unit = {"bitops": "BitOPs", "size": "bits"}[metric]
    bits = tuple(bits) if bits is not None else required_bits(table)
    costs: dict[str, dict[Pair, float]] = {}
    fixed = table.fixed
    for name in table.names:
        pairs = [(fixed[name].w_bits, fixed[name].a_bits)] if name in fixed else None
        pairs = pairs or [(w, a) for w in bits for a in bits]
        costs[name] = {
            (w, a): float(table.layer_cost(name, LayerBits(w, a), metric)) for w, a in pairs
        }
    return CostFile(space, unit, costs, f"{metric} table of {space}")
