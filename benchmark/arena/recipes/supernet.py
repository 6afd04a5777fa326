"""The sandwich step of weight-sharing supernet training.

The largest subnet, the smallest one and ``NUM_RANDOM_SUBNETS`` uniformly random ones run
on the same batch; the largest learns from the labels (cross-entropy, with the recipe's
label smoothing), the others from the largest's detached soft predictions (in-place
distillation, soft-target cross-entropy). The losses are summed (the same gradient as
accumulating one backward per subnet) and one SGD step is taken. Every image through every
subnet counts as one training sample.
"""

from __future__ import annotations

import random

from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.arena.presets import Preset, Recipe
from benchmark.arena.recipes.loop import StepLoss
from benchmark.arena.spaces.mbv3.arch import max_arch, min_arch, sample_arch
from benchmark.arena.spaces.mbv3.nets import MBV3Supernet

NUM_RANDOM_SUBNETS = 2
"""Random subnets per step besides the largest and the smallest."""


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Mean over the batch of ``-Σ_c p_c · log softmax(logits)_c`` (nats)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def sandwich_step(
    *, num_random: int = NUM_RANDOM_SUBNETS, seed: int = 0, label_smoothing: float = 0.0
) -> StepLoss:
    """A :data:`~benchmark.arena.recipes.loop.StepLoss` for an :class:`MBV3Supernet`: largest +
    smallest + ``num_random`` random subnets on one batch, in-place distillation from the largest.

    Returns ``(summed loss, batch · (2 + num_random))``; leaves the largest subnet active.
    Random subnets come from a private ``random.Random(seed)``.
    """
    rng = random.Random(seed)
    largest, smallest = max_arch(), min_arch()

    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, int]:
        if not isinstance(model, MBV3Supernet):
            raise TypeError(f"sandwich_step needs an MBV3Supernet, got {type(model).__name__}")
        model.set_active(largest)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        teacher = F.softmax(logits.detach(), dim=1)
        for arch in [smallest, *(sample_arch(rng) for _ in range(num_random))]:
            model.set_active(arch)
            loss = loss + soft_cross_entropy(model(x), teacher)
        model.set_active(largest)
        return loss, x.shape[0] * (2 + num_random)

    return step


def supernet_recipe(preset: Preset) -> Recipe:
    """The preset's ``[supernet]`` recipe, or its ``[pretrain]`` one if it has none."""
    return preset.supernet or preset.pretrain
