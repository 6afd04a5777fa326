"""Fixed-precision conventions: the bits of the layers a space never searches.

A space groups those layers by role (``"stem"``, ``"se"``, ``"classifier"``; its
``default_fixed`` lists the roles and their default bits) and a :class:`FixedConvention`
gives every role its bits (W and A, in bits; 32 = full precision), optionally with
single layers set apart. A convention is written (:data:`FixedSpec`) as

- an ``int`` ``b``: every fixed layer at W = A = ``b`` bits (``fixed_bits=8``, ``32`` for FP);
- a mapping from role or fixed layer name to bits (an ``int`` for W = A, a
  :class:`~benchmark.arena.policy.LayerBits`, or ``{"w_bits": w, "a_bits": a}``), which
  changes only what it names: ``{"stem": 32}`` (FP first conv, the rest as before),
  ``{"stem": 32, "se": 32}`` (QFA on ``mbv3-cifar``: FP first conv and SE, 8-bit
  classifier), ``{"stem": 32, "se": 32, "classifier": 32}`` (OQAT). A role resets the
  layers of that role set apart before; within one mapping a layer name wins over its role;
- a :class:`FixedConvention` (another space's ``space.fixed``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmark.arena.policy import LayerBits, Policy


@dataclass(frozen=True)
class FixedConvention:
    """Bits of a space's fixed layers: one per role, plus single-layer exceptions.

    Attributes:
        roles: role → bits, every role of the space, in network order.
        layers: fixed layer name → bits, for layers set apart from their role.
    """

    roles: Mapping[str, LayerBits]
    layers: Mapping[str, LayerBits] = field(default_factory=dict)

    @classmethod
    def of(cls, default: Mapping[str, int | LayerBits]) -> FixedConvention:
        """A convention from a space's ``default_fixed`` (role → bits)."""
        return cls({role: _bits(role, b) for role, b in default.items()})

    def apply(
        self,
        spec: FixedSpec | None,
        role_layers: Mapping[str, Collection[str]],
        allowed: Collection[int],
    ) -> FixedConvention:
        """This convention changed by ``spec`` (see the module docstring).

        ``role_layers`` maps each role to every layer name it can hold (the names a spec may
        use); ``allowed`` are the bit-widths a fixed layer may take. Raises ``ValueError``
        (one line) for an unknown role or layer, or bits outside ``allowed``.
        """
        if spec is None:
            return self
        if isinstance(spec, FixedConvention):  # the convention of another space
            spec = spec.to_dict()
        allowed = sorted(set(allowed))
        if isinstance(spec, int) and not isinstance(spec, bool):
            if spec not in allowed:
                raise ValueError(f"fixed_bits must be one of {allowed}, got {spec}")
            return FixedConvention({role: LayerBits(spec, spec) for role in self.roles})
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"fixed_bits must be bits (e.g. 8) or a mapping from role or fixed layer to "
                f"bits (e.g. {{'stem': 32}}), got {spec!r}"
            )
        roles, layers = dict(self.roles), dict(self.layers)
        owner = {name: role for role, names in role_layers.items() for name in names}
        named_roles = [k for k in spec if k in roles]
        named_layers = [k for k in spec if k not in roles]
        for key in named_layers:
            if key not in owner:
                raise ValueError(
                    f"unknown fixed role or layer {key!r}; roles: {', '.join(roles)}; "
                    f"fixed layers: {', '.join(owner)}"
                )
        for role in named_roles:
            roles[role] = _checked(role, spec[role], allowed)
            layers = {n: b for n, b in layers.items() if owner.get(n) != role}
        for name in named_layers:
            layers[name] = _checked(name, spec[name], allowed)
        layers = {n: b for n, b in layers.items() if b != roles[owner[n]]}
        return FixedConvention(roles, layers)

    def resolve(self, role_layers: Mapping[str, Sequence[str]]) -> Policy:
        """Bits of every fixed layer of one architecture (role → its layers, in order)."""
        policy: Policy = {}
        for role, names in role_layers.items():
            if role not in self.roles:
                raise ValueError(f"no bits for fixed role {role!r} in this convention")
            for name in names:
                policy[name] = self.layers.get(name, self.roles[role])
        return policy

    @property
    def uniform_bits(self) -> int | None:
        """``b`` when every fixed layer is at W = A = ``b`` bits, else ``None``."""
        values = {*self.roles.values(), *self.layers.values()}
        if len(values) != 1:
            return None
        (bits,) = values
        return bits.w_bits if bits.w_bits == bits.a_bits else None

    def to_dict(self) -> dict[str, Any]:
        """Role and layer → bits (an ``int`` when W = A, else ``{"w_bits", "a_bits"}``);
        a valid :data:`FixedSpec` that gives this convention back."""
        return {key: _plain(b) for key, b in {**self.roles, **self.layers}.items()}


FixedSpec = int | Mapping[str, Any] | FixedConvention
"""How a convention is written: bits for every fixed layer, a mapping from role or layer to
bits, or another :class:`FixedConvention` (the same as its :meth:`~FixedConvention.to_dict`)."""


def _plain(bits: LayerBits) -> int | dict[str, int]:
    if bits.w_bits == bits.a_bits:
        return int(bits.w_bits)
    return {"w_bits": int(bits.w_bits), "a_bits": int(bits.a_bits)}


def _bits(key: str, value: Any) -> LayerBits:
    if isinstance(value, LayerBits):
        return LayerBits(int(value.w_bits), int(value.a_bits))
    if isinstance(value, int) and not isinstance(value, bool):
        return LayerBits(value, value)
    if isinstance(value, Mapping) and set(value) == {"w_bits", "a_bits"}:
        w, a = value["w_bits"], value["a_bits"]
        if all(isinstance(b, int) and not isinstance(b, bool) for b in (w, a)):
            return LayerBits(w, a)
    raise ValueError(
        f"bits for {key!r} must be an int, a LayerBits or {{'w_bits': w, 'a_bits': a}}, "
        f"got {value!r}"
    )


def _checked(key: str, value: Any, allowed: Sequence[int]) -> LayerBits:
    bits = _bits(key, value)
    if bits.w_bits not in allowed or bits.a_bits not in allowed:
        raise ValueError(
            f"{key!r} cannot be fixed at W{bits.w_bits}A{bits.a_bits}: bits must be one of "
            f"{list(allowed)}"
        )
    return bits
