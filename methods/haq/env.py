"""HAQ's environment: the layer state, the action → bit map and the constraint loop
(mit-han-lab/haq ``lib/env/linear_quantize_env.py``).

- **State** (10 numbers per step), from the space's layer profiles
  (``space.profiles``, :class:`~benchmark.arena.LayerProfile`): depthwise (1/0), input
  channels, output channels, stride, kernel size, weight count, input H·W, layer index
  (the first 8 min-max normalised over the layers), then the previous step's bits over
  the largest choice (1.0 before the first step) and the step's kind (1 = weight bits,
  0 = activation bits).
  A linear layer has stride 0, kernel 1 and input H·W 1. A column equal on every layer is
  set to 0 (the original leaves it as it is; it tells the agent nothing either way).
- **Action → bits**: an action ``a ∈ [0, 1]`` picks choice ``k = ⌊a·n⌋`` (``n`` choices,
  ``a = 1`` the largest): ``n`` equal bins. On consecutive bits ``b_min..b_max`` this is the
  original's ``round(a·(b_max − b_min + 1) + b_min − 0.5)`` except exactly at bin edges,
  and it also works on choices with gaps such as resnet20's {2, 3, 4, 8}.
- **Constraint loop** (after the episode's actions): while a limit is exceeded, walk the
  layers from last to first, lowering each layer's activation bits and then its weight
  bits by one choice (never below the lowest), stopping as soon as every limit holds.
  Layers pinned at 8 bits (HAQ's first and last layer, when the space does not fix them
  already) are never lowered. :func:`check_reachable` refuses limits the lowest bits miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmark.arena import LayerProfile

STATE_DIM = 10
STATIC_DIM = 8  # the columns normalised over layers; then previous action and step kind


def static_features(profiles: Sequence[LayerProfile]) -> np.ndarray:
    """The first 8 state columns, one row per layer (the space's profiles of the searched
    layers, in order): depthwise, input and output channels, stride, kernel, weights,
    input pixels, index; each column min-max normalised over the layers (a constant column
    becomes 0), float32 of shape ``(layers, 8)``."""
    raw = np.array(
        [
            [
                float(p.kind == "dwconv"),
                p.in_channels,
                p.out_channels,
                p.stride,
                p.kernel,
                p.params,
                p.in_pixels,
                i,
            ]
            for i, p in enumerate(profiles)
        ],
        dtype=np.float64,
    ).reshape(len(profiles), STATIC_DIM)
    return normalise_columns(raw).astype(np.float32)


def normalise_columns(values: np.ndarray) -> np.ndarray:
    """Each column mapped to [0, 1] by its min and max; a constant column to 0."""
    low, high = values.min(0), values.max(0)
    span = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (values - low) / span, 0.0)


def step_state(static_row: np.ndarray, previous: float, weight_step: bool) -> np.ndarray:
    """The state of one step: the layer's static row, the previous step's bits over the
    largest choice, and 1 for a weight-bits step (0 for activation bits)."""
    return np.concatenate([static_row, [previous, 1.0 if weight_step else 0.0]]).astype(np.float32)


def action_to_index(action: float, choices: int) -> int:
    """The choice ``⌊a·n⌋`` of ``n = choices`` equal bins for an action in [0, 1] (clipped)."""
    a = min(max(float(action), 0.0), 1.0)
    return min(int(a * choices), choices - 1)


def action_to_bits(action: float, bits: Sequence[int]) -> int:
    """The bit-width an action in [0, 1] maps to among ``bits`` (ascending)."""
    return int(bits[action_to_index(action, len(bits))])


@dataclass(frozen=True)
class CostLimit:
    """One limit the constraint loop enforces.

    Attributes:
        name: what it measures, for messages (``"bitops"``, ``"size"``, ``"table"``).
        coefficients: cost of each layer at weight choice ``i`` and activation choice ``j``,
            shape ``(layers, choices, choices)``, in the limit's unit.
        fixed: cost of the layers outside the loop (fixed by the convention).
        limit: the largest allowed total (same unit).
    """

    name: str
    coefficients: np.ndarray
    fixed: float
    limit: float

    def total(self, w_index: np.ndarray, a_index: np.ndarray) -> float:
        """The cost of the policy given by choice indices (one per layer)."""
        rows = np.arange(len(w_index))
        return float(self.coefficients[rows, w_index, a_index].sum() + self.fixed)

    def met(self, w_index: np.ndarray, a_index: np.ndarray) -> bool:
        return self.total(w_index, a_index) <= self.limit


class InfeasibleLimit(ValueError):
    """The lowest bits on every movable layer still exceed a limit."""


def check_reachable(
    limits: Sequence[CostLimit], start_w: np.ndarray, start_a: np.ndarray, movable: np.ndarray
) -> None:
    """Raise :class:`InfeasibleLimit` naming the first limit that the policy with every
    ``movable`` layer at its lowest choice (the others as in ``start_*``) exceeds."""
    low_w = np.where(movable, 0, start_w)
    low_a = np.where(movable, 0, start_a)
    for limit in limits:
        lowest = limit.total(low_w, low_a)
        if lowest > limit.limit:
            raise InfeasibleLimit(
                f"the {limit.name} limit {limit.limit:.6g} cannot be met: every searchable "
                f"layer at its lowest bits already costs {lowest:.6g}"
            )


def constrain(
    w_index: np.ndarray,
    a_index: np.ndarray,
    limits: Sequence[CostLimit],
    movable: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """HAQ's backward loop: lower bits, last layer first (activation, then weight), one
    choice at a time, until every limit holds. Returns new index arrays.

    Raises:
        InfeasibleLimit: when even the lowest bits on every movable layer exceed a limit.
    """
    w, a = np.array(w_index, dtype=np.int64), np.array(a_index, dtype=np.int64)
    movable = np.ones(len(w), bool) if movable is None else np.asarray(movable, bool)

    def met() -> bool:
        return all(limit.met(w, a) for limit in limits)

    if met():
        return w, a
    check_reachable(limits, w, a, movable)
    while True:
        for layer in reversed(range(len(w))):
            if not movable[layer]:
                continue
            for index in (a, w):
                if index[layer] > 0:
                    index[layer] -= 1
                    if met():
                        return w, a
