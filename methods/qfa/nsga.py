"""QFA's search: NSGA-II (pymoo) on (predicted top-1, cost) under the task's constraint.

apple/ml-batchquant ``nsgaii_search.py`` runs NSGA-II over integer genomes with the
predictor's accuracy and the subnet's cost as the two objectives, and starts it from the
measured samples: its first population is built from the Pareto set of the predictor's
data (measured top-1, cost), then the next non-dominated layers, a layer that does not fit
cut by crowding distance (``build_pareto_population``). Here the same seeding
(:func:`pareto_seeds`), the rest of the population (when fewer samples were measured than
the population holds) uniform random genomes; then pymoo's NSGA-II with SBX crossover and
polynomial mutation rounded to integers (pymoo's recipe for integer variables), objectives
``(−predicted top-1, cost)`` and one inequality constraint ``cost − limit ≤ 0`` (pymoo
keeps infeasible genomes out of the front whenever feasible ones exist). The original runs
500 × 1000 generations with its own crossover and mutation; pymoo's operators are this
benchmark's choice. Cost is the task's metric (BitOPs per 32×32 image or weight bits) from
the shared cost model (``space.cost``).
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
    seeds: np.ndarray | None = None,
) -> FrontResult:
    """Run NSGA-II; the final population's feasible non-dominated set (deduplicated).

    ``seeds`` (genomes, best first, e.g. :func:`pareto_seeds` of the measured samples) make
    up the first population, as many as fit; the rest is uniform random integers drawn
    from ``seed``.
    """
    problem = SubnetProblem(upper, objectives, limit)
    algorithm = NSGA2(
        pop_size=population,
        sampling=initial_population(upper, population, seed, seeds),
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


def pareto_seeds(genomes: np.ndarray, top1: np.ndarray, cost: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` of ``genomes`` (distinct), in Pareto layers of (measured top-1 up,
    cost down): the non-dominated set first, then the set that is non-dominated once it is
    removed, and so on; a layer that does not fit keeps its members of largest crowding
    distance (the extremes of the layer first), as the original's
    ``build_pareto_population`` does."""
    genomes = np.asarray(genomes, int)
    _, first = np.unique(genomes, axis=0, return_index=True)
    left = np.sort(first)  # distinct genomes, first occurrence
    scores = np.column_stack([-np.asarray(top1, float), np.asarray(cost, float)])
    chosen: list[int] = []
    while len(left) and len(chosen) < count:
        layer = left[_non_dominated(scores[left])]
        room = count - len(chosen)
        if len(layer) > room:
            layer = layer[np.argsort(-_crowding(scores[layer]), kind="stable")[:room]]
        chosen.extend(int(i) for i in layer)
        left = np.setdiff1d(left, layer, assume_unique=True)
    return genomes[np.asarray(chosen, int)]


def _crowding(scores: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row (both objectives; the ends infinite)."""
    n = len(scores)
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for column in scores.T:
        order = np.argsort(column, kind="stable")
        span = column[order[-1]] - column[order[0]]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    return distance


def initial_population(
    upper: np.ndarray, population: int, seed: int, seeds: np.ndarray | None = None
) -> np.ndarray:
    """``population`` genomes: the ``seeds`` (deduplicated in order, at most
    ``population``), then uniform random integers in ``[0, upper]`` drawn from ``seed``."""
    upper = np.asarray(upper, int)
    rng = np.random.default_rng(seed)
    random_part = rng.integers(0, upper + 1, size=(population, len(upper)))
    if seeds is None or len(seeds) == 0:
        return random_part
    seeds = np.asarray(seeds, int).reshape(-1, len(upper))
    _, first = np.unique(seeds, axis=0, return_index=True)
    seeds = seeds[np.sort(first)][:population]
    if np.any(seeds < 0) or np.any(seeds > upper):
        raise ValueError("qfa: an NSGA-II seed genome lies outside the genes' ranges")
    return np.concatenate([seeds, random_part[: population - len(seeds)]])


def _non_dominated(scores: np.ndarray) -> np.ndarray:
    """Mask of rows no other row dominates (both objectives minimised)."""
    n = len(scores)
    mask = np.ones(n, bool)
    for i in range(n):
        better = np.all(scores <= scores[i], axis=1) & np.any(scores < scores[i], axis=1)
        mask[i] = not better.any()
    return mask
