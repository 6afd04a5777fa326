"""The cost model: MACs, BitOPs, MFLOPs/64 and weight size, one definition for every method.

Per-layer MACs come from the module graph itself: ``torch.utils.flop_counter.FlopCounterMode``
counts the convolution / matrix-product FLOPs each ``Conv``/``Linear`` module really runs
(``MACs = FLOPs / 2``), so sliced or dynamic layers are counted as they execute. Weight
parameters follow from the MACs and the output shape seen by a forward hook
(``params = MACs · C_out / numel(output)``).

From these, for a per-layer policy (bits; 32 = full precision):

- ``bitops = Σ MACs · b_w · b_a`` (FP layers count as 32 × 32),
- ``mflops64 = Σ MACs · b_w · b_a / 64 / 1e6`` (the OQAT/QFA "FLOPs" convention),
- ``size_bits = Σ params · b_w`` (weights of the counted layers; biases, BN excluded),
- and each as a ratio to the same model with every counted layer at W8A8.

Only convolution and linear layers are counted; element-wise work (BN, activations,
residual adds, pooling) is outside the definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmark.arena.policy import FP_BITS, LayerBits, Policy, policy_from_dict

FP_LAYER = LayerBits(FP_BITS, FP_BITS)
"""Bits of a layer the policy does not mention: full precision (32 × 32)."""

_MAC_OPS = ("convolution", "mm", "addmm", "bmm", "baddbmm", "_convolution")


@dataclass(frozen=True)
class LayerProfile:
    """Shape-derived facts of one counted layer for one input image: MACs and weight
    parameters per image, channels, and the geometry a method's state may read (stride,
    kernel side, input pixels = height × width; a linear layer has stride 0, kernel 1 and
    1 input pixel, as HAQ's state has it)."""

    name: str
    kind: str  # "conv", "dwconv" or "linear"
    macs: int
    params: int
    in_channels: int
    out_channels: int
    stride: int = 1
    kernel: int = 1
    in_pixels: int = 1


@dataclass(frozen=True)
class LayerCost:
    """One layer's cost under a policy."""

    name: str
    kind: str
    macs: int
    params: int
    w_bits: int
    a_bits: int

    @property
    def bitops(self) -> int:
        return self.macs * self.w_bits * self.a_bits

    @property
    def size_bits(self) -> int:
        return self.params * self.w_bits


@dataclass(frozen=True)
class Reference:
    """A space's W8A8 cost that relative limits and ratios refer to (BitOPs, bits)."""

    bitops_w8a8: float
    size_bits_w8a8: float


@dataclass(frozen=True)
class CostReport:
    """Whole-model cost for one image (MACs, bit operations, bits of weight storage)."""

    macs: int
    params: int
    bitops: int
    mflops64: float
    size_bits: int
    bitops_w8a8: int
    size_bits_w8a8: int
    layers: tuple[LayerCost, ...]

    @property
    def bitops_ratio_w8a8(self) -> float:
        return self.bitops / self.bitops_w8a8 if self.bitops_w8a8 else float("nan")

    @property
    def size_ratio_w8a8(self) -> float:
        return self.size_bits / self.size_bits_w8a8 if self.size_bits_w8a8 else float("nan")

    @property
    def gbitops(self) -> float:
        return self.bitops / 1e9

    @property
    def avg_w_bits(self) -> float:
        """MAC-weighted mean weight bits."""
        return sum(c.macs * c.w_bits for c in self.layers) / max(self.macs, 1)

    @property
    def avg_a_bits(self) -> float:
        """MAC-weighted mean activation bits."""
        return sum(c.macs * c.a_bits for c in self.layers) / max(self.macs, 1)

    def to_dict(self) -> dict:
        """JSON-ready summary, layers included."""
        return {
            "macs": self.macs,
            "params": self.params,
            "bitops": self.bitops,
            "gbitops": self.gbitops,
            "mflops64": self.mflops64,
            "size_bits": self.size_bits,
            "size_bytes": self.size_bits / 8,
            "bitops_w8a8": self.bitops_w8a8,
            "size_bits_w8a8": self.size_bits_w8a8,
            "bitops_ratio_w8a8": self.bitops_ratio_w8a8,
            "size_ratio_w8a8": self.size_ratio_w8a8,
            "avg_w_bits": self.avg_w_bits,
            "avg_a_bits": self.avg_a_bits,
            "layers": [
                {**asdict(c), "bitops": c.bitops, "size_bits": c.size_bits} for c in self.layers
            ],
        }


def _is_counted(module: nn.Module) -> bool:
    from benchmark.arena.quant.modules import QuantLayer  # local: quant imports policy only

    return isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear | QuantLayer)


def _kind(module: nn.Module, in_channels: int) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    groups = getattr(module, "active_groups", getattr(module, "groups", 1))
    return "dwconv" if groups > 1 and groups == in_channels else "conv"


@torch.no_grad()
def profile_layers(
    model: nn.Module, input_shape: Sequence[int] = (3, 32, 32)
) -> dict[str, LayerProfile]:
    """MACs and weight parameters of each conv/linear layer for ONE image of ``input_shape``.

    Works on any ``nn.Module``; runs one forward pass in eval mode on zeros (the model's
    training mode is restored afterwards). Layer names are module paths.
    """
    counted = {name: m for name, m in model.named_modules() if _is_counted(m) and name}
    shapes, counts = _traced_pass(model, counted, input_shape)
    root = type(model).__name__
    flops: dict[str, int] = {}
    for key, ops in counts.items():
        if not key.startswith(root + "."):
            continue
        name = key[len(root) + 1 :]
        if name in counted:
            flops[name] = sum(v for op, v in ops.items() if str(op).split(".")[-1] in _MAC_OPS)
    profiles: dict[str, LayerProfile] = {}
    for name, module in counted.items():
        if name not in shapes:  # not executed for this input (e.g. an inactive block)
            continue
        numel, out_ch, in_ch, pixels = shapes[name]
        macs = flops.get(name, 0) // 2
        params = macs * out_ch // numel if numel else 0
        kind = _kind(module, in_ch)
        stride, kernel = _geometry(module, kind, macs, numel, in_ch)
        profiles[name] = LayerProfile(
            name, kind, macs, params, in_ch, out_ch, stride, kernel, pixels
        )
    return profiles


