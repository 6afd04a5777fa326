"""Feature taps: where a space's model exposes the features that set each searchable layer's
bits, for methods that probe a network's features (OMPQ's orthogonality).

A space declares the block layouts its nets are made of (``SearchSpace.tap_blocks``); each
layout turns one block module into its taps. A tap is a module whose forward output is
hooked, a post-processing of that output, and the searchable layers that tap stands for.
Methods call :meth:`~benchmark.arena.spaces.base.SearchSpace.feature_taps` and hook the
taps; they never look for layers by attribute name themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn
from torch.nn import functional as F

TapMode = Literal["blocks", "mixed", "fallback"]


@dataclass(frozen=True)
class FeatureTap:
    """One feature tap and the searchable layers whose weight bits it stands for.

    Attributes:
        name: readable id, ``"<block>/<role>"`` (``"layer1.0/conv1"``, ``"blocks.3/out"``).
        module: path of the module whose forward output is hooked.
        post: applied to that output: ``"identity"``, ``"relu"`` or ``"act:<path>"`` (the
            model's activation module at ``path``).
        layers: searchable layer names (the first is the tap's own conv).
    """

    name: str
    module: str
    post: str
    layers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "post": self.post,
            "layers": [*self.layers],
        }

    def post_fn(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """The function that turns the hooked module's output into the tap's features."""
        if self.post == "identity":
            return lambda t: t
        if self.post == "relu":
            return F.relu
        if self.post.startswith("act:"):
            act = model.get_submodule(self.post[4:])
            if getattr(act, "inplace", False):  # never overwrite what the model goes on with
                return lambda t: act(t.clone())
            return act
        raise ValueError(f"unknown tap post-processing {self.post!r}")


BlockLayout = Callable[[str, nn.Module], "list[FeatureTap] | None"]
"""A block layout: the taps of the module at ``path``, or None if it is not such a block."""


def _has(module: nn.Module, *names: str) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Module) for n in names)


def basic_block_taps(path: str, module: nn.Module) -> list[FeatureTap] | None:
    """ResNet BasicBlock (``conv1, bn1, conv2, bn2``): ``relu(bn1(conv1 x))`` → conv1; the
    block output (after the add and the final ReLU) → conv2."""
    if not _has(module, "conv1", "bn1", "conv2", "bn2") or hasattr(module, "conv3"):
        return None
    return [
        FeatureTap(f"{path}/conv1", f"{path}.bn1", "relu", (f"{path}.conv1",)),
        FeatureTap(f"{path}/out", path, "identity", (f"{path}.conv2",)),
    ]


def inverted_residual_taps(path: str, module: nn.Module) -> list[FeatureTap] | None:
    """Inverted residual (``[pw_expand, expand_bn,] dw, dw_bn, pw_project, act``): the
    expand and depthwise convs after their BN and activation (before SE); the block
    output → the projection."""
    if not _has(module, "dw", "dw_bn", "pw_project", "act"):
        return None
    act = f"act:{path}.act"
    taps = []
    if _has(module, "pw_expand", "expand_bn"):
        taps.append(FeatureTap(f"{path}/expand", f"{path}.expand_bn", act, (f"{path}.pw_expand",)))
    taps.append(FeatureTap(f"{path}/dw", f"{path}.dw_bn", act, (f"{path}.dw",)))
    taps.append(FeatureTap(f"{path}/out", path, "identity", (f"{path}.pw_project",)))
    return taps


def conv_bn_act_taps(path: str, module: nn.Module) -> list[FeatureTap] | None:
    """An ``act(bn(conv x))`` module (a stem or head): its output → conv."""
    if not _has(module, "conv", "bn", "act"):
        return None
    return [FeatureTap(f"{path}/out", path, "identity", (f"{path}.conv",))]


def find_taps(
    model: nn.Module, searchable: Sequence[str], layouts: Sequence[BlockLayout]
) -> tuple[list[FeatureTap], TapMode]:
    """Taps of ``model`` covering each of ``searchable`` exactly once, in network order.

    Every module is tried against ``layouts`` in order; the first that answers gives that
    block's taps (a searchable layer inside the block that none of them names, e.g. a
    shortcut conv, joins the block's last tap). Returns ``(taps, mode)``: ``"blocks"``
    (all from blocks), ``"mixed"`` (some layers fell back to a tap of their own, at their
    raw output) or ``"fallback"`` (no block recognised: one such tap per layer).
    """
    order = {name: i for i, name in enumerate(searchable)}
    taps: list[FeatureTap] = []
    covered: set[str] = set()
    matched: list[str] = []
    for path, module in model.named_modules():
        if not path or any(path.startswith(m + ".") for m in matched):
            continue
        found = next((t for layout in layouts if (t := layout(path, module))), None)
        if found is None:
            continue
        matched.append(path)
        block_taps = _restrict(found, order, covered)
        inside = [n for n in searchable if n.startswith(path + ".") and n not in covered]
        if block_taps and inside:
            last = block_taps[-1]
            block_taps[-1] = FeatureTap(last.name, last.module, last.post, (*last.layers, *inside))
            covered.update(inside)
        taps.extend(block_taps)
    from_blocks = len(taps)
    for name in searchable:
        if name not in covered:
            taps.append(FeatureTap(f"{name}/out", name, "identity", (name,)))
    taps.sort(key=lambda t: order[t.layers[0]])
    mode: TapMode = "blocks" if len(taps) == from_blocks else "mixed" if from_blocks else "fallback"
    return taps, mode


def _restrict(taps: list[FeatureTap], order: dict[str, int], covered: set[str]) -> list[FeatureTap]:
    """Keep only searchable, not yet covered layers; drop taps left with none."""
    kept = []
    for tap in taps:
        layers = tuple(n for n in tap.layers if n in order and n not in covered)
        if layers:
            covered.update(layers)
            kept.append(FeatureTap(tap.name, tap.module, tap.post, layers))
    return kept
