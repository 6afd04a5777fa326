"""HAWQ-V3's integer linear program: one bit choice per layer group under one cost limit.

``minimise Σ_g Σ_k Ω[g, k]·z[g, k]`` subject to ``Σ_k z[g, k] = 1`` for every group ``g``
and ``Σ_g Σ_k cost[g, k]·z[g, k] ≤ budget``, ``z`` binary: one variable per (group, choice),
as the HAWQ repository's ``ILP.ipynb`` does with one integer per layer for {4, 8} (one-hot
binaries generalise it to any number of choices). A group is one layer, or layers the space
ties to one bit-width (HAWQ ties each downsample conv to its block's main path:
``x4 == x6``). Solved by PuLP with its bundled CBC (the notebook: GLPK), zero gap; the
answer is re-checked in exact integer arithmetic and re-solved with a tighter limit in the
(unseen) case that a solver tolerance let it pass the budget.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pulp

MAX_TIGHTENINGS = 3


class InfeasibleAllocation(ValueError):
    """No choice per group fits the budget (raised before the solver runs)."""


@dataclass(frozen=True)
class AllocationProblem:
    """One HAWQ ILP.

    Attributes:
        omega: ``(groups, choices)`` sensitivities ``Ω`` (loss units; lower is better).
        cost: ``(groups, choices)`` integer costs: BitOPs per image or bits of weights.
        budget: the most the searched groups may cost together (same unit as ``cost``: the
            task's limit minus the fixed layers' cost).
    """

    omega: np.ndarray
    cost: np.ndarray
    budget: float

    def __post_init__(self) -> None:
        omega = np.asarray(self.omega, dtype=float)
        cost = np.asarray(self.cost)
        if omega.ndim != 2 or omega.shape != cost.shape or omega.size == 0:
            raise ValueError(
                f"omega and cost must be equal non-empty (groups, choices) arrays, got "
                f"{omega.shape} and {cost.shape}"
            )
        if not np.all(np.isfinite(omega)):
            raise ValueError("omega has a non-finite entry")
        if not np.issubdtype(cost.dtype, np.integer) or np.any(cost < 0):
            raise ValueError("cost must be non-negative integers")
        object.__setattr__(self, "omega", omega)
        object.__setattr__(self, "cost", cost.astype(np.int64))

    @property
    def groups(self) -> int:
        return self.omega.shape[0]

    @property
    def choices(self) -> int:
        return self.omega.shape[1]

    def objective(self, picks: Sequence[int]) -> float:
        return math.fsum(float(self.omega[g, k]) for g, k in enumerate(picks))

    def total_cost(self, picks: Sequence[int]) -> int:
        return int(sum(int(self.cost[g, k]) for g, k in enumerate(picks)))

    def fits(self, picks: Sequence[int]) -> bool:
        return self.total_cost(picks) <= self.budget

    @property
    def min_cost(self) -> int:
        """The cheapest assignment's cost (every group at its cheapest choice)."""
        return int(self.cost.min(axis=1).sum())


@dataclass
class Allocation:
    """The ILP's answer: one choice index per group, its objective and cost, CBC's status."""

    picks: list[int]
    objective: float
    cost: int
    status: str
    info: dict[str, Any] = field(default_factory=dict)


def solve(problem: AllocationProblem) -> Allocation:
    """Solve ``problem`` exactly (CBC, zero gap). Raises :class:`InfeasibleAllocation` when
    even the cheapest choices exceed the budget, ``RuntimeError`` on another CBC status."""
    if problem.min_cost > problem.budget:
        raise InfeasibleAllocation(
            f"the cheapest choice of every group costs {problem.min_cost}, over the budget "
            f"{problem.budget:.6g}"
        )
    budget = math.floor(problem.budget)
    tightened = 0
    while True:
        picks, status = _solve_once(problem, budget)
        if status != "Optimal":
            raise RuntimeError(f"HAWQ ILP not solved to optimality (CBC status {status})")
        cost = problem.total_cost(picks)
        if cost <= problem.budget:
            break
        if tightened == MAX_TIGHTENINGS:
            raise RuntimeError(f"HAWQ ILP answer over budget after {tightened} tightenings")
        budget -= cost - budget + 1  # take the solver's overshoot off the limit
        tightened += 1
    info = {"tightened": tightened} if tightened else {}
    return Allocation(picks, problem.objective(picks), cost, status, info)


def _solve_once(problem: AllocationProblem, budget: int) -> tuple[list[int], str]:
    """One CBC solve with the limit ``budget``; the picks and CBC's status."""
    top = float(np.max(np.abs(problem.omega))) or 1.0
    omega = problem.omega / top  # objective of order 1: CBC's tolerances are absolute
    scale = float(max(budget, 1))
    ilp = pulp.LpProblem("hawq_ilp", pulp.LpMinimize)
    z = [[_binary(ilp, f"z{g}_{k}") for k in range(problem.choices)] for g in range(problem.groups)]
    ilp += pulp.lpSum(
        float(omega[g, k]) * z[g][k] for g in range(problem.groups) for k in range(problem.choices)
    )
    for row in z:
        ilp += pulp.lpSum(row) == 1
    ilp += (
        pulp.lpSum(
            float(problem.cost[g, k]) / scale * z[g][k]
            for g in range(problem.groups)
            for k in range(problem.choices)
        )
        <= budget / scale
    )
    with warnings.catch_warnings():  # PuLP 3.x announces PULP_CBC_CMD's removal in 4.0
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(msg=False, gapRel=0.0, gapAbs=0.0)
    ilp.solve(solver)
    status = pulp.LpStatus[ilp.status]
    picks = [int(np.argmax([v.value() or 0.0 for v in row])) for row in z]
    return picks, status


def _binary(problem: pulp.LpProblem, name: str) -> pulp.LpVariable:
    """A binary variable of ``problem`` (PuLP ≥ 3.3: ``add_variable``; older: ``LpVariable``)."""
    if hasattr(problem, "add_variable"):
        return problem.add_variable(name, lowBound=0, upBound=1, cat=pulp.LpBinary)
    return pulp.LpVariable(name, lowBound=0, upBound=1, cat=pulp.LpBinary)
