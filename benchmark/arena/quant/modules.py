"""Quantized Conv2d / Linear whose weight and activation bits are set at run time.

One module serves many policies: set ``layer.w_bits`` / ``layer.a_bits`` (bits;
32 = full precision) or call :func:`apply_policy` on a whole model. The input
activation is quantized by ``act_quantizer`` and the weight by
``weight_quantizer`` before the ordinary convolution / matrix product.

:meth:`QuantLayer.set_bit_mixture` makes a layer run a weighted mixture of bit-widths
instead (DNAS's shared-weight super-net; see :mod:`benchmark.arena.quant.mixture`) until
:meth:`QuantLayer.clear_bit_mixture`; :meth:`QuantLayer.set_branch_mixture` a weighted sum
of ``(w_bits, a_bits)`` branches, each with its own weight if given (DNAS's super-net edge).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.arena.policy import FP_BITS, LayerBits, Policy, PolicyError
from benchmark.arena.quant.base import QuantConfig
from benchmark.arena.quant.mixture import BitMixture, BranchMixture, branch_sum, mix


class QuantLayer:
    """Mixin: run-time ``w_bits``/``a_bits`` and the two quantizers."""

    w_bits: int
    a_bits: int
    weight_quantizer: nn.Module
    act_quantizer: nn.Module

    def _init_quant(self, config: QuantConfig, act_signed: bool | None) -> None:
        self.w_bits = FP_BITS
        self.a_bits = FP_BITS
        self.weight_quantizer = config.make_weight_quantizer()
        self.act_quantizer = config.make_act_quantizer(act_signed)
        self._bit_mixture: BitMixture | None = None
        self._branch_mixture: BranchMixture | None = None

    def set_bits(self, bits: LayerBits) -> None:
        self.w_bits, self.a_bits = int(bits.w_bits), int(bits.a_bits)

    @property
    def bits(self) -> LayerBits:
        return LayerBits(self.w_bits, self.a_bits)

    def set_bit_mixture(
        self,
        w_bits: Sequence[int],
        w_probs: Tensor,
        a_bits: Sequence[int],
        a_probs: Tensor,
    ) -> None:
        """Run a weighted mixture of bit-widths until :meth:`clear_bit_mixture`.

        The layer then computes ``op(Σ_j a_probs[j]·Q_a(x, a_bits[j]),
        Σ_i w_probs[i]·Q_w(W, w_bits[i]))`` (bits; 32 = the FP branch), one convolution /
        matrix product, differentiable in ``w_probs``, ``a_probs``, the weight and the
        quantizers. ``w_bits`` / ``a_bits`` of the layer are kept but not used meanwhile.
        Raises ``ValueError`` for mismatched lengths or a bit-width a quantizer has no
        state for. The tensors are used as given on every forward pass (not copied), so
        clear the mixture before ``copy.deepcopy`` of the model (non-leaf tensors, such as a
        softmax of logits, cannot be deep-copied) or before extracting a subnet.
        """
        mixture = BitMixture.create(w_bits, w_probs, a_bits, a_probs)
        mixture.check(self.weight_quantizer, self.act_quantizer)
        self._branch_mixture = None
        self._bit_mixture = mixture

    def set_branch_mixture(
        self,
        pairs: Sequence[tuple[int, int]],
        probs: Tensor,
        weights: Sequence[Tensor] | None = None,
    ) -> None:
        """Run ``Σ_k probs[k]·op(Q_a(x, a_k), Q_w(W_k, w_k))`` over the branches
        ``pairs[k] = (w_k, a_k)`` (bits; 32 = FP) until :meth:`clear_bit_mixture`, with
        ``W_k = weights[k]`` (DNAS's separate weights per branch, tensors of the layer's
        weight shape owned by the caller) or the layer's own weight for every branch
        (``weights=None``). The bias, if any, is added once. It runs as one convolution /
        matrix product per distinct activation bit-width
        (:func:`~benchmark.arena.quant.mixture.branch_sum`), differentiable in ``probs``,
        the weights and the quantizers. Replaces a :meth:`set_bit_mixture`; the same
        cautions apply (tensors used as given; clear before ``copy.deepcopy``). Only
        :class:`QConv2d` / :class:`QLinear` (not the supernets' dynamic layers) run it.
        """
        if type(self).forward not in (QConv2d.forward, QLinear.forward):
            raise TypeError(
                f"{type(self).__name__} has its own forward and runs no branch mixture: "
                "use a static model (e.g. a subnet extracted from the supernet)"
            )
        mixture = BranchMixture.create(pairs, probs, weights)
        mixture.check(self.weight, self.weight_quantizer, self.act_quantizer)
        self._bit_mixture = None
        self._branch_mixture = mixture

    def clear_bit_mixture(self) -> None:
        """Back to the single bit-widths ``w_bits`` / ``a_bits`` (clears either mixture)."""
        self._bit_mixture = None
        self._branch_mixture = None

    @property
    def branch_mixture(self) -> BranchMixture | None:
        """The mixture set by :meth:`set_branch_mixture`, or ``None``."""
        return getattr(self, "_branch_mixture", None)

    def _branch_output(self, x: Tensor) -> Tensor:
        """The branch mixture's output, bias included."""
        mixture = self.branch_mixture
        assert mixture is not None
        out = branch_sum(
            mixture, x, self.weight, self.weight_quantizer, self.act_quantizer, self._op
        )
        if self.bias is not None:
            out = out + self.bias.view(1, -1, *[1] * (out.dim() - 2))
        return out

    def _op(self, x: Tensor, weight: Tensor) -> Tensor:
        """The layer's convolution / matrix product on ``x`` and ``weight``, no bias."""
        raise NotImplementedError

    @property
    def bit_mixture(self) -> BitMixture | None:
        """The mixture set by :meth:`set_bit_mixture`, or ``None``."""
        return getattr(self, "_bit_mixture", None)

    def quantized_weight(self, weight: Tensor) -> Tensor:
        mixture = self.bit_mixture
        if mixture is not None:
            return mix(self.weight_quantizer, weight, mixture.w_bits, mixture.w_probs)
        return self.weight_quantizer(weight, self.w_bits)

    def quantized_input(self, x: Tensor) -> Tensor:
        mixture = self.bit_mixture
        if mixture is not None:
            return mix(self.act_quantizer, x, mixture.a_bits, mixture.a_probs)
        return self.act_quantizer(x, self.a_bits)


class QConv2d(nn.Conv2d, QuantLayer):
    """``nn.Conv2d`` with run-time fake quantization of its weight and input."""

    def __init__(
        self,
        *args,
        quant: QuantConfig | None = None,
        act_signed: bool | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._init_quant(quant or QuantConfig(), act_signed)

    def forward(self, x: Tensor) -> Tensor:
        if self.branch_mixture is not None:
            return self._branch_output(x)
        return self._conv_forward(
            self.quantized_input(x), self.quantized_weight(self.weight), self.bias
        )

    def _op(self, x: Tensor, weight: Tensor) -> Tensor:
        return self._conv_forward(x, weight, None)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, w_bits={self.w_bits}, a_bits={self.a_bits}"


class QLinear(nn.Linear, QuantLayer):
    """``nn.Linear`` with run-time fake quantization of its weight and input."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        quant: QuantConfig | None = None,
        act_signed: bool | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._init_quant(quant or QuantConfig(), act_signed)

    def forward(self, x: Tensor) -> Tensor:
        if self.branch_mixture is not None:
            return self._branch_output(x)
        return F.linear(self.quantized_input(x), self.quantized_weight(self.weight), self.bias)

    def _op(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, w_bits={self.w_bits}, a_bits={self.a_bits}"


def quant_layers(model: nn.Module) -> dict[str, QuantLayer]:
    """Quantized layers of ``model`` by module name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLayer)}


