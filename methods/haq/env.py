"""HAQ's environment: the layer state, the action → bit map and the constraint loop
(mit-han-lab/haq ``lib/env/linear_quantize_env.py``).

- **State** (10 numbers per step): depthwise (1/0), input channels, output channels,
  stride, kernel size, weight count, input H·W, layer index (the first 8 min-max
  normalised over the layers), then the previous step's bits over the largest choice
  (1.0 before the first step) and the step's kind (1 = weight bits, 0 = activation bits).
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
import torch
from torch import nn

STATE_DIM = 10
STATIC_DIM = 8  # the columns normalised over layers; then previous action and step kind


@dataclass(frozen=True)
class LayerGeometry:
    """One quantizable layer's shape for one input image (channels, pixels, weights)."""

    name: str
    depthwise: bool
    in_channels: int
    out_channels: int
    stride: int
    kernel: int
    weights: int
    in_hw: int  # input height × width in pixels; 1 for a linear layer
    linear: bool


@torch.no_grad()
def layer_geometry(
    model: nn.Module, names: Sequence[str], input_shape: Sequence[int] = (3, 32, 32)
) -> list[LayerGeometry]:
    """Geometry of the ``names`` layers of ``model`` (conv or linear modules), from one
    forward pass of a zero image in eval mode (the model's training mode is restored). Run
    it on a model at full precision, so no quantizer calibrates on the zeros."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"layer {missing[0]!r} is not a module of the model")
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str):  # noqa: ANN202 - a forward hook
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            seen.setdefault(name, tuple(args[0].shape))

        return hook

    hooks = [modules[n].register_forward_hook(record(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    found = []
    for n in names:
        m = modules[n]
        if isinstance(m, nn.Linear):
            features, outputs, weights = m.in_features, m.out_features, m.weight.numel()
            found.append(LayerGeometry(n, False, features, outputs, 0, 1, weights, 1, True))
            continue
        if not isinstance(m, nn.Conv2d):
            raise ValueError(f"layer {n!r} is a {type(m).__name__}, not a Conv2d or Linear")
        shape = seen.get(n)
        if shape is None:
            raise ValueError(f"layer {n!r} is not used in the model's forward pass")
        depthwise = m.groups > 1 and m.groups == m.in_channels
        found.append(
            LayerGeometry(
                n,
                depthwise,
                m.in_channels,
                m.out_channels,
                int(m.stride[0]),
                int(m.kernel_size[0]),
                m.weight.numel(),
                int(shape[-2] * shape[-1]),
                False,
            )
        )
    return found


def static_features(geometry: Sequence[LayerGeometry]) -> np.ndarray:
    """The first 8 state columns, one row per layer, each column min-max normalised over
    the layers (a constant column becomes 0), float32 of shape ``(layers, 8)``."""
    raw = np.array(
        [
            [
                float(g.depthwise),
                g.in_channels,
                g.out_channels,
                g.stride,
                g.kernel,
                g.weights,
                g.in_hw,
                i,
            ]
            for i, g in enumerate(geometry)
        ],
        dtype=np.float64,
    ).reshape(len(geometry), STATIC_DIM)
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