def _traced_pass(
    model: nn.Module, counted: Mapping[str, nn.Module], input_shape: Sequence[int]
) -> tuple[dict[str, tuple[int, int, int, int]], dict]:
    """One eval-mode, full-precision forward pass of a zero image: per counted layer
    ``(numel(output), C_out, C_in, input pixels)``, and torch's FLOP counts per module."""
    from benchmark.arena.quant.modules import QuantLayer

    shapes: dict[str, tuple[int, int, int, int]] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            linear = isinstance(module, nn.Linear)
            out_ch = output.shape[-1] if linear else output.shape[1]
            in_ch = inputs[0].shape[-1] if linear else inputs[0].shape[1]
            pixels = 1 if linear else int(inputs[0].shape[-2] * inputs[0].shape[-1])
            prev = shapes.get(name, (0, out_ch, in_ch, pixels))
            shapes[name] = (prev[0] + output.numel(), out_ch, in_ch, pixels)

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in counted.items()]
    was_training = model.training
    model.eval()
    # MACs do not depend on bits: run the pass at full precision so that quantizers are
    # not touched (an LSQ step would otherwise be initialised on this all-zeros input).
    quantized = [m for m in model.modules() if isinstance(m, QuantLayer)]
    bits = [(m.w_bits, m.a_bits) for m in quantized]
    for m in quantized:
        m.w_bits = m.a_bits = FP_BITS
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = torch.zeros(1, *input_shape, device=device)
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for m, (w_bits, a_bits) in zip(quantized, bits, strict=True):
            m.w_bits, m.a_bits = w_bits, a_bits
        model.train(was_training)
    return shapes, counter.get_flop_counts()


def _geometry(module: nn.Module, kind: str, macs: int, numel: int, in_ch: int) -> tuple[int, int]:
    """``(stride, kernel side)`` of a counted layer as it ran: the kernel from its MACs
    (``MACs = numel(out) · C_in/groups · k²``), so a dynamic conv's active kernel counts."""
    if kind == "linear":
        return 0, 1
    stride = getattr(module, "stride", 1)
    stride = int(stride[0] if isinstance(stride, tuple | list) else stride)
    groups = getattr(module, "active_groups", getattr(module, "groups", 1))
    per_output = macs / max(numel * max(in_ch // max(groups, 1), 1), 1)
    return stride, max(round(per_output**0.5), 1)


def cost_from_profiles(
    profiles: Mapping[str, LayerProfile] | Sequence[LayerProfile],
    policy: Mapping[str, LayerBits],
    *,
    default_bits: LayerBits = FP_LAYER,
) -> CostReport:
    """Cost of a policy on already profiled layers; layers missing from it get ``default_bits``."""
    items = list(profiles.values()) if isinstance(profiles, Mapping) else list(profiles)
    layers = []
    for p in items:
        bits = policy.get(p.name, default_bits)
        layers.append(LayerCost(p.name, p.kind, p.macs, p.params, bits.w_bits, bits.a_bits))
    macs = sum(c.macs for c in layers)
    bitops = sum(c.bitops for c in layers)
    return CostReport(
        macs=macs,
        params=sum(c.params for c in layers),
        bitops=bitops,
        mflops64=bitops / 64 / 1e6,
        size_bits=sum(c.size_bits for c in layers),
        bitops_w8a8=macs * 64,
        size_bits_w8a8=sum(c.params for c in layers) * 8,
        layers=tuple(layers),
    )


def as_policy(policy: Mapping[str, object]) -> Policy:
    """A policy of :class:`LayerBits` from one given as such or in its JSON form
    (``{"layer": {"w_bits": 4, "a_bits": 4}}``, e.g. loaded from a file); entries may mix
    both. A malformed entry raises :class:`~benchmark.arena.policy.PolicyError`."""
    if isinstance(policy, Mapping) and all(isinstance(b, LayerBits) for b in policy.values()):
        return dict(policy)
    if not isinstance(policy, Mapping):
        return policy_from_dict(policy)  # raises: a policy must be a mapping
    return policy_from_dict(
        {name: b.to_dict() if isinstance(b, LayerBits) else b for name, b in policy.items()}
    )


def model_cost(
    model: nn.Module,
    policy: Mapping[str, LayerBits] | Mapping[str, Mapping[str, int]] | None = None,
    input_shape: Sequence[int] = (3, 32, 32),
    *,
    default_bits: LayerBits = FP_LAYER,
) -> CostReport:
    """Cost of any model under a per-layer policy (unlisted layers: ``default_bits``), for
    one image of ``input_shape``.

    ``policy`` maps layer names to :class:`LayerBits` or to their JSON form
    ``{"w_bits": 4, "a_bits": 4}`` (as the README documents; a malformed entry raises
    :class:`~benchmark.arena.policy.PolicyError`). If ``policy`` is None and the model has
    quantized layers, their current bits are used.
    """
    if policy is None:
        from benchmark.arena.quant.modules import current_policy

        policy = current_policy(model)
    bits = as_policy(policy)
    return cost_from_profiles(profile_layers(model, input_shape), bits, default_bits=default_bits)
