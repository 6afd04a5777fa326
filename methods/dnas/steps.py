"""The two alternating phases of one DNAS epoch, as step losses for ``ctx.train``.

- weights (the main phase, on 80% of the method's train split): a Gumbel-softmax draw of
  the masks with θ detached, cross-entropy back-propagated to the weights only;
- θ (an extra ``Phase(every="epoch")`` on the other 20%): a draw with gradient to θ, the
  weights frozen (``requires_grad`` off, so none of their gradients is computed), the
  cost-aware loss ``CE·β·(log E[Cost])^γ`` back-propagated to θ.

The weights' phase minimises plain cross-entropy: for fixed masks the cost factor is a
positive constant in the weights, so leaving it out only keeps the recipe's learning rate
meaning what it says. Each step draws fresh masks (one draw per layer per batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from methods.dnas.loss import STEERS_PER_EPOCH, LossControl
from methods.dnas.supernet import SuperNet


@dataclass
class EpochStats:
    """Running means of one epoch's losses and expected costs (reset after each epoch)."""

    weight_ce: list[float] = field(default_factory=list)
    theta_ce: list[float] = field(default_factory=list)
    theta_loss: list[float] = field(default_factory=list)
    drawn_cost: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        def mean(values: list[float]) -> float:
            return sum(values) / len(values) if values else float("nan")

        return {
            "weight_ce": mean(self.weight_ce),
            "theta_ce": mean(self.theta_ce),
            "theta_loss": mean(self.theta_loss),
            "drawn_cost": mean(self.drawn_cost),
        }


@dataclass
class SearchState:
    """What both phases share: the temperature, the noise generator, the epoch's stats."""

    tau: float
    generator: torch.Generator
    stats: EpochStats = field(default_factory=EpochStats)


def _forward(net: SuperNet, model: nn.Module, x: Tensor, masks: dict[str, Tensor]) -> Tensor:
    net.apply(masks)
    try:
        return model(x)
    finally:
        net.clear()


def weight_step(net: SuperNet, state: SearchState, label_smoothing: float = 0.0):
    """The weights' step loss: ``(model, x, y) → (CE, images)``, θ fixed."""

    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, int]:
        net.set_weights_trainable(True)
        masks = net.draw(state.tau, state.generator, grad=False)
        loss = F.cross_entropy(_forward(net, model, x, masks), y, label_smoothing=label_smoothing)
        state.stats.weight_ce.append(float(loss.detach()))
        return loss, x.shape[0]

    return step


@dataclass
class Steering:
    """When θ's steps steer the loss's coefficients within an epoch.

    After every ``every`` θ steps of an epoch of ``steps`` (split into about
    :data:`~methods.dnas.loss.STEERS_PER_EPOCH` parts), before the next step, and at the
    epoch's end for the steps left (``end_epoch``), ``steer(share)`` is called with the
    share of the epoch those steps were: the shares of one epoch add up to at most 1 (an
    epoch of one θ step is steered once, at its end)."""

    steps: int
    steer: Callable[[float], None]
    done: int = 0
    steered: int = 0

    @property
    def every(self) -> int:
        return max(1, self.steps // STEERS_PER_EPOCH)

    def before_step(self) -> None:
        if self.done - self.steered >= self.every and self.done < self.steps:
            self._steer_to(self.done)
        self.done += 1

    def end_epoch(self) -> None:
        self._steer_to(min(self.done, self.steps))
        self.done = self.steered = 0

    def _steer_to(self, done: int) -> None:
        if done > self.steered:
            self.steer((done - self.steered) / self.steps)
            self.steered = done


def theta_step(
    net: SuperNet, state: SearchState, control: LossControl, steering: Steering | None = None
):
    """θ's step loss: ``(model, x, y) → (CE·β·(log E[Cost])^γ, images)``, weights fixed;
    with ``steering``, the coefficients are steered within the epoch (:class:`Steering`)
    from the θ the steps so far made."""

    def step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, int]:
        if steering is not None:
            steering.before_step()
        net.set_weights_trainable(False)
        masks = net.draw(state.tau, state.generator, grad=True)
        ce = F.cross_entropy(_forward(net, model, x, masks), y)
        cost = net.expected_cost(masks)
        loss = control(ce, cost)
        stats = state.stats
        stats.theta_ce.append(float(ce.detach()))
        stats.theta_loss.append(float(loss.detach()))
        stats.drawn_cost.append(float(cost.detach()))
        return loss, x.shape[0]

    return step
