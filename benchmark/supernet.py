"""Frozen recipe: full-precision pretraining of the ``mbv3-cifar`` weight-sharing supernet.

The FP supernet is the shared starting point of OQAT and QFA. It is trained once per
(space, dataset, data split, recipe, seed), cached on disk like the FP checkpoint of
:func:`benchmark.train.pretrain_fp`, and its cost is shown once, not charged to a method.

Recipe: the preset's ``[supernet]`` SGD schedule (``[pretrain]`` if it has none; the smoke
preset trains 2 epochs instead of 5 since every step runs 4 subnets) with the *sandwich rule*:
the largest subnet, the smallest one and ``NUM_RANDOM_SUBNETS`` uniformly random ones run
on the same batch; the largest learns from the labels (cross-entropy, with the recipe's
label smoothing), the others from the largest's detached soft predictions (in-place
distillation, soft-target cross-entropy). The losses are summed (the same gradient as
accumulating one backward per subnet) and one SGD step is taken. Every image through every
subnet counts as one training sample.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.checkpoints import cached, default_cache_dir
from benchmark.data import DataSplits
from benchmark.presets import Preset, Recipe
from benchmark.spaces.mbv3_arch import max_arch, min_arch, sample_arch
from benchmark.spaces.mbv3_cifar import MBV3CifarSpace, MBV3Supernet
from benchmark.train import StepLoss, evaluate, recalibrate, train

SUPERNET_VERSION = 2
"""Bump when this recipe changes in a way that invalidates cached supernets.

2: squeeze-excite convs became quantized layers (fixed at ``fixed_bits``); the FP state's
keys and the FP training are unchanged, the bump only keeps old caches apart."""

NUM_RANDOM_SUBNETS = 2
"""Random subnets per step besides the largest and the smallest."""


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Mean over the batch of ``-Σ_c p_c · log softmax(logits)_c`` (nats)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def sandwich_step(
    *, num_random: int = NUM_RANDOM_SUBNETS, seed: int = 0, label_smoothing: float = 0.0
) -> StepLoss:
    """A :data:`~benchmark.train.StepLoss` for an :class:`MBV3Supernet`: largest + smallest +
    ``num_random`` random subnets on one batch, in-place distillation from the largest.

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


def supernet_key(
    space: MBV3CifarSpace, splits: DataSplits, preset: Preset, seed: int
) -> dict[str, Any]:
    """What identifies an FP supernet: space, dataset, split, recipe, sandwich, seed, version."""
    return {
        "space": space.config(),
        "dataset": splits.name,
        "data": asdict(preset.data),
        "recipe": asdict(supernet_recipe(preset)),
        "sandwich": {"num_random": NUM_RANDOM_SUBNETS, "distill": "soft-ce-from-largest"},
        "seed": seed,
        "supernet_version": SUPERNET_VERSION,
    }


def evaluate_subnet(
    space: MBV3CifarSpace,
    supernet: MBV3Supernet,
    arch: Any,
    splits: DataSplits,
    preset: Preset,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Top-1 (percent) on val and test of one extracted subnet after BN recalibration on
    ``preset.recalibration`` train images; the supernet itself is not modified."""
    net = space.extract(supernet, arch)
    rc = preset.recalibration
    recalibrate(
        net, splits.train, batches=rc.batches, batch_size=rc.batch_size, device=device, seed=seed
    )
    batch = preset.data.eval_batch_size
    return {
        "arch": space.validate_arch(arch).to_dict(),
        "macs": sum(p.macs for p in space.profiles(arch).values()),
        "val_top1": evaluate(net, splits.val, device=device, batch_size=batch),
        "test_top1": evaluate(net, splits.test, device=device, batch_size=batch),
    }


def pretrain_supernet(
    space: MBV3CifarSpace,
    splits: DataSplits,
    preset: Preset,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    cache_dir: str | Path | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The FP supernet of ``space``, trained once with the sandwich rule and cached on disk.

    Returns ``(state_dict, info)``. The state holds weights, kernel transforms and BN
    buffers (no quantizer state: load it with ``space.build_supernet(quant, state)``).
    ``info`` holds ``cached`` (bool), the original training cost (``steps``, ``samples``,
    ``seconds``, ``final_loss``), ``device`` and, per subnet ``largest`` / ``smallest`` /
    ``reference``, its ``arch``, ``macs`` and recalibrated ``val_top1`` / ``test_top1``
    (percent); ``val_top1`` / ``test_top1`` at top level are the largest subnet's.
    """
    key = supernet_key(space, splits, preset, seed)

    def build() -> dict[str, Any]:
        torch.manual_seed(seed)
        supernet = space.build_supernet()
        recipe = supernet_recipe(preset)
        step = sandwich_step(seed=seed, label_smoothing=recipe.label_smoothing)
        stats = train(
            supernet,
            splits.train,
            recipe,
            device=device,
            seed=seed,
            step_loss=step,
            desc=f"pretrain {space.name} supernet",
        )
        subnets = {
            name: evaluate_subnet(space, supernet, arch, splits, preset, device=device, seed=seed)
            for name, arch in (
                ("largest", max_arch()),
                ("smallest", min_arch()),
                ("reference", space.reference_arch),
            )
        }
        info = {
            **stats.to_dict(),
            "device": str(device),
            "val_top1": subnets["largest"]["val_top1"],
            "test_top1": subnets["largest"]["test_top1"],
            "subnets": subnets,
        }
        state = {
            k: v.detach().cpu() for k, v in supernet.state_dict().items() if "_quantizer." not in k
        }
        return {"state_dict": state, "info": info}

    payload, was_cached = cached(Path(cache_dir or default_cache_dir()), "supernet-fp", key, build)
    return payload["state_dict"], {**payload["info"], "cached": was_cached}
