"""Per-layer bit-width policies: the one format every method's candidates use.

A policy maps a quantizable layer's name (its module path, e.g. ``"layer1.0.conv1"``)
to a :class:`LayerBits` pair. ``32`` bits means full precision (no quantization).
On disk a policy is JSON: ``{"<layer name>": {"w_bits": 4, "a_bits": 4}, ...}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmark.arena.files import loads_json_unique

FP_BITS = 32
"""Bit-width that means "not quantized" (counted as 32 × 32 in BitOPs)."""


class PolicyError(ValueError):
    """A policy that does not fit the model or space it is applied to."""


@dataclass(frozen=True, order=True)
class LayerBits:
    """Weight and activation bit-widths of one layer (bits; 32 = full precision)."""

    w_bits: int
    a_bits: int

    def to_dict(self) -> dict[str, int]:
        return {"w_bits": self.w_bits, "a_bits": self.a_bits}


Policy = dict[str, LayerBits]
"""Layer name → bits. Ordered as the model's layers when built by this package."""

_UNIFORM = re.compile(r"^w(\d+)a(\d+)$", re.IGNORECASE)


def uniform_policy(layer_names: Iterable[str], w_bits: int, a_bits: int) -> Policy:
    """Every named layer at the same ``(w_bits, a_bits)``."""
    return {name: LayerBits(w_bits, a_bits) for name in layer_names}


def parse_uniform(spec: str) -> LayerBits | None:
    """``"w4a4"`` → ``LayerBits(4, 4)``; anything else → ``None``."""
    match = _UNIFORM.match(spec.strip())
    return LayerBits(int(match[1]), int(match[2])) if match else None


def policy_from_dict(data: Mapping[str, object]) -> Policy:
    """Parse the JSON form; raises :class:`PolicyError` on a malformed entry."""
    if not isinstance(data, Mapping):
        raise PolicyError("a policy must be a JSON object mapping layer names to bits")
    policy: Policy = {}
    for name, entry in data.items():
        if isinstance(entry, Mapping) and set(entry) >= {"w_bits", "a_bits"}:
            w, a = entry["w_bits"], entry["a_bits"]
        elif isinstance(entry, list | tuple) and len(entry) == 2:
            w, a = entry
        elif isinstance(entry, Mapping):
            missing = " and ".join(k for k in ("w_bits", "a_bits") if k not in entry)
            raise PolicyError(
                f"policy entry for layer {name!r} has no {missing}: write "
                '{"w_bits": B, "a_bits": B} with integer bits'
            )
        else:
            raise PolicyError(
                f'policy entry for layer {name!r} must be {{"w_bits": B, "a_bits": B}}, '
                f"got {short_text(entry)}"
            )
        if (
            isinstance(w, bool)
            or isinstance(a, bool)
            or not (isinstance(w, int) and isinstance(a, int))
        ):
            raise PolicyError(
                f"bits for layer {name!r} must be integers, got {short_text(w)}, {short_text(a)}"
            )
        policy[str(name)] = LayerBits(w, a)
    return policy


def policy_to_dict(policy: Mapping[str, LayerBits]) -> dict[str, dict[str, int]]:
    """The JSON form of a policy."""
    return {name: bits.to_dict() for name, bits in policy.items()}


def load_policy_file(path: str | Path) -> Policy:
    """Read a policy JSON file; raises :class:`PolicyError` with a one-line reason."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist: check the path") from None
    except IsADirectoryError:
        raise PolicyError(f"policy file {path} is a folder: pass a JSON file") from None
    except UnicodeDecodeError as err:
        raise PolicyError(f"policy file {path} is not valid JSON (not UTF-8 text: {err})") from None
    except (OSError, ValueError) as err:  # ValueError: a path with a NUL byte
        raise PolicyError(f"cannot read policy file {path} ({short_text(err)})") from None
    try:
        data = loads_json_unique(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, too many digits, nesting
        raise PolicyError(
            f"policy file {path} is not valid JSON ({short_text(err)}): write "
            '{"<layer>": {"w_bits": B, "a_bits": B}, ...}'
        ) from None
    return policy_from_dict(data)


def short_text(value: object, limit: int = 120) -> str:
    """``repr`` of ``value`` (or an exception's text) on one line, cut to ``limit`` chars."""
    text = str(value) if isinstance(value, BaseException) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_policy(
    policy: Mapping[str, LayerBits],
    layer_names: Iterable[str],
    allowed_bits: Iterable[int],
    *,
    require_all: bool = True,
) -> None:
    """Check layer names and bit-widths; raise :class:`PolicyError` naming the first problem."""
    names = list(layer_names)
    allowed = sorted(set(allowed_bits))
    unknown = [n for n in policy if n not in set(names)]
    if unknown:
        raise PolicyError(
            f"unknown layer {unknown[0]!r} in policy ({len(unknown)} unknown); "
            f"valid layers are e.g. {', '.join(names[:4])}, ... (see `python -m benchmark cost "
            f"--json` for the full list)"
        )
    for name, bits in policy.items():
        for kind, b in (("w_bits", bits.w_bits), ("a_bits", bits.a_bits)):
            if b not in allowed:
                raise PolicyError(
                    f"layer {name!r} has {kind}={b}, which is not in the allowed set {allowed}"
                )
    if require_all:
        missing = [n for n in names if n not in policy]
        if missing:
            raise PolicyError(
                f"policy is missing {len(missing)} layer(s), first {missing[0]!r}; give bits "
                "for every quantizable layer"
            )
