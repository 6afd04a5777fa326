"""The method toolkit on the :class:`~benchmark.arena.context.Context`: train, finetune,
score, build subnets, probe Hessians and split the data, every image charged to the
trial's budget by the helper itself, so a method cannot forget.

Units: top-1 in percent; ``samples`` are images forwarded (one image through one subnet
is one sample). What is charged: every training forward (each phase, each subnet), the
recalibration images and the validation images of a score, and a Hessian probe's images
once for its forward passes and once more per Hessian-vector product (about a training
step's work per image).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from benchmark.arena.data.splits import fixed_batch
from benchmark.arena.hessian import HessianProbe
from benchmark.arena.policy import LayerBits
from benchmark.arena.presets import Preset, Recipe
from benchmark.arena.protocol import BudgetMeter, Task
from benchmark.arena.quant.base import QuantConfig
from benchmark.arena.recipes.loop import Phase, StepLoss, TrainStats, train
from benchmark.arena.recipes.scoring import recalibrate, recalibrate_and_evaluate
from benchmark.arena.spaces.base import ElasticSearchSpace, SearchSpace


class Toolkit:
    """Budget-charged helpers, mixed into :class:`~benchmark.arena.context.Context`
    (which provides the attributes declared here)."""

    task: Task
    space: SearchSpace
    preset: Preset
    train_set: Dataset
    val_set: Dataset
    fp_state: Mapping[str, Any]
    device: torch.device
    budget: BudgetMeter
    rng: random.Random

    def train(
        self,
        model: nn.Module,
        step_loss: StepLoss | None = None,
        *,
        recipe: Recipe | None = None,
        data: Dataset | None = None,
        optimizer: Any = None,
        phases: Sequence[Phase] = (),
        clip_grad_norm: float | None = None,
        on_step: Callable[[int, float, int], None] | None = None,
        on_epoch: Callable[[int], None] | None = None,
        seed: int | None = None,
        desc: str = "search",
    ) -> TrainStats:
        """The shared training loop (:func:`benchmark.arena.recipes.loop.train`) on the
        method's data, every forward charged to the budget.

        ``recipe`` defaults to the preset's ``[finetune]`` one, ``data`` to the method's
        train split (pass a part from :meth:`split` for alternating updates); ``phases``
        add other updates (e.g. architecture parameters on another split). ``seed``
        (default: drawn from ``ctx.rng``) fixes the batch order.
        """
        return train(
            model,
            self.train_set if data is None else data,
            recipe or self.preset.finetune,
            device=self.device,
            seed=self.rng.randrange(2**31) if seed is None else seed,
            step_loss=step_loss,
            optimizer=optimizer,
            clip_grad_norm=clip_grad_norm,
            phases=phases,
            on_step=on_step,
            on_epoch=on_epoch,
            charge=self.budget.charge,
            desc=desc,
        )

    def finetune(
        self,
        policy: Mapping[str, LayerBits],
        arch: Any = None,
        *,
        steps: int | None = None,
        recipe: Recipe | None = None,
        quant: QuantConfig | None = None,
        seed: int | None = None,
    ) -> tuple[nn.Module, TrainStats]:
        """A short QAT finetune of ``(arch, policy)`` from the FP checkpoint on the method's
        train split (HAQ's per-episode finetune): the preset's ``[finetune]`` recipe, or
        ``recipe``, cut to ``steps`` optimiser steps if given. Charged to the budget."""
        recipe = recipe or self.preset.finetune
        if steps is not None:
            recipe = replace(recipe, max_steps=int(steps))
        model = self.subnet(arch, policy, quant=quant)
        stats = self.train(model, recipe=recipe, seed=seed, desc="finetune")
        return model, stats

    def score(self, model: nn.Module, *, seed: int = 0, batches: int | None = None) -> float:
        """Validation top-1 (percent) of ``model`` after recalibrating its BN (and any
        calibrating quantizer) on ``preset.recalibration`` train images (``batches``
        batches of them if given; ``seed`` picks them). Recalibration and validation
        images are charged to the budget."""
        recalibration = self.preset.recalibration
        if batches is not None:
            recalibration = replace(recalibration, batches=int(batches))
        scores, used = recalibrate_and_evaluate(
            model,
            self.train_set,
            {"val": self.val_set},
            recalibration,
            eval_batch_size=self.preset.data.eval_batch_size,
            device=self.device,
            seed=seed,
        )
        self.budget.charge(used)
        return scores["val"]

    def subnet(
        self,
        arch: Any = None,
        policy: str | Mapping[str, LayerBits] | None = None,
        *,
        supernet: nn.Module | None = None,
        quant: QuantConfig | None = None,
        recalibrated: bool = False,
    ) -> nn.Module:
        """A standalone model of ``arch`` (default: the space's reference) set to
        ``policy``, with inherited weights: extracted from ``supernet`` on an elastic space
        (default: the FP supernet, built once per quantizer config and kept), else built
        from the FP checkpoint. Nothing is charged (no image is forwarded), unless
        ``recalibrated``.

        A subnet extracted from a supernet carries the supernet's BN statistics, not its
        own: in eval mode it can be far from the trained model (``python
        scripts/subnet_statistics.py``: the reference subnet of the smoke FP supernet of
        ``mbv3-cifar`` at 9.7% validation top-1 as extracted, 91.7% recalibrated).
        ``recalibrated=True`` re-estimates them on ``preset.recalibration`` train images
        (seeded by the task's seed; charged), for a method that uses the FP model in eval
        mode without scoring it (HAWQ-V3's Hessian probe, OMPQ's features). A fixed
        space's model keeps the FP checkpoint's own statistics, and nothing is charged.
        """
        space = self.space
        if not isinstance(space, ElasticSearchSpace):
            full = None if policy is None else space.parse_policy(policy, arch)
            return space.build_from_fp(self.fp_state, arch, full, quant).to(self.device)
        if supernet is None:
            supernet = self.fp_supernet(quant, cached=True)
        model = space.extract(supernet, arch, policy)
        if recalibrated:
            config = self.preset.recalibration
            used = recalibrate(
                model,
                self.train_set,
                batches=config.batches,
                batch_size=config.batch_size,
                device=self.device,
                seed=self.task.seed,
            )
            self.budget.charge(used)
        return model

    def fp_supernet(self, quant: QuantConfig | None = None, *, cached: bool = False) -> nn.Module:
        """The FP supernet of an elastic space (the cached FP start), with ``quant``'s
        quantizers. A fresh copy to train, or with ``cached`` one kept per config for
        extracting subnets (do not train that one)."""
        space = self.space
        if not isinstance(space, ElasticSearchSpace):
            raise TypeError(f"space {space.name} has no supernet (it is not elastic)")
        if not cached:
            return space.build_supernet(quant, self.fp_state).to(self.device)
        kept = self.__dict__.setdefault("_fp_supernets", {})
        key = repr(quant)
        if key not in kept:
            kept[key] = space.build_supernet(quant, self.fp_state).to(self.device).eval()
        return kept[key]

    def hessian_probe(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        inputs: bool = False,
        batches: int = 2,
        batch_size: int = 32,
        seed: int | None = None,
    ) -> HessianProbe:
        """Per-layer Hessian-vector products of ``model``'s mean cross-entropy on ``batches``
        fixed batches of ``batch_size`` distinct train images (chosen by ``seed``, default the
        task's), eval mode (:class:`~benchmark.arena.hessian.HessianProbe`); estimate traces
        with :func:`~benchmark.arena.hessian.hutchinson_traces`. ``inputs`` adds each layer's
        input activations as targets. Charged: ``batches·batch_size`` images for the forward
        passes now, as many again for every Hessian-vector product."""
        for name, value in (("batches", batches), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"hessian_probe: {name} must be a positive integer, got {value!r}")
        seed = self.task.seed if seed is None else int(seed)
        images, labels = fixed_batch(self.train_set, batches * batch_size, seed)
        chunks = [
            (x.to(self.device), y.to(self.device))
            for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True)
        ]
        return HessianProbe(
            model.to(self.device), layers, chunks, inputs=inputs, charge=self.budget.charge
        )

    def subset(self, data: Dataset, fraction: float) -> Dataset:
        """A fixed share of ``data`` (e.g. a part from :meth:`split`): ``round(fraction·n)``
        of its images (at least one), drawn once, seeded by the task's seed."""
        if not 0 < fraction <= 1:
            raise ValueError(f"subset fraction must be in (0, 1], got {fraction}")
        n = len(data)
        order = self._seeded_order(n, salt=104729)
        return Subset(data, np.sort(order[: max(1, round(fraction * n))]).tolist())

    def split(self, fraction: float) -> tuple[Dataset, Dataset]:
        """The method's train split cut in two, disjoint and seeded by the task's seed:
        ``(first, rest)`` with ``round(fraction · n)`` images in ``first`` (DNAS: 80% for
        the weights, 20% for the architecture). Validation and test are never touched."""
        n = len(self.train_set)
        size = round(fraction * n)
        if not 0 < size < n:
            raise ValueError(f"split({fraction}) of {n} training images leaves an empty part")
        order = self._seeded_order(n, salt=7919)
        first, rest = np.sort(order[:size]), np.sort(order[size:])
        return Subset(self.train_set, first.tolist()), Subset(self.train_set, rest.tolist())

    def _seeded_order(self, n: int, *, salt: int) -> np.ndarray:
        """A permutation of ``range(n)`` seeded by the task's seed and ``salt`` (one salt
        per use, so two uses draw independent orders)."""
        return np.random.default_rng((self.task.seed, salt)).permutation(n)
