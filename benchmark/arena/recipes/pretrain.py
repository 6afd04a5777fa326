"""The FP starting points of every method, trained once and cached on disk, their cost
shown once and never charged to a method.

- a fixed space's FP checkpoint (:func:`pretrain_fp`): the reference model trained with
  the preset's ``[pretrain]`` recipe;
- an elastic space's FP supernet (:func:`pretrain_supernet`): the preset's ``[supernet]``
  SGD schedule (``[pretrain]`` if it has none; the smoke preset trains 2 epochs instead of
  5 since every step runs 4 subnets) with the sandwich rule of
  :mod:`benchmark.arena.recipes.supernet`.

:func:`fp_starting_point` picks the one that fits the space.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.arena.cache import cache_file, cached, default_cache_dir
from benchmark.arena.data import DataSplits
from benchmark.arena.presets import Preset
from benchmark.arena.recipes.loop import train
from benchmark.arena.recipes.scoring import evaluate, recalibrate_and_evaluate
from benchmark.arena.recipes.supernet import NUM_RANDOM_SUBNETS, sandwich_step, supernet_recipe
from benchmark.arena.spaces.base import ElasticSearchSpace, SearchSpace

RECIPE_VERSION = 1
"""Bump when the training code changes in a way that invalidates cached checkpoints."""


SUPERNET_VERSION = 2
"""Bump when this recipe changes in a way that invalidates cached supernets.

2: squeeze-excite convs became quantized layers (fixed at ``fixed_bits``); the FP state's
keys and the FP training are unchanged, the bump only keeps old caches apart."""


def fp_starting_point(
    space: SearchSpace,
    splits: DataSplits,
    preset: Preset,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    cache_dir: str | Path | None = None,
    built_by: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The cached FP start of ``space``: its FP supernet when the space is elastic, else the
    FP checkpoint of its reference model. Returns ``(state_dict, info)``; ``built_by`` as
    in :func:`pretrain_fp`."""
    pretrain = pretrain_supernet if isinstance(space, ElasticSearchSpace) else pretrain_fp
    return pretrain(
        space, splits, preset, seed=seed, device=device, cache_dir=cache_dir, built_by=built_by
    )


def _with_build_record(
    build: Callable[[], dict[str, Any]], built_by: Mapping[str, Any] | None
) -> Callable[[], dict[str, Any]]:
    """``build`` that also records in its info when it was built (``built_at``, local ISO
    time), its wall and process CPU seconds (``build_seconds``, ``build_cpu_seconds``: the
    training and the evaluations after it), torch's CPU threads (``threads``: on a CPU the
    trained weights' last bits depend on it) and what the caller states in ``built_by``."""

    def timed() -> dict[str, Any]:
        built_at = time.strftime("%Y-%m-%dT%H:%M:%S")
        wall0, cpu0 = time.perf_counter(), time.process_time()
        payload = build()
        payload["info"].update(
            built_at=built_at,
            build_seconds=time.perf_counter() - wall0,
            build_cpu_seconds=time.process_time() - cpu0,
            threads=torch.get_num_threads(),
            **dict(built_by or {}),
        )
        return payload

    return timed


def pretrain_key(space: SearchSpace, splits: DataSplits, preset: Preset, seed: int) -> dict:
    """What identifies an FP checkpoint: space, dataset, split, recipe, seed, code version."""
    return {
        "space": space.config(),
        "dataset": splits.name,
        "data": asdict(preset.data),
        "recipe": asdict(preset.pretrain),
        "seed": seed,
        "recipe_version": RECIPE_VERSION,
    }


