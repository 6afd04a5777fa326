"""The shared training loop: SGD + warm-up/cosine schedule, optional extra phases
(alternating updates of other parameters on other data), budget charging hooks.

Accuracies are top-1 in percent (0-100); durations in seconds; ``samples`` counts
training images passed forward through a model (one image through one subnet = 1).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from benchmark.arena import reporting
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


StepLoss = Callable[[nn.Module, Tensor, Tensor], tuple["Tensor | Iterable[Tensor]", int]]
"""``(model, x, y) → (loss, samples forwarded)``: lets recipes plug in sandwich rules.

``loss`` is one tensor to back-propagate, or an iterable of tensors (e.g. a generator, one
per subnet) that the loop back-propagates one by one as they come: gradient accumulation
over several subnets in one step, each subnet's graph freed before the next forward.
"""


def cross_entropy_step(label_smoothing: float = 0.0) -> StepLoss:
    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, int]:
        loss = nn.functional.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        return loss, x.shape[0]

    return step


@dataclass
class Phase:
    """One more optimisation phase of a training run, besides the main one.

    Its own batches (from ``data``), its own loss and its own optimizer (which names the
    parameters it may change, e.g. DNAS's architecture logits). ``every="step"``: one of
    its batches after each main step (alternating batches); ``"epoch"``: a full pass over
    ``data`` after each main epoch (DNAS: weights for an epoch, then θ for an epoch).
    ``step_loss`` defaults to cross-entropy with the recipe's label smoothing.
    ``schedule`` applies the main warm-up + cosine schedule to its learning rates too.
    """

    data: Dataset
    optimizer: torch.optim.Optimizer
    step_loss: StepLoss | None = None
    every: str = "step"
    batch_size: int | None = None  # default: the recipe's
    schedule: bool = False
    clip_grad_norm: float | None = None
    name: str = "phase"

    def __post_init__(self) -> None:
        if self.every not in ("step", "epoch"):
            raise ValueError(f"Phase.every must be 'step' or 'epoch', got {self.every!r}")


@dataclass
class _Runner:
    """What a phase needs at every step: its batches, loss, optimizer and base rates."""

    phase: Phase
    step_loss: StepLoss
    loader: DataLoader
    batches: Iterator[tuple[Tensor, Tensor]]
    base_lrs: list[float]

    @classmethod
    def create(cls, phase: Phase, recipe: Recipe, seed: int) -> _Runner:
        data, batch_size = phase.data, phase.batch_size or recipe.batch_size
        if len(data) == 0:
            raise ValueError(f"{phase.name}: the training set is empty")
        loader = make_loader(
            data, batch_size, shuffle=True, seed=seed, drop_last=len(data) >= batch_size
        )
        base = [float(g["lr"]) for g in phase.optimizer.param_groups]
        step_loss = phase.step_loss or cross_entropy_step(recipe.label_smoothing)
        return cls(phase, step_loss, loader, _cycle(loader), base)

    def step(self, model: nn.Module, plan: _Plan, step: int) -> tuple[float, int]:
        """One optimiser step of this phase on its next batch, at main step ``step`` of
        the schedule: ``(loss, samples forwarded)``; counted and charged in ``plan``."""
        x, y = next(self.batches)
        phase, opt = self.phase, self.phase.optimizer
        if phase.schedule:
            for group, base in zip(opt.param_groups, self.base_lrs, strict=True):
                group["lr"] = lr_at(step, plan.steps, plan.warmup, base)
        x, y = x.to(plan.device, non_blocking=True), y.to(plan.device, non_blocking=True)
        model.zero_grad(set_to_none=True)
        opt.zero_grad(set_to_none=True)
        loss, samples = self.step_loss(model, x, y)
        value = _backward(loss, f"{phase.name}: loss", step)
        if phase.clip_grad_norm is not None:
            params = [p for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, phase.clip_grad_norm)
        opt.step()
        plan.stats.samples += samples
        if plan.charge is not None:
            plan.charge(samples)
        return value, samples


@dataclass
class _Plan:
    """A training run's schedule (main steps, warm-up steps), device and running stats."""

    steps: int
    steps_per_epoch: int
    warmup: int
    device: torch.device
    stats: TrainStats
    charge: Callable[[int], None] | None


def _cycle(loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
    while True:
        yield from loader


def train(
    model: nn.Module,
    train_set: Dataset,
    recipe: Recipe,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    step_loss: StepLoss | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    clip_grad_norm: float | None = None,
    phases: Sequence[Phase] = (),
    on_step: Callable[[int, float, int], None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
    charge: Callable[[int], None] | None = None,
    desc: str = "train",
) -> TrainStats:
    """SGD + warm-up/cosine schedule over ``recipe.epochs`` of ``train_set``.

    Args:
        step_loss: the loss of one batch and the samples it forwarded (default:
            cross-entropy with the recipe's label smoothing); see :data:`StepLoss`.
        optimizer: the main phase's optimizer (default: SGD from the recipe over every
            trainable parameter, weight decay on conv/linear weights only). The schedule
            scales each of its parameter groups' own learning rate.
        clip_grad_norm: clip the gradient norm of the optimizer's parameters (L2) before
            each step.
        phases: more :class:`Phase` s interleaved with the main one (alternating updates).
        on_step: ``(step, loss, samples)`` after every main step (reports).
        on_epoch: ``(epoch)`` after every full main epoch (temperature annealing, logs).
        charge: ``(samples)`` after every forward of any phase (budget charging).

    Returns the main phase's cost and last loss; ``samples`` counts every phase's images.
    Raises :class:`DivergedError` if a loss is not finite.
    """
    device = torch.device(device)
    model.to(device).train()
    if len(train_set) == 0:
        raise ValueError(f"{desc}: the training set is empty")
    optimizer = optimizer or make_optimizer(model, recipe)
    main = Phase(
        train_set, optimizer, step_loss, schedule=True, clip_grad_norm=clip_grad_norm, name=desc
    )
    main_run = _Runner.create(main, recipe, seed)
    extra = [_Runner.create(p, recipe, seed + 1 + i) for i, p in enumerate(phases)]
    steps_per_epoch = max(1, len(main_run.loader))
    steps = total_steps(recipe, steps_per_epoch)
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    plan = _Plan(steps, steps_per_epoch, warmup, device, TrainStats(), charge)
    start = time.perf_counter()
    _run_steps(model, plan, main_run, extra, desc, on_step, on_epoch)
    plan.stats.seconds = time.perf_counter() - start
    return plan.stats


def _run_steps(
    model: nn.Module,
    plan: _Plan,
    main_run: _Runner,
    extra: Sequence[_Runner],
    desc: str,
    on_step: Callable[[int, float, int], None] | None,
    on_epoch: Callable[[int], None] | None,
) -> None:
    """The main phase's steps, each followed by the per-step phases, and at each epoch's
    end the per-epoch ones; progress and a log line every tenth of the run."""
    steps, log_every = plan.steps, max(1, plan.steps // 10)
    with reporting.phase(desc, total=steps, unit="steps", milestones=True):
        for step in range(steps):
            loss_value, samples = main_run.step(model, plan, step)
            plan.stats.steps += 1
            plan.stats.final_loss = loss_value
            reporting.advance(step + 1, steps, loss=loss_value)
            if on_step is not None:
                on_step(step, loss_value, samples)
            for runner in extra:
                if runner.phase.every == "step":
                    runner.step(model, plan, step)
            if (step + 1) % log_every == 0 or step + 1 == steps:
                log.info("%s step %d/%d loss %.4f", desc, step + 1, steps, loss_value)
            if (step + 1) % plan.steps_per_epoch == 0:
                _end_of_epoch(model, plan, step, extra, on_epoch)


def _end_of_epoch(
    model: nn.Module,
    plan: _Plan,
    step: int,
    extra: Sequence[_Runner],
    on_epoch: Callable[[int], None] | None,
) -> None:
    """After a full main epoch: every per-epoch phase runs a full pass, then the hook."""
    for runner in extra:
        if runner.phase.every == "epoch":
            for _ in range(len(runner.loader)):
                runner.step(model, plan, step)
    if on_epoch is not None:
        on_epoch((step + 1) // plan.steps_per_epoch - 1)


def _backward(loss: Tensor | Iterable[Tensor], what: str, step: int) -> float:
    """Back-propagate ``loss`` (or each of its parts as they come); their summed value."""
    parts = [loss] if isinstance(loss, Tensor) else loss
    total = 0.0
    for part in parts:
        value = float(part.detach())
        if not math.isfinite(value):
            raise DivergedError(f"{what} became {value} at step {step}")
        part.backward()
        total += value
    return total
