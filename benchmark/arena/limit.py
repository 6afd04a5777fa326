"""The task's cost limit as one object (``ctx.limit``): what every method optimises against.

Units: BitOPs per 32 × 32 image for a ``bitops`` constraint, bits of weight storage for a
``size`` one. The limit is absolute; a relative constraint (``bitops<=0.3``) is a fraction
of the space's reference at uniform W8A8 (:meth:`SearchSpace.reference`). The never-searched
layers (the space's fixed convention) take their share first; what is left is the searched
layers' (``free``). The feasibility test is the protocol's own
(:meth:`~benchmark.arena.protocol.Constraint.satisfied`): a method and the harness cannot
disagree on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmark.arena.cost import CostReport
from benchmark.arena.cost_table import CostTable
from benchmark.arena.policy import LayerBits
from benchmark.arena.protocol import Constraint
from benchmark.arena.spaces.base import SearchSpace


@dataclass(frozen=True)
class TaskLimit:
    """The task's constraint on one space (with its fixed-layer convention).

    Attributes:
        constraint: the task's constraint, e.g. ``bitops<=0.3``.
        space: the space it applies to (``ctx.space``, or a method's
            ``space.with_fixed(...)`` through :meth:`on`).
    """

    constraint: Constraint
    space: SearchSpace

    # --- the limit ---------------------------------------------------------------------
    @property
    def metric(self) -> str:
        """``"bitops"`` or ``"size"``."""
        return self.constraint.metric

    @property
    def unit(self) -> str:
        """The unit of every value here: ``"BitOPs"`` (per image) or ``"bits"``."""
        return "BitOPs" if self.metric == "bitops" else "bits"

    @property
    def reference(self) -> int:
        """The space's reference model at uniform W8A8, in this metric (what a relative
        limit is a fraction of); an integer, as the cost model counts."""
        ref = self.space.reference()
        return ref.bitops_w8a8 if self.metric == "bitops" else ref.size_bits_w8a8

    @property
    def absolute(self) -> float:
        """The limit in BitOPs per image or bits."""
        return self.constraint.absolute(self.space.reference())

    @property
    def ratio(self) -> float:
        """The limit as a ratio to :attr:`reference`."""
        return self.absolute / self.reference

    def ratio_of(self, value: float) -> float:
        """``value`` (this metric's unit) as a ratio to :attr:`reference`."""
        return float(value) / self.reference

    def on(self, space: SearchSpace) -> TaskLimit:
        """The same constraint on ``space`` (e.g. the task's space with a method's own
        fixed-layer convention)."""
        return TaskLimit(self.constraint, space)

    # --- per architecture: the fixed layers' share and the searched layers' costs --------
    def table(self, arch: Any = None) -> CostTable:
        """The per-layer cost table of ``arch`` (default: the space's reference)."""
        return self.space.cost_table(arch)

    def fixed(self, arch: Any = None) -> float:
        """What the never-searched layers of ``arch`` cost, under the space's convention."""
        return float(self.table(arch).fixed_total(self.metric))

    def free(self, arch: Any = None) -> float:
        """What the searched layers of ``arch`` may cost together: the limit less
        :meth:`fixed` (negative when the fixed layers alone are over it)."""
        return self.absolute - self.fixed(arch)

    def coefficients(self, arch: Any = None, bits: Sequence[int] | None = None) -> np.ndarray:
        """Each searched layer's cost at every (weight, activation) choice of ``bits``
        (default: the space's allowed bits), float64, shape ``(layers, choices, choices)``
        in the order of ``table(arch).searchable`` (a linear program's coefficients); a
        ``size`` limit's are the same for every activation choice."""
        coefs = self.table(arch).coefficients(self.metric, bits).astype(np.float64)
        if self.metric == "size":
            coefs = np.repeat(coefs[:, :, None], coefs.shape[1], axis=2)
        return coefs

    def pair_coefficients(self, pairs: Sequence[tuple[int, int]], arch: Any = None) -> np.ndarray:
        """Each searched layer's cost at each (weight bits, activation bits) of ``pairs``:
        shape ``(layers, len(pairs))``."""
        return self.table(arch).pair_coefficients(self.metric, pairs)

    # --- one policy -----------------------------------------------------------------------
    def cost(self, policy: Mapping[str, LayerBits], arch: Any = None) -> float:
        """The metric's value of ``policy`` on ``arch`` (completed with the fixed layers)."""
        report = self._report(policy, arch)
        return float(report.bitops if self.metric == "bitops" else report.size_bits)

    def slack(self, policy: Mapping[str, LayerBits], arch: Any = None) -> float:
        """The limit less the policy's cost: what is left (negative: over by that much)."""
        return self.absolute - self.cost(policy, arch)

    def met(self, policy: Mapping[str, LayerBits], arch: Any = None) -> bool:
        """Whether ``policy`` on ``arch`` meets the limit (the protocol's test)."""
        return self.constraint.satisfied(self._report(policy, arch), self.space.reference())

    def check(self, policy: Mapping[str, LayerBits], arch: Any = None) -> str | None:
        """``None`` when ``policy`` meets the limit, else the one line that says by how
        much it misses it."""
        if self.met(policy, arch):
            return None
        value = self.cost(policy, arch)
        return (
            f"costs {value:.6g} {self.unit} ({self.ratio_of(value):.4f}× W8A8), over the "
            f"limit {self.constraint.text} ({self.absolute:.6g} {self.unit}) by "
            f"{value - self.absolute:.6g}"
        )

    def to_dict(self, arch: Any = None) -> dict[str, Any]:
        """The limit for a search log: metric, unit, absolute limit, W8A8 reference, the
        fixed layers' share and the searched layers' (of ``arch``)."""
        return {
            "constraint": self.constraint.text,
            "metric": self.metric,
            "unit": self.unit,
            "limit": self.absolute,
            "reference_w8a8": self.reference,
            "fixed_layers": self.fixed(arch),
            "free": self.free(arch),
        }

    def _report(self, policy: Mapping[str, LayerBits], arch: Any) -> CostReport:
        return self.space.cost(policy, arch)
