"""A generic evolutionary search over the architectures of an elastic space.

The elitist loop of Once-for-All's ``EvolutionFinder`` (Cai et al., ICLR
2020), which OQAT's code base descends from; any method may use it with its own score
and feasibility test:

1. the initial population: ``population`` feasible architectures drawn uniformly
   (``space.sample_arch``, redrawn up to ``max_tries`` times each; when no draw is
   feasible the space's smallest architecture, if feasible, takes the place);
2. each generation keeps the best ``parent_fraction`` of the population (the parents),
   adds ``mutation_fraction · population`` children by ``space.mutate`` of a random parent
   (each gene resampled with probability ``mutate_prob``) and fills the rest with
   ``space.crossover`` of two random parents; a child that is infeasible is redrawn (up to
   ``max_tries`` times, then dropped);
3. every new architecture is scored once (scores are cached by architecture, so a child
   equal to an earlier one costs nothing).

Scores are "higher is better" (e.g. validation top-1 in percent). The search holds no
state of its own besides ``rng`` (a ``random.Random``), so the same seed gives the same
search for the same scores.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmark.arena.spaces.base import ElasticSearchSpace


@dataclass(frozen=True)
class Scored:
    """One evaluated architecture and its score (the caller's unit, higher is better)."""

    arch: Any
    score: float


@dataclass
class EvolutionResult:
    """What an evolutionary search found.

    Attributes:
        population: the final population, best first.
        history: one entry per generation (0 = the initial population): ``generation``,
            ``best`` and ``mean`` score of the population, ``evaluated`` (new
            architectures scored in that generation) and ``best_arch`` (its dict form
            where the arch has ``to_dict``).
        evaluations: architectures scored in all (each at most once).
    """

    population: list[Scored]
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0

    @property
    def best(self) -> Scored:
        return self.population[0]


def evolve(
    space: ElasticSearchSpace,
    score: Callable[[Any], float],
    feasible: Callable[[Any], bool],
    rng: random.Random,
    *,
    population: int,
    generations: int,
    parent_fraction: float = 0.25,
    mutation_fraction: float = 0.5,
    mutate_prob: float = 0.1,
    max_tries: int = 100,
    on_generation: Callable[[dict[str, Any]], None] | None = None,
) -> EvolutionResult | None:
    """Evolve architectures of ``space`` under ``feasible`` to maximise ``score``.

    Args:
        score: ``arch → score`` (e.g. validation top-1 after BN recalibration, percent).
        feasible: ``arch → bool``, the constraint (e.g. BitOPs under the task's limit).
        population: individuals per generation (≥ 2).
        generations: generations after the initial population (≥ 0).
        on_generation: called with each history entry as it is made (logs, reports).

    Returns ``None`` when no feasible architecture was found at all.
    """
    if population < 2:
        raise ValueError(f"population must be at least 2, got {population}")
    if generations < 0:
        raise ValueError(f"generations must be at least 0, got {generations}")
    fractions = {"parent_fraction": parent_fraction, "mutation_fraction": mutation_fraction}
    for name, value in fractions.items():
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    search = _Evolution(space, score, feasible, rng, max_tries, on_generation)
    members = search.initial(population)
    if members is None:
        return None
    num_parents = max(1, round(parent_fraction * population))
    num_mutations = round(mutation_fraction * population)
    for generation in range(1, generations + 1):
        members = search.next_generation(
            generation, members[:num_parents], num_mutations, population, mutate_prob
        )
    return EvolutionResult(members, search.history, len(search.cache))


@dataclass
class _Evolution:
    """One search's score cache and history, and how it draws feasible architectures."""

    space: ElasticSearchSpace
    score: Callable[[Any], float]
    feasible: Callable[[Any], bool]
    rng: random.Random
    max_tries: int
    on_generation: Callable[[dict[str, Any]], None] | None
    cache: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def evaluate(self, arch: Any) -> Scored:
        """``arch`` scored (once per architecture)."""
        key = repr(arch)
        if key not in self.cache:
            self.cache[key] = float(self.score(arch))
        return Scored(arch, self.cache[key])

    def draw(self, make: Callable[[], Any]) -> Any | None:
        """The first feasible of up to ``max_tries`` architectures from ``make``."""
        for _ in range(self.max_tries):
            arch = make()
            if self.feasible(arch):
                return arch
        return None

    def initial(self, population: int) -> list[Scored] | None:
        """The first generation, best first (the smallest architecture stands in for a
        draw that finds nothing feasible); ``None`` when not even that one is."""
        space, rng = self.space, self.rng
        fallback = space.min_arch() if self.feasible(space.min_arch()) else None
        members: list[Scored] = []
        for _ in range(population):
            arch = self.draw(lambda: space.sample_arch(rng)) or fallback
            if arch is None:
                return None
            members.append(self.evaluate(arch))
        members.sort(key=lambda m: -m.score)
        self.record(0, members, 0)
        return members

    def next_generation(
        self,
        generation: int,
        parents: list[Scored],
        num_mutations: int,
        population: int,
        mutate_prob: float,
    ) -> list[Scored]:
        """The parents, their mutants, then crossovers up to ``population``; best first."""
        space, rng, before = self.space, self.rng, len(self.cache)
        archs = [p.arch for p in parents]
        children: list[Scored] = []
        for _ in range(num_mutations):
            child = self.draw(lambda: space.mutate(rng.choice(archs), rng, mutate_prob))
            if child is not None:
                children.append(self.evaluate(child))
        while len(parents) + len(children) < population:
            child = self.draw(lambda: space.crossover(rng.choice(archs), rng.choice(archs), rng))
            if child is None:
                break
            children.append(self.evaluate(child))
        members = sorted(parents + children, key=lambda m: -m.score)
        self.record(generation, members, before)
        return members

    def record(self, generation: int, members: list[Scored], before: int) -> None:
        """The generation's history entry (and the caller's hook)."""
        best = members[0]
        to_dict = getattr(best.arch, "to_dict", None)
        entry = {
            "generation": generation,
            "best": best.score,
            "mean": sum(m.score for m in members) / len(members),
            "evaluated": len(self.cache) - before,
            "best_arch": to_dict() if to_dict else best.arch,
        }
        self.history.append(entry)
        if self.on_generation is not None:
            self.on_generation(entry)
