"""DNAS's multiplicative cost-aware loss and the control of its coefficients.

``L = CE · β·(log Cost)^γ`` (spec: Loss), ``Cost`` the expected cost under the masks:
BitOPs per 32×32 image or bits of weight storage, the units in which ``log Cost > 0`` for
every policy (a network has more than ``e`` of either). β scales the whole loss; γ sets the
trade-off: ``∂ log L / ∂ log Cost = γ / log Cost``, so β changes the size of θ's gradient but
never its direction, and γ is what moves θ towards cheaper or more accurate choices.
(FBNet, the sibling paper, writes the same loss as ``CE·α·(log LAT)^β`` with α = 0.2 and
β = 0.6, α the loss's magnitude, β the cost term's, as the spec recalls it [unverified]:
``beta=0.2, gamma=0.6`` here; ``gamma="auto"`` starts at that 0.6. The DNAS text beyond its
abstract was not readable here, so its own β and γ are unknown.)

Coefficients:

- ``beta="auto"`` (default): ``β = 1/(log C₀)^γ``, ``C₀`` the expected cost under ``P_θ``
  at the start, so the factor starts at 1 (the role the spec gives β); after each epoch
  ``C₀`` becomes that epoch's expected cost, so the factor stays near 1 whatever γ grows
  to (``(log C)^γ`` alone overflows float32 for a large γ).
- ``gamma="auto"`` (default): γ starts at the recipe's ``gamma_start`` and is steered
  :data:`STEERS_PER_EPOCH` times an epoch (every ~1/8 of its θ steps), each time
  ``γ ← γ·(C_q/limit)^(gamma_rate/8)`` with the factor within ``[3^-1/8, 3^1/8]``: in
  all γ changes at most 3× an epoch, as when it was steered once after each epoch, but
  the pressure builds during the epoch instead of only after it (with the ``fmnist``
  preset's 2 epochs, once an epoch reached 68–79% feasible draws, not the 90% aimed
  at). γ stays within [1e-3, 1e3]. ``C_q`` is the ``feasible_target``
  quantile (0.9) of the costs of 1,000 architectures drawn from ``P_θ``: the controller
  steers the share of draws that meet the limit towards ``feasible_target``, since each
  architecture sampled at the end must meet the limit itself (aimed at the expected cost
  instead, only 52–57% of the draws met it in the digits reference run). More cost
  pressure while that share is short, less while it is over. This benchmark's
  controller, not the paper's; a number for ``gamma`` (and ``beta``) is the paper's
  fixed-coefficient loss.
- numbers fix them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

GAMMA_BOUNDS = (1e-3, 1e3)
GAMMA_STEP = 3.0
"""The most ``gamma="auto"`` multiplies or divides γ by in one epoch."""
STEERS_PER_EPOCH = 8
"""How often an epoch's θ steps steer γ (and β follows the expected cost)."""


def cost_aware_loss(
    ce: Tensor, cost: Tensor, beta: float, gamma: float, *, log_beta: float | None = None
) -> Tensor:
    """``ce · beta·(log cost)^gamma`` (natural log; ``cost`` > e, in BitOPs or bits),
    computed as ``ce·exp(log beta + gamma·log log cost)``: the same value, but a tiny β
    times a huge ``(log cost)^gamma`` stays finite in float32. ``log_beta``, if given, is
    used for ``log beta`` (an auto β of a large γ is below float64's range: ``beta`` 0)."""
    log_b = math.log(beta) if log_beta is None else float(log_beta)
    return ce * torch.exp(log_b + gamma * cost.log().log())


@dataclass
class LossControl:
    """β and γ of the search: fixed or ``"auto"`` (see the module docstring).

    Attributes:
        beta / gamma: the values in use now (``beta`` may underflow to 0 for a large γ).
        log_beta: ``log β``, what the loss uses (finite whatever γ).
        beta_auto / gamma_auto: whether each is adjusted.
        start_cost: ``C₀``, ``beta="auto"``'s reference: the expected cost at the start,
            then after each epoch (BitOPs or bits).
        rate: the exponent of γ's update.
    """

    beta: float
    gamma: float
    beta_auto: bool
    gamma_auto: bool
    start_cost: float
    rate: float
    log_beta: float = 0.0

    @classmethod
    def create(
        cls,
        beta: float | str,
        gamma: float | str,
        *,
        start_cost: float,
        gamma_start: float,
        rate: float,
    ) -> LossControl:
        """The control for the method's ``beta`` / ``gamma`` options."""
        if not start_cost > math.e:
            raise ValueError(f"dnas: the expected cost {start_cost} must exceed e for log > 1")
        g = gamma_start if gamma == "auto" else float(gamma)
        control = cls(1.0, g, beta == "auto", gamma == "auto", float(start_cost), float(rate))
        control._set_log_beta(control._auto_log_beta() if control.beta_auto else math.log(beta))
        return control

    def _auto_log_beta(self) -> float:
        """``log(1/(log C₀)^γ)``, in logs: ``(log C₀)^γ`` overflows float64 past γ ≈ 236
        for BitOPs (a ``gamma="auto"`` that grows fast gets there)."""
        return -self.gamma * math.log(math.log(self.start_cost))

    def _set_log_beta(self, log_beta: float) -> None:
        self.log_beta = float(log_beta)
        self.beta = math.exp(self.log_beta)  # 0.0 below float64's range, for the log only

    def __call__(self, ce: Tensor, cost: Tensor) -> Tensor:
        return cost_aware_loss(ce, cost, self.beta, self.gamma, log_beta=self.log_beta)

    def update(
        self, cost: float, limit: float, *, steer: float | None = None, share: float = 1.0
    ) -> None:
        """After ``share`` of an epoch (1: a whole one): γ by ``steer`` (the cost it steers
        to the limit, e.g. a quantile of the draws' costs; default ``cost``) against
        ``limit`` (``gamma="auto"``), ``γ ← γ·(steer/limit)^(rate·share)`` with the factor
        within ``[3^-share, 3^share]`` (so at most 3× an epoch however often it is
        called), and β to follow the expected ``cost`` (``"auto"``). Costs in BitOPs or
        bits."""
        if not 0 < share <= 1:
            raise ValueError(f"share of an epoch must be in (0, 1], got {share}")
        if self.gamma_auto:
            low, high = GAMMA_BOUNDS
            factor = ((cost if steer is None else steer) / limit) ** (self.rate * share)
            cap = GAMMA_STEP**share
            factor = min(cap, max(1 / cap, factor))
            self.gamma = min(high, max(low, self.gamma * factor))
        if self.beta_auto:
            self.start_cost = max(float(cost), math.e * (1 + 1e-9))
            self._set_log_beta(self._auto_log_beta())

    def to_dict(self) -> dict[str, float | str]:
        return {
            "beta": self.beta,
            "log_beta": self.log_beta,
            "gamma": self.gamma,
            "beta_mode": "auto" if self.beta_auto else "fixed",
            "gamma_mode": "auto" if self.gamma_auto else "fixed",
        }