def apply_policy(model: nn.Module, policy: Mapping[str, LayerBits], *, strict: bool = True) -> None:
    """Set every named layer's bits; ``strict`` rejects names that are not quantized layers."""
    layers = quant_layers(model)
    for name, bits in policy.items():
        if name not in layers:
            if strict:
                raise PolicyError(f"{name!r} is not a quantized layer of this model")
            continue
        layers[name].set_bits(bits)


def current_policy(model: nn.Module) -> Policy:
    """The bits every quantized layer of ``model`` is set to now."""
    return {name: layer.bits for name, layer in quant_layers(model).items()}


def quantize_model(
    model: nn.Module,
    quant: QuantConfig | None = None,
    *,
    include: Callable[[str, nn.Module], bool] | None = None,
) -> nn.Module:
    """Replace the ``nn.Conv2d``/``nn.Linear`` modules of any model by quantized twins, in place.

    Weights and biases are kept (the same tensors); layers start at full precision.
    Activation signedness is decided on the first quantized input. ``include(name, module)``
    selects which layers to replace (default: all).
    """
    quant = quant or QuantConfig()
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantLayer) or not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        if include is not None and not include(name, module):
            continue
        if isinstance(module, nn.Conv2d):
            new: nn.Module = QConv2d(
                module.in_channels,
                module.out_channels,
                module.kernel_size,
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                groups=module.groups,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
                quant=quant,
            )
        else:
            new = QLinear(
                module.in_features, module.out_features, module.bias is not None, quant=quant
            )
        new.weight = module.weight
        new.bias = module.bias
        new.to(module.weight.device)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return model


def scale_quant_ranges(
    model: nn.Module, factor: float, layers: Collection[str] | None = None
) -> int:
    """Multiply the range state (LSQ: the step size ``s``) of the weight and activation
    quantizers of ``model``'s quantized layers named in ``layers`` (default: every one) by
    ``factor`` (unitless; :meth:`Quantizer.scale_range`). Returns the number of
    quantizers scaled (two per layer)."""
    count = 0
    for name, layer in quant_layers(model).items():
        if layers is not None and name not in layers:
            continue
        for quantizer in (layer.weight_quantizer, layer.act_quantizer):
            quantizer.scale_range(factor)
            count += 1
    return count


def reset_quant_ranges(model: nn.Module, layers: Collection[str] | None = None) -> int:
    """Re-initialise on first use the range state of the weight and activation quantizers
    of ``model``'s quantized layers named in ``layers`` (default: every one;
    :meth:`Quantizer.reset_range`). Returns the number of quantizers reset (two per layer)."""
    count = 0
    for name, layer in quant_layers(model).items():
        if layers is not None and name not in layers:
            continue
        for quantizer in (layer.weight_quantizer, layer.act_quantizer):
            quantizer.reset_range()
            count += 1
    return count


@torch.no_grad()
def copy_quant_state(src: nn.Module, dst: nn.Module) -> None:
    """Copy quantizer parameters and buffers between two models with the same layer names."""
    dst_layers = quant_layers(dst)
    for name, layer in quant_layers(src).items():
        if name in dst_layers:
            dst_layers[name].weight_quantizer.load_state_dict(layer.weight_quantizer.state_dict())
            dst_layers[name].act_quantizer.load_state_dict(layer.act_quantizer.state_dict())
