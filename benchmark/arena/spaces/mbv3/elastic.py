"""Dynamic (weight-sharing) layers of an elastic supernet, OFA-style.

Each layer owns the weights of its largest configuration and runs a slice of them:

- :class:`DynamicQConv2d`: a quantized 1×1 conv (optionally with an FP bias) whose input
  channels follow the input and whose output channels are ``active_out`` (the first ones,
  as OFA slices them).
- :class:`DynamicDWConv2d`: a quantized depthwise conv; channels follow the input, the
  kernel is the full 5×5 or a 3×3 obtained by OFA's kernel transform (a learned 9×9 matrix
  applied to the centre 3×3 of the 5×5 kernel).
- :class:`DynamicBatchNorm2d`: BatchNorm on the first ``C`` channels (running stats and
  affine parameters sliced; running-stat updates land in the shared buffers).
- :class:`DynamicSE`: squeeze-excite whose reduce width follows the input (``C // 4``
  rounded to a multiple of 8, as OFA); its two convs are :class:`DynamicQConv2d` with FP
  biases (:class:`SqueezeExcite` is the static twin, with :class:`QConv2d`).

Quantizer state is whatever the :class:`~benchmark.arena.quant.base.QuantConfig` makes: one
state per physical layer, shared by every subnet and applied to the *sliced* weight (so
LSQ's gradient scale uses the sliced ``numel``), or one per bit-width (``per_bit_*``).
Which part of the weight is quantized is the weight quantizer config's rule
(:attr:`~benchmark.arena.quant.quantizer.QuantizerConfig.quantizes_full_weight`): by default
the active slice (OQAT's :class:`~benchmark.arena.quant.lsq.LSQConfig`: step initialised from
and gradient-scaled by the slice); with the rule set (QFA's
:class:`~benchmark.arena.quant.lsq_full.LSQFullConfig`) the full weight (all channels; the
depthwise kernel after the kernel transform), then sliced.
Every conv here is an ``nn.Conv2d`` and a ``QuantLayer``, so the cost model counts exactly
the sliced convolution each one runs. Biases are never quantized.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.arena.quant.base import QuantConfig
from benchmark.arena.quant.modules import QConv2d

SE_REDUCTION = 4
CHANNEL_DIVISIBLE = 8


def make_divisible(value: float, divisor: int = CHANNEL_DIVISIBLE) -> int:
    """OFA/TF rounding of a channel count to a multiple of ``divisor`` (never below 90%)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def se_channels(channels: int) -> int:
    """Hidden width of the squeeze-excite on ``channels`` channels."""
    return make_divisible(channels // SE_REDUCTION)


def front_slice(t: Tensor, *sizes: int) -> Tensor:
    """``t`` cut to its first ``sizes`` entries along the leading dims (no copy if full)."""
    if all(n == t.shape[i] for i, n in enumerate(sizes)):
        return t
    out = t[tuple(slice(0, n) for n in sizes)]
    if not torch.is_grad_enabled():
        # a no-grad view of a parameter still reports requires_grad and confuses the
        # module tracker of FlopCounterMode (cost profiling runs under no_grad)
        out = out.detach()
    return out.contiguous()


def _full_first(layer: QConv2d) -> bool:
    """Whether ``layer``'s weight quantizer config asks for the full weight to be quantized,
    then sliced (:attr:`QuantizerConfig.quantizes_full_weight`)."""
    config = getattr(layer.weight_quantizer, "config", None)
    return bool(getattr(config, "quantizes_full_weight", False))


class DynamicQConv2d(QConv2d):
    """Quantized 1×1 conv (no groups) with elastic input and output channels.

    Input channels are read from the input; output channels are ``active_out``
    (defaults to the maximum). The optional bias is sliced to ``active_out`` and stays FP.
    """

    def __init__(
        self,
        max_in: int,
        max_out: int,
        *,
        bias: bool = False,
        quant: QuantConfig | None = None,
        act_signed: bool | None = None,
    ) -> None:
        super().__init__(max_in, max_out, 1, bias=bias, quant=quant, act_signed=act_signed)
        self.active_out = max_out

    def active_weight(self, in_channels: int) -> Tensor:
        """The ``active_out × in_channels × 1 × 1`` slice of the weight."""
        return front_slice(self.weight, self.active_out, in_channels)

    def active_quantized_weight(self, in_channels: int) -> Tensor:
        """The quantized weight slice: the slice quantized, or the full weight quantized and
        then sliced when the weight quantizer's config ``quantizes_full_weight``."""
        if _full_first(self):
            return front_slice(self.quantized_weight(self.weight), self.active_out, in_channels)
        return self.quantized_weight(self.active_weight(in_channels))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.active_quantized_weight(x.shape[1])
        bias = None if self.bias is None else front_slice(self.bias, self.active_out)
        return F.conv2d(self.quantized_input(x), weight, bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, active_out={self.active_out}"


class DynamicDWConv2d(QConv2d):
    """Quantized depthwise conv with elastic channels and kernel (5×5 or transformed 3×3).

    ``transform_5to3`` is the learned 9×9 matrix of OFA's kernel transform, initialised to
    the identity: ``k3 = (centre3x3(k5) flattened) @ transform_5to3.T``.
    """

    kernel_choices: tuple[int, ...] = (3, 5)

    def __init__(
        self,
        max_channels: int,
        stride: int,
        *,
        quant: QuantConfig | None = None,
        act_signed: bool | None = None,
    ) -> None:
        max_kernel = max(self.kernel_choices)
        super().__init__(
            max_channels,
            max_channels,
            max_kernel,
            stride=stride,
            padding=max_kernel // 2,
            groups=max_channels,
            bias=False,
            quant=quant,
            act_signed=act_signed,
        )
        self.active_kernel = max_kernel
        self.active_groups = max_channels
        self.transform_5to3 = nn.Parameter(torch.eye(9))

    def active_weight(self, channels: int, kernel: int | None = None) -> Tensor:
        """The ``channels × 1 × k × k`` FP kernel for ``kernel`` (default: the active one)."""
        kernel = self.active_kernel if kernel is None else kernel
        if kernel not in self.kernel_choices:
            raise ValueError(f"kernel {kernel} is not one of {self.kernel_choices}")
        weight = front_slice(self.weight, channels)
        if kernel == 5:
            return weight
        centre = weight[:, :, 1:4, 1:4].reshape(channels, 9)
        # centre @ M.T written element-wise: a weight transform, not per-image work, so the
        # cost model (which counts matrix products) must not see it
        kernel3 = (centre.unsqueeze(1) * self.transform_5to3.unsqueeze(0)).sum(-1)
        return kernel3.view(channels, 1, 3, 3)

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        self.active_groups = channels
        if _full_first(self):  # every channel quantized, then sliced (QFA)
            full = self.quantized_weight(self.active_weight(self.weight.shape[0]))
            weight = front_slice(full, channels)
        else:
            weight = self.quantized_weight(self.active_weight(channels))
        k = self.active_kernel
        return F.conv2d(self.quantized_input(x), weight, None, self.stride, k // 2, 1, channels)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, active_kernel={self.active_kernel}"


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``C`` channels of its buffers, ``C`` read from the input."""

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        if channels == self.num_features:
            return super().forward(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else factor
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            self.running_mean[:channels] if self.running_mean is not None else None,
            self.running_var[:channels] if self.running_var is not None else None,
            self.weight[:channels],
            self.bias[:channels],
            use_batch_stats,
            factor,
            self.eps,
        )


class SqueezeExcite(nn.Module):
    """``x · hsigmoid(expand(relu(reduce(avgpool(x)))))``; both convs quantized, biases FP.

    Activation grids: ``reduce`` reads the pooled block activation (the mean of h_swish
    outputs, which can be negative) on a signed grid; ``expand`` reads a ReLU output on an
    unsigned one. Their bits are whatever the policy sets (the space fixes them).
    """

    def __init__(self, channels: int, *, quant: QuantConfig | None = None) -> None:
        super().__init__()
        hidden = se_channels(channels)
        self.reduce: QConv2d = QConv2d(channels, hidden, 1, bias=True, quant=quant, act_signed=True)
        self.expand: QConv2d = QConv2d(
            hidden, channels, 1, bias=True, quant=quant, act_signed=False
        )

    def forward(self, x: Tensor) -> Tensor:
        y = x.mean((2, 3), keepdim=True)
        y = F.hardsigmoid(self.expand(F.relu(self.reduce(y))))
        return x * y


class DynamicSE(SqueezeExcite):
    """:class:`SqueezeExcite` sized for ``max_channels``; runs the slice for the input's C."""

    def __init__(self, max_channels: int, *, quant: QuantConfig | None = None) -> None:
        nn.Module.__init__(self)
        hidden = se_channels(max_channels)
        self.reduce = DynamicQConv2d(max_channels, hidden, bias=True, quant=quant, act_signed=True)
        self.expand = DynamicQConv2d(hidden, max_channels, bias=True, quant=quant, act_signed=False)

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        self.reduce.active_out = se_channels(channels)
        self.expand.active_out = channels
        return super().forward(x)
