"""The sandwich step of weight-sharing supernet training, for every elastic space.

One step runs, on the same batch, the subnets a :class:`SandwichSampler` draws: the
largest one first, then the others (by default the smallest and ``NUM_RANDOM_SUBNETS``
uniformly random architectures). Each subnet is an (architecture, policy) pair, so the
same step trains the FP supernet (policy ``None``: FP layers), OQAT's uniform-bit supernet
and QFA's independent per-layer bits: only the sampler differs.

Losses:

- in-place distillation (default): the largest learns from the labels (cross-entropy with
  the recipe's label smoothing), the others from the largest's detached soft predictions
  (soft-target cross-entropy);
- with an external ``teacher`` (QFA): every subnet, the largest included, learns from the
  labels plus the teacher's soft predictions.

The losses are summed into one backward (the same gradient as one backward per subnet),
or, with ``accumulate=True``, back-propagated one subnet at a time (less memory; the same
gradient up to float rounding). One SGD step follows. Every image through every subnet
counts as one training sample.

On a fixed-architecture space (``resnet20``: QFA's bits-only case) the "supernet" is the
one model whose layers serve every policy: architectures are ``None`` and a subnet's
policy is applied with :func:`~benchmark.arena.quant.modules.apply_policy` (the sampler
must then give its own ``largest`` / ``others``, since the space has no architectures).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.arena.policy import Policy
from benchmark.arena.presets import Preset, Recipe
from benchmark.arena.quant.modules import apply_policy
from benchmark.arena.recipes.loop import StepLoss
from benchmark.arena.spaces.base import ElasticSearchSpace, SearchSpace

NUM_RANDOM_SUBNETS = 2
"""Random subnets per step besides the largest and the smallest."""

Subnet = tuple[Any, "Policy | str | None"]
"""An (architecture, policy) pair; policy ``None`` keeps the layers' bits (FP in an FP
supernet), a string such as ``"w4a4"`` is a uniform policy."""

PolicyRule = Callable[[Any, random.Random], "Policy | str | None"]
"""``(arch, rng) → policy`` of one sampled subnet."""


def _keep_bits(arch: Any, rng: random.Random) -> None:
    return None


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Mean over the batch of ``-Σ_c p_c · log softmax(logits)_c`` (nats)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


@dataclass
class SandwichSampler:
    """Which subnets one sandwich step runs: the largest architecture, the smallest and
    ``num_random`` random ones, each with the bits ``policy(arch, rng)`` gives
    (``largest_policy`` for the largest, default the same rule).

    Architectures come from the space (``max_arch``, ``min_arch``, ``sample_arch``); all
    randomness from the ``rng`` a step passes in.
    """

    space: ElasticSearchSpace
    num_random: int = NUM_RANDOM_SUBNETS
    policy: PolicyRule = _keep_bits
    largest_policy: PolicyRule | None = None

    def largest(self, rng: random.Random) -> Subnet:
        arch = self.space.max_arch()
        return arch, (self.largest_policy or self.policy)(arch, rng)

    def others(self, rng: random.Random) -> list[Subnet]:
        archs = [
            self.space.min_arch(),
            *(self.space.sample_arch(rng) for _ in range(self.num_random)),
        ]
        return [(arch, self.policy(arch, rng)) for arch in archs]

    def describe(self) -> dict[str, Any]:
        """What identifies the sampler (for cache keys and logs)."""
        return {"num_random": self.num_random, "policy": getattr(self.policy, "__name__", "")}


def activate(space: SearchSpace, model: nn.Module, arch: Any, policy: Policy | str | None) -> None:
    """Make ``model`` run ``(arch, policy)``: ``space.set_active`` on an elastic space, else
    the full policy applied to the model's layers (``None`` keeps their bits)."""
    if isinstance(space, ElasticSearchSpace):
        space.set_active(model, arch, policy)
    elif policy is not None:
        apply_policy(model, space.parse_policy(policy, arch))


def sandwich_step(
    space: SearchSpace,
    sampler: SandwichSampler | None = None,
    *,
    seed: int = 0,
    label_smoothing: float = 0.0,
    teacher: nn.Module | None = None,
    accumulate: bool = False,
) -> StepLoss:
    """A :data:`~benchmark.arena.recipes.loop.StepLoss` for ``space``'s supernet.

    ``sampler`` defaults to the FP sandwich (largest, smallest and
    :data:`NUM_RANDOM_SUBNETS` random architectures, layers' bits kept). Returns
    ``(loss, batch · subnets)`` and leaves the largest subnet active; the sampler's
    randomness comes from a private ``random.Random(seed)``. ``teacher`` (eval mode, no
    gradient) replaces in-place distillation; ``accumulate`` back-propagates per subnet.
    """
    if sampler is None:
        if not isinstance(space, ElasticSearchSpace):
            raise TypeError(f"sandwich_step on {space.name} (not elastic) needs a sampler")
        sampler = SandwichSampler(space)
    rng = random.Random(seed)

    def subnet_losses(
        model: nn.Module, x: Tensor, y: Tensor, largest: Subnet, others: list[Subnet]
    ) -> Iterator[Tensor]:
        activate(space, model, *largest)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if teacher is None:
            target = F.softmax(logits.detach(), dim=1)
        else:
            with torch.no_grad():
                target = F.softmax(teacher(x), dim=1)
            loss = loss + soft_cross_entropy(logits, target)
        yield loss
        for arch, policy in others:
            activate(space, model, arch, policy)
            out = model(x)
            part = soft_cross_entropy(out, target)
            if teacher is not None:
                part = F.cross_entropy(out, y, label_smoothing=label_smoothing) + part
            yield part
        activate(space, model, *largest)

    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor | Iterator[Tensor], int]:
        largest, others = sampler.largest(rng), sampler.others(rng)
        samples = x.shape[0] * (1 + len(others))
        parts = subnet_losses(model, x, y, largest, others)
        if accumulate:
            return parts, samples
        loss = next(parts)
        for part in parts:
            loss = loss + part
        return loss, samples

    return step


def supernet_recipe(preset: Preset) -> Recipe:
    """The preset's ``[supernet]`` recipe, or its ``[pretrain]`` one if it has none."""
    return preset.supernet or preset.pretrain
