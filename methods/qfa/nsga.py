"""QFA's search: NSGA-II (pymoo) on (predicted top-1, cost) under the task's constraint.

apple/ml-batchquant ``nsgaii_search.py`` runs NSGA-II over integer genomes with the
predictor's accuracy and the subnet's cost as the two objectives. Here: pymoo's NSGA-II
with integer random sampling, SBX crossover and polynomial mutation rounded to integers
(pymoo's recipe for integer variables), objectives ``(−predicted top-1, cost)`` and one
inequality constraint ``cost − limit ≤ 0`` (pymoo keeps infeasible genomes out of the
front whenever feasible ones exist). The initial population is uniform random genomes plus
the caller's ``anchors`` (QFA gives the smallest and largest architectures at each uniform
bit-width): a small population run for few generations otherwise starts, and stays, in the
middle of the cost range, so its front covers a narrow band below the limit; the cheapest
anchor is never dominated on cost, so the front reaches down to it. This seeding is this
benchmark's choice (``nsgaii_search.py`` starts from random genomes at population 500 ×
1000 generations). Cost is the task's metric (BitOPs per 32×32 image or
weight bits) from the shared cost model (``space.cost``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.optimize import minimize

Objectives = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``genomes (P × G) → (predicted top-1 (P,), cost (P,))``."""


class SubnetProblem(Problem):
    """Integer genomes in ``[0, upper]``; minimise ``(−top-1, cost)`` s.t. ``cost ≤ limit``."""

    def __init__(self, upper: np.ndarray, objectives: Objectives, limit: float) -> None:
        super().__init__(n_var=len(upper), n_obj=2, n_ieq_constr=1, xl=0, xu=upper, vtype=int)
        self.objectives, self.limit = objectives, float(limit)

    def _evaluate(self, x: np.ndarray, out: dict, *args, **kwargs) -> None:
        top1, cost = self.objectives(np.asarray(x).round().astype(int))
        out["F"] = np.column_stack([-top1, cost])
        out["G"] = (cost - self.limit)[:, None] / max(self.limit, 1.0)


@dataclass
class FrontResult:
    """The non-dominated genomes NSGA-II ends with, their predicted top-1 and cost."""

    genomes: np.ndarray
    predicted: np.ndarray
    cost: np.ndarray
    evaluations: int


def search_front(
    upper: np.ndarray,
    objectives: Objectives,
    limit: float,
    *,
    population: int,
    generations: int,
    seed: int,
    anchors: np.ndarray | None = None,
) -> FrontResult:
    """Run NSGA-II; the final population's feasible non-dominated set (deduplicated).

    ``anchors`` (A × G genomes, A ≤ ``population``) join the initial population; the rest
    of it is uniform random integers, drawn from ``seed``.
    """
    problem = SubnetProblem(upper, objectives, limit)
    algorithm = NSGA2(
        pop_size=population,
        sampling=initial_population(upper, population, seed, anchors),
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    result = minimize(problem, algorithm, ("n_gen", generations), seed=seed, verbose=False)
    pop = result.pop
    genomes = np.asarray(pop.get("X")).round().astype(int)
    scores, feasible = np.asarray(pop.get("F")), np.asarray(pop.get("G"))[:, 0] <= 0
    feasible_idx = np.flatnonzero(feasible)
    keep = feasible_idx[_non_dominated(scores[feasible_idx])]
    _, first = np.unique(genomes[keep], axis=0, return_index=True)
    keep = keep[np.sort(first)]
    return FrontResult(
        genomes[keep], -scores[keep, 0], scores[keep, 1], int(result.algorithm.evaluator.n_eval)
    )


def initial_population(
    upper: np.ndarray, population: int, seed: int, anchors: np.ndarray | None = None
) -> np.ndarray:
    """``population`` genomes: the ``anchors`` (deduplicated, at most ``population``), then
    uniform random integers in ``[0, upper]`` drawn from ``seed``."""
    upper = np.asarray(upper, int)
    rng = np.random.default_rng(seed)
    random_part = rng.integers(0, upper + 1, size=(population, len(upper)))
    if anchors is None or len(anchors) == 0:
        return random_part
    anchors = np.unique(np.asarray(anchors, int).reshape(-1, len(upper)), axis=0)[:population]
    if np.any(anchors < 0) or np.any(anchors > upper):
        raise ValueError("qfa: an NSGA-II anchor genome lies outside the genes' ranges")
    return np.concatenate([anchors, random_part[: population - len(anchors)]])


def _non_dominated(scores: np.ndarray) -> np.ndarray:
    """Mask of rows no other row dominates (both objectives minimised)."""
    n = len(scores)
    mask = np.ones(n, bool)
    for i in range(n):
        better = np.all(scores <= scores[i], axis=1) & np.any(scores < scores[i], axis=1)
        mask[i] = not better.any()
    return mask
