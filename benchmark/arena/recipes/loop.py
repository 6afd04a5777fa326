"""The shared training loop (SGD + warm-up/cosine schedule), top-1 evaluation and BN
recalibration.

Accuracies are top-1 in percent (0-100); durations in seconds; ``samples`` counts
training images passed forward through a model (one image through one subnet = 1).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from benchmark.arena.data import make_loader
from benchmark.arena.presets import Recipe
from benchmark.arena.protocol import DivergedError
from benchmark.arena.quant.modules import QuantLayer

log = logging.getLogger("mpqbench.train")


@dataclass
class TrainStats:
    """What one training stage cost and reached."""

    steps: int = 0
    samples: int = 0
    seconds: float = 0.0
    final_loss: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only (not on BN, biases or quantizer state)."""
    decay, no_decay = [], []
    quantizer_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, QuantLayer)
        for q in (m.weight_quantizer, m.act_quantizer)
        for p in q.parameters()
    }
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or id(p) in quantizer_params else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        param_groups(model, recipe.weight_decay),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov and recipe.momentum > 0,
    )


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up then cosine decay to zero (per step)."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, progress)))


def total_steps(recipe: Recipe, steps_per_epoch: int) -> int:
    steps = max(1, round(recipe.epochs * steps_per_epoch))
    return min(steps, recipe.max_steps) if recipe.max_steps else steps


def _batches(loader: DataLoader, steps: int) -> Iterable[tuple[Tensor, Tensor]]:
    done = 0
    while done < steps:
        for batch in loader:
            yield batch
            done += 1
            if done >= steps:
                return


StepLoss = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, int]]
"""``(model, x, y) → (loss, samples forwarded)``: lets recipes plug in sandwich rules."""


def cross_entropy_step(label_smoothing: float = 0.0) -> StepLoss:
    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, int]:
        loss = nn.functional.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        return loss, x.shape[0]

    return step


def train(
    model: nn.Module,
    train_set: Dataset,
    recipe: Recipe,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    step_loss: StepLoss | None = None,
    on_step: Callable[[int, float, int], None] | None = None,
    desc: str = "train",
) -> TrainStats:
    """SGD + cosine schedule over ``recipe.epochs`` of ``train_set``; returns cost and loss.

    ``step_loss`` returns the loss to back-propagate and the samples it forwarded;
    ``on_step(step, loss, samples)`` is called after every step (budget charging, reports).
    Raises :class:`DivergedError` if the loss is not finite.
    """
    device = torch.device(device)
    model.to(device).train()
    if len(train_set) == 0:
        raise ValueError(f"{desc}: the training set is empty")
    drop_last = len(train_set) >= recipe.batch_size
    loader = make_loader(train_set, recipe.batch_size, shuffle=True, seed=seed, drop_last=drop_last)
    steps_per_epoch = max(1, len(loader))
    steps = total_steps(recipe, steps_per_epoch)
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    optimizer = make_optimizer(model, recipe)
    step_loss = step_loss or cross_entropy_step(recipe.label_smoothing)
    stats = TrainStats()
    start = time.perf_counter()
    log_every = max(1, steps // 10)
    for step, (x, y) in enumerate(_batches(loader, steps)):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, warmup, recipe.lr)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss, samples = step_loss(model, x, y)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise DivergedError(f"{desc}: loss became {loss_value} at step {step}")
        loss.backward()
        optimizer.step()
        stats.steps += 1
        stats.samples += samples
        stats.final_loss = loss_value
        if on_step is not None:
            on_step(step, loss_value, samples)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log.info("%s step %d/%d loss %.4f", desc, step + 1, steps, loss_value)
    stats.seconds = time.perf_counter() - start
    return stats


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, *, device: torch.device | str = "cpu", batch_size: int = 256
) -> float:
    """Top-1 accuracy in percent on ``dataset`` (eval mode)."""
    device = torch.device(device)
    model.to(device).eval()
    correct = total = 0
    for x, y in make_loader(dataset, batch_size, shuffle=False):
        pred = model(x.to(device)).argmax(1)
        correct += int((pred == y.to(device)).sum())
        total += y.shape[0]
    return 100.0 * correct / max(total, 1)


@torch.no_grad()
def recalibrate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batches: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> int:
    """Reset and re-estimate BN statistics (and calibrating quantizers) on train images.

    BN running stats become the plain average over ``batches`` batches; modules with
    ``start_calibration()``/``end_calibration()`` (e.g. BatchQuant ranges) are told too.
    Returns the number of images used.
    """
    device = torch.device(device)
    model.to(device)
    was_training = model.training
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = plain mean over batches
    calibrating = [m for m in model.modules() if hasattr(m, "start_calibration")]
    for m in calibrating:
        m.start_calibration()
    model.train()
    used = 0
    loader = make_loader(dataset, batch_size, shuffle=True, seed=seed)
    for x, _ in _batches(loader, batches):
        model(x.to(device))
        used += x.shape[0]
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    for m in calibrating:
        m.end_calibration()
    model.train(was_training)
    return used
