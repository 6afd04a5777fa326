"""The math of OMPQ (Ma et al., AAAI 2023): ORM, importances, objective, LP / ILP, rounding.

Torch-free (numpy + PuLP), so that every step can be tested on toy numbers.

- :func:`orm_matrix`: the Orthogonality Metric between feature taps, computed as centred
  linear CKA: ``K = X Xᵀ`` (``X``: N samples × D features), ``K̃ = H K H`` with
  ``H = I − 11ᵀ/N``, ``ORM(i, j) = ⟨K̃_i, K̃_j⟩_F / (‖K̃_i‖_F ‖K̃_j‖_F)`` ∈ [0, 1].
- :func:`gamma` ``γ_i = Σ_{j≠i} ORM(i, j)``; :func:`importance` ``θ_i = exp(−β γ_i)``.
- :func:`objective_coefs`: the suffix mean ``c_i = (Σ_{j≥i} θ_j) / (L − i + 1)``; OMPQ
  maximises ``Σ_i c_i x_i`` with ``x_i = b_i / 8`` (``b_i``: weight bits of variable i).
- :class:`BitProblem`: that objective under one linear budget
  ``Σ_i u_i b_i ≤ B`` (``u_i``: cost per weight bit: BitOPs or bits of storage).
- :func:`solve_lp` (the paper's relaxation, solved exactly by PuLP/CBC) then
  :func:`round_floor_ceil` (the paper's budget-respecting floor/ceil search), or
  :func:`solve_ilp` (the exact integer program over the allowed bits: a stated variant).
- :func:`repair`: the last guard that brings an integer solution under the budget.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pulp

SNAP = 1e-6
"""Bits within this distance of an allowed bit-width count as that bit-width (LP noise)."""

MAX_ENUMERATED = 16
"""Floor/ceil search enumerates all 2^k roundings up to k fractional variables; above, greedy."""


# --- ORM ----------------------------------------------------------------------------
def gram_linear(features: np.ndarray) -> np.ndarray:
    """Linear-kernel Gram matrix ``X Xᵀ`` (N × N) of ``features`` (N samples × any shape)."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    return x @ x.T


def center_gram(gram: np.ndarray) -> np.ndarray:
    """``H K H`` with ``H = I − 11ᵀ/N``: the Gram matrix of the sample-centred features."""
    k = np.asarray(gram, dtype=np.float64)
    row = k.mean(axis=0, keepdims=True)
    col = k.mean(axis=1, keepdims=True)
    return k - row - col + k.mean()