def pretrain_fp(
    space: SearchSpace,
    splits: DataSplits,
    preset: Preset,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    cache_dir: str | Path | None = None,
    built_by: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """FP checkpoint of ``space``'s reference model, trained once and cached on disk.

    Returns ``(state_dict, info)``; ``info`` holds ``cached`` (bool), the training cost
    (``seconds``, ``samples``) of the original training and ``val_top1``/``test_top1``;
    checkpoints built since it was recorded also ``built_at``, ``build_seconds``,
    ``build_cpu_seconds`` and the facts ``built_by`` states (e.g. ``{"device": "NVIDIA
    H200", "device_share": 0.5}``: who built it, for its device-hours).
    """
    key = pretrain_key(space, splits, preset, seed)

    def build() -> dict[str, Any]:
        torch.manual_seed(seed)
        model = space.build(space.reference_arch)
        stats = train(
            model,
            splits.train,
            preset.pretrain,
            device=device,
            seed=seed,
            desc=f"pretrain {space.name}",
        )
        batch = preset.data.eval_batch_size
        info = {
            **stats.to_dict(),
            "device": str(device),
            "val_top1": evaluate(model, splits.val, device=device, batch_size=batch),
            "test_top1": evaluate(model, splits.test, device=device, batch_size=batch),
        }
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return {"state_dict": state, "info": info}

    folder = Path(cache_dir or default_cache_dir())
    payload, was_cached = cached(folder, "fp", key, _with_build_record(build, built_by))
    return payload["state_dict"], {**payload["info"], "cached": was_cached}


def fp_cache_file(
    space: SearchSpace,
    splits: DataSplits,
    preset: Preset,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Path:
    """Where :func:`fp_starting_point` keeps ``space``'s FP start for ``seed`` (it may not
    be built yet)."""
    folder = Path(cache_dir or default_cache_dir())
    if isinstance(space, ElasticSearchSpace):
        return cache_file(folder, "supernet-fp", supernet_key(space, splits, preset, seed))
    return cache_file(folder, "fp", pretrain_key(space, splits, preset, seed))


def supernet_key(
    space: ElasticSearchSpace, splits: DataSplits, preset: Preset, seed: int
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
    space: ElasticSearchSpace,
    supernet: nn.Module,
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
    scores, _ = recalibrate_and_evaluate(
        net,
        splits.train,
        {"val": splits.val, "test": splits.test},
        preset.recalibration,
        eval_batch_size=preset.data.eval_batch_size,
        device=device,
        seed=seed,
    )
    return {
        "arch": space.validate_arch(arch).to_dict(),
        "macs": sum(p.macs for p in space.profiles(arch).values()),
        "val_top1": scores["val"],
        "test_top1": scores["test"],
    }


def pretrain_supernet(
    space: ElasticSearchSpace,
    splits: DataSplits,
    preset: Preset,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    cache_dir: str | Path | None = None,
    built_by: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The FP supernet of ``space``, trained once with the sandwich rule and cached on disk.

    Returns ``(state_dict, info)``. The state holds weights, kernel transforms and BN
    buffers (no quantizer state: load it with ``space.build_supernet(quant, state)``).
    ``info`` holds ``cached`` (bool), the original training cost (``steps``, ``samples``,
    ``seconds``, ``final_loss``), ``device`` and, per subnet ``largest`` / ``smallest`` /
    ``reference``, its ``arch``, ``macs`` and recalibrated ``val_top1`` / ``test_top1``
    (percent); ``val_top1`` / ``test_top1`` at top level are the largest subnet's; the
    build record as in :func:`pretrain_fp` (``built_at``, ``build_seconds``, ...).
    """
    key = supernet_key(space, splits, preset, seed)

    def build() -> dict[str, Any]:
        torch.manual_seed(seed)
        supernet = space.build_supernet()
        recipe = supernet_recipe(preset)
        step = sandwich_step(space, seed=seed, label_smoothing=recipe.label_smoothing)
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
                ("largest", space.max_arch()),
                ("smallest", space.min_arch()),
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

    folder = Path(cache_dir or default_cache_dir())
    build = _with_build_record(build, built_by)
    payload, was_cached = cached(folder, "supernet-fp", key, build)
    return payload["state_dict"], {**payload["info"], "cached": was_cached}