def orm_from_grams(grams: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """ORM (centred linear CKA) between every pair of taps, from their Gram matrices.

    Returns ``(orm, degenerate)``: the symmetric T × T matrix with unit diagonal, and the
    indices of degenerate taps, whose centred Gram vanishes (‖HKH‖ ≤ 1e-10 ‖K‖: features
    constant over the batch). CKA is 0/0 there; by convention such a tap shares nothing
    with the others (ORM 0 off the diagonal).
    """
    raw = np.array([np.linalg.norm(np.asarray(k, dtype=np.float64)) for k in grams])
    centred = np.stack([center_gram(k).ravel() for k in grams])
    norms = np.linalg.norm(centred, axis=1)
    ok = (norms > 1e-10 * raw) & np.isfinite(norms)
    degenerate = [i for i in range(len(grams)) if not ok[i]]
    unit = centred / np.where(ok, norms, 1.0)[:, None]
    orm = unit @ unit.T
    orm = np.clip((orm + orm.T) / 2, 0.0, 1.0)
    for i in degenerate:
        orm[i, :] = orm[:, i] = 0.0
    np.fill_diagonal(orm, 1.0)
    return orm, degenerate


def orm_matrix(features: Sequence[np.ndarray]) -> np.ndarray:
    """ORM between taps given their features (each N samples × anything; same N)."""
    return orm_from_grams([gram_linear(f) for f in features])[0]


def gamma(orm: np.ndarray) -> np.ndarray:
    """``γ_i = Σ_{j≠i} ORM(i, j)``: how much tap i shares with all others (0 … T−1)."""
    orm = np.asarray(orm, dtype=np.float64)
    return orm.sum(axis=1) - np.diag(orm)


def importance(gammas: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """``θ = exp(−β γ)`` and the same divided by its largest entry.

    The objective's optimum is invariant to a positive factor, so the solvers use the
    scaled form ``exp(−β (γ − min γ))`` (max 1), which does not underflow to all zeros
    for large β·γ; the raw θ is returned for the log.
    """
    g = np.asarray(gammas, dtype=np.float64)
    raw = np.exp(-beta * g)
    scaled = np.exp(-beta * (g - g.min())) if len(g) else g
    return raw, scaled


def objective_coefs(theta: np.ndarray) -> np.ndarray:
    """Suffix means ``c_i = (Σ_{j≥i} θ_j) / (L − i + 1)`` (taps in network order)."""
    theta = np.asarray(theta, dtype=np.float64)
    suffix = np.cumsum(theta[::-1])[::-1]
    return suffix / np.arange(len(theta), 0, -1)


# --- the allocation problem ---------------------------------------------------------
@dataclass(frozen=True)
class BitProblem:
    """Maximise ``Σ c_i b_i / 8`` s.t. ``Σ u_i b_i ≤ budget``, ``b_i`` ∈ ``choices``.

    Attributes:
        coefs: objective coefficient ``c_i`` of each variable (per unit of ``x = b/8``).
        unit_costs: ``u_i``, cost of one weight bit of variable i (BitOPs per image for a
            BitOPs limit: ``Σ MACs·a_bits`` of its layers; bits for a size limit:
            ``Σ params`` of its layers). Positive.
        budget: cost left for the variables (the limit minus the fixed layers' cost).
        choices: allowed weight bit-widths, ascending; the LP's bounds are their min/max.
    """

    coefs: np.ndarray
    unit_costs: np.ndarray
    budget: float
    choices: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.coefs) != len(self.unit_costs):
            raise ValueError("coefs and unit_costs must have one entry per variable")
        if not self.choices or list(self.choices) != sorted(set(self.choices)):
            raise ValueError(f"choices must be ascending distinct bit-widths, got {self.choices}")
        if np.any(np.asarray(self.unit_costs) <= 0):
            raise ValueError("every variable must have a positive cost per bit")

    @property
    def size(self) -> int:
        return len(self.coefs)

    def cost(self, bits: Sequence[float]) -> float:
        """``Σ u_i b_i`` (the problem's cost unit)."""
        return float(np.dot(self.unit_costs, np.asarray(bits, dtype=np.float64)))

    def objective(self, bits: Sequence[float]) -> float:
        """``Σ c_i b_i / 8``."""
        return float(np.dot(self.coefs, np.asarray(bits, dtype=np.float64)) / 8)

    def fits(self, bits: Sequence[float]) -> bool:
        """Cost within the budget (relative tolerance 1e-12, far inside the harness's 1e-9)."""
        return self.cost(bits) <= self.budget * (1 + 1e-12)

    def min_cost(self) -> float:
        return self.cost([self.choices[0]] * self.size)

    def max_cost(self) -> float:
        return self.cost([self.choices[-1]] * self.size)


@dataclass
class Solution:
    """Integer bits per variable and how they were found (JSON-ready ``info``)."""

    bits: list[int]
    objective: float
    cost: float
    info: dict = field(default_factory=dict)


class InfeasibleBudget(ValueError):
    """Even every variable at the lowest allowed bits exceeds the budget."""


def _check_feasible(problem: BitProblem) -> None:
    if not problem.fits([problem.choices[0]] * problem.size):
        raise InfeasibleBudget(
            f"minimum cost {problem.min_cost():.6g} exceeds the budget {problem.budget:.6g}"
        )


def _solve(problem: pulp.LpProblem) -> str:
    """Solve with the CBC binary bundled with PuLP (silent, zero gap); the CBC status."""
    with warnings.catch_warnings():  # PuLP 3.x announces PULP_CBC_CMD's removal in 4.0
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(msg=False, gapRel=0.0, gapAbs=0.0)
    problem.solve(solver)
    return pulp.LpStatus[problem.status]


def _variable(
    problem: pulp.LpProblem, name: str, low: float | None, up: float | None, cat: str
) -> pulp.LpVariable:
    """A variable of ``problem`` (PuLP ≥ 3.3: ``add_variable``; older: ``LpVariable``)."""
    if hasattr(problem, "add_variable"):
        return problem.add_variable(name, lowBound=low, upBound=up, cat=cat)
    return pulp.LpVariable(name, lowBound=low, upBound=up, cat=cat)


def _scaled(problem: BitProblem) -> tuple[np.ndarray, np.ndarray]:
    """Objective scaled to max 1 and costs scaled by the budget (well-conditioned for CBC)."""
    top = float(np.max(np.abs(problem.coefs))) if problem.size else 1.0
    coefs = problem.coefs / (top if top > 0 else 1.0)
    return coefs, problem.unit_costs / max(problem.budget, 1e-300)


def solve_lp(problem: BitProblem) -> tuple[np.ndarray, dict]:
    """The LP relaxation: continuous ``x_i = b_i/8`` in ``[min, max choice]/8``.

    Returns the continuous bits ``8·x`` (snapped to allowed bit-widths within
    :data:`SNAP`) and ``{"status", "objective"}`` (objective ``Σ c_i x_i`` in the
    problem's units). Raises :class:`InfeasibleBudget` when the lowest bits do not fit.
    """
    _check_feasible(problem)
    lo, hi = problem.choices[0] / 8, problem.choices[-1] / 8
    coefs, costs = _scaled(problem)
    lp = pulp.LpProblem("ompq_lp", pulp.LpMaximize)
    x = [_variable(lp, f"x{i}", lo, hi, pulp.LpContinuous) for i in range(problem.size)]
    lp += pulp.lpSum(float(c) * v for c, v in zip(coefs, x, strict=True))
    lp += pulp.lpSum(8 * float(u) * v for u, v in zip(costs, x, strict=True)) <= 1.0
    status = _solve(lp)
    if status != "Optimal":
        raise RuntimeError(f"OMPQ LP not solved to optimality (CBC status {status})")
    bits = np.array([8 * float(v.value() or 0.0) for v in x])
    bits = np.clip(bits, problem.choices[0], problem.choices[-1])
    bits = np.array([_snap(b, problem.choices) for b in bits])
    return bits, {"status": status, "objective": problem.objective(bits)}


def _snap(b: float, choices: Sequence[int]) -> float:
    nearest = min(choices, key=lambda c: abs(c - b))
    return float(nearest) if abs(nearest - b) <= SNAP else float(b)


def _floor_ceil(b: float, choices: Sequence[int]) -> tuple[int, int]:
    """The largest allowed bit-width ≤ ``b`` and the smallest ≥ ``b``."""
    floor = max((c for c in choices if c <= b + SNAP), default=choices[0])
    ceil = min((c for c in choices if c >= b - SNAP), default=choices[-1])
    return floor, ceil


def round_floor_ceil(problem: BitProblem, lp_bits: Sequence[float]) -> Solution:
    """The paper's rounding: each variable to the allowed bit-width just below or above its
    LP value, choosing the combination that leaves the least budget unused (ties: the
    higher objective), never over the budget.

    All ``2^k`` combinations of the ``k`` fractional variables are searched (pruned) when
    ``k ≤`` :data:`MAX_ENUMERATED`; beyond, every fractional variable is floored and then
    ceiled greedily by objective gain per cost. (A vertex of this one-constraint LP has at
    most one fractional variable, so the search is tiny in practice.)
    """
    _check_feasible(problem)
    pairs = [_floor_ceil(b, problem.choices) for b in lp_bits]
    base = [f for f, _ in pairs]
    fractional = [i for i, (f, c) in enumerate(pairs) if f != c]
    if len(fractional) <= MAX_ENUMERATED:
        best, mode = _enumerate(problem, base, pairs, fractional), "enumerate"
    else:
        best, mode = _greedy_ceil(problem, base, pairs, fractional), "greedy"
    info = {"method": "floor/ceil", "mode": mode, "fractional": fractional}
    if best is None:  # the floors themselves are over (LP tolerance): repair them
        best, info["repaired"] = repair(problem, base)
    return Solution(best, problem.objective(best), problem.cost(best), info)


def _enumerate(
    problem: BitProblem, base: list[int], pairs: list[tuple[int, int]], fractional: list[int]
) -> list[int] | None:
    best: list[int] | None = None
    best_key = (-math.inf, -math.inf)
    for pick in itertools.product((0, 1), repeat=len(fractional)):
        bits = list(base)
        for i, up in zip(fractional, pick, strict=True):
            bits[i] = pairs[i][up]
        if not problem.fits(bits):
            continue
        key = (problem.cost(bits), problem.objective(bits))
        if key > best_key:
            best, best_key = bits, key
    return best


def _greedy_ceil(
    problem: BitProblem, base: list[int], pairs: list[tuple[int, int]], fractional: list[int]
) -> list[int] | None:
    if not problem.fits(base):
        return None
    bits = list(base)

    def gain(i: int) -> float:
        return problem.coefs[i] / problem.unit_costs[i]

    for i in sorted(fractional, key=lambda i: (-gain(i), i)):
        trial = list(bits)
        trial[i] = pairs[i][1]
        if problem.fits(trial):
            bits = trial
    return bits


def repair(problem: BitProblem, bits: Sequence[int]) -> tuple[list[int], int]:
    """Lower bits one allowed step at a time (least objective lost per cost saved first)
    until the budget holds. Returns ``(bits, steps taken)``."""
    _check_feasible(problem)
    bits = [int(b) for b in bits]
    steps = 0
    while not problem.fits(bits):
        options = []
        for i, b in enumerate(bits):
            lower = [c for c in problem.choices if c < b]
            if lower:
                drop = b - lower[-1]
                loss = problem.coefs[i] * drop / (problem.unit_costs[i] * drop)
                options.append((loss, i, lower[-1]))
        _, i, new = min(options)
        bits[i] = new
        steps += 1
    return bits, steps


def solve_ilp(problem: BitProblem, incumbent: Sequence[int] | None = None) -> Solution:
    """The exact integer program: one binary per (variable, allowed bit-width), one chosen
    per variable, same objective and budget (PuLP/CBC, zero optimality gap).

    ``incumbent`` (e.g. the rounded LP) is kept if CBC returns a worse point (solver
    tolerances), so the result is never below it. The answer is re-checked exactly and
    :func:`repair` ed if a tolerance let it pass the budget.
    """
    _check_feasible(problem)
    coefs, costs = _scaled(problem)
    choices = problem.choices
    ilp = pulp.LpProblem("ompq_ilp", pulp.LpMaximize)
    z = [
        [_variable(ilp, f"z{i}_{b}", 0, 1, pulp.LpBinary) for b in choices]
        for i in range(problem.size)
    ]
    ilp += pulp.lpSum(
        float(coefs[i]) * b / 8 * z[i][k]
        for i in range(problem.size)
        for k, b in enumerate(choices)
    )
    for row in z:
        ilp += pulp.lpSum(row) == 1
    ilp += (
        pulp.lpSum(
            float(costs[i]) * b * z[i][k]
            for i in range(problem.size)
            for k, b in enumerate(choices)
        )
        <= 1.0
    )
    status = _solve(ilp)
    if status != "Optimal":
        raise RuntimeError(f"OMPQ ILP not solved to optimality (CBC status {status})")
    bits = [choices[int(np.argmax([v.value() or 0.0 for v in row]))] for row in z]
    info: dict = {"method": "ilp", "status": status}
    if not problem.fits(bits):
        bits, info["repaired"] = repair(problem, bits)
    if incumbent is not None and problem.fits(incumbent):
        if problem.objective(incumbent) > problem.objective(bits):
            bits, info["kept_incumbent"] = [int(b) for b in incumbent], True
    return Solution(bits, problem.objective(bits), problem.cost(bits), info)
