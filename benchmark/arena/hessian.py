"""Hessian traces of a training loss, per layer, by Hutchinson's estimator.

``tr(H) = E_v[vᵀHv]`` for Rademacher ``v`` (entries ±1, Hutchinson 1990); ``Hv`` is a
Hessian-vector product by double backward (Pearlmutter 1994): the gradient ``g`` of the loss
is built with ``create_graph=True`` once, and ``Hv = ∂(gᵀv)/∂θ`` is one more backward pass
through that graph per vector. Written for this project (HAWQ's sensitivity); PyHessian,
where HAWQ's own traces come from, is GPL-3.0 and is not used.

Stopping rule (this project's; not PyHessian's): after at least ``min_iter`` vectors, an
estimate stops once the standard error of its running mean is at most ``tol`` of the mean's
magnitude (``sd(samples) / √n / |mean| ≤ tol``), or after ``max_iter`` vectors. PyHessian's
rule, the relative change of the running mean between two vectors below ``tol`` (1e-3),
judges the mean by one step: a 27-parameter layer's trace stopped after 2 vectors, 46% off,
and over 200 seeds 53.5% of that layer's estimates were more than 10% off. Defaults: 10 to
200 vectors, ``tol`` 0.03 (a 95% interval of about ±6% of the trace when it stops early).

- :func:`hutchinson_trace`: one estimate from any ``hvp`` function (tests, other losses);
- :class:`HessianProbe`: per-layer Hessian-vector products of a model's mean cross-entropy
  over fixed batches (``v`` restricted to one layer's weight, or to its input activations),
  each product charged through a ``charge`` callback; the toolkit builds one with the
  budget's (``ctx.hessian_probe``);
- :func:`hutchinson_traces`: every target of a probe, round by round (one vector per
  unfinished target per round, each target with its own seeded stream, so the numbers do
  not depend on the order), with a callback after each round for anytime answers;
- :func:`twice_differentiable`: a context in which ``hardsigmoid`` / ``hardswish`` run as
  their piecewise-linear composites, whose double backward torch implements (the fused
  kernels' is not: "derivative for aten::hardsigmoid_backward is not implemented"), and
  grouped (depthwise) convolutions as :func:`grouped_conv2d`, whose double backward is not
  one convolution per group.

Units: traces are in loss units per squared weight (or activation) unit; ``normalised``
divides by the number of entries (HAWQ's ``Tr / #params``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

MAX_VECTORS = 200
"""Default most Rademacher vectors per trace."""

MIN_VECTORS = 10
"""Default fewest vectors before the stopping test may end a trace."""

TOLERANCE = 0.03
"""Default stopping tolerance: the mean's standard error over its magnitude."""

HVP = Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]
"""A Hessian-vector product: vector (as a tuple of tensors) → ``Hv`` (same shapes)."""


def relative_standard_error(samples: Sequence[float]) -> float:
    """The standard error of the samples' mean over the mean's magnitude (unitless): the
    stopping test's quantity; ``inf`` for fewer than two samples or a zero mean."""
    n = len(samples)
    if n < 2:
        return math.inf
    mean = math.fsum(samples) / n
    if mean == 0:
        return math.inf
    variance = math.fsum((x - mean) ** 2 for x in samples) / (n - 1)
    return math.sqrt(variance / n) / abs(mean)


def rademacher(shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
    """Entries ±1 with equal probability, drawn on the CPU from ``generator`` (so a seed gives
    the same vector on any device), returned with ``like``'s dtype and device."""
    bits = torch.randint(0, 2, tuple(shape), generator=generator, dtype=torch.int8)
    return (bits.to(like.dtype) * 2 - 1).to(like.device)


@dataclass
class TraceEstimate:
    """A Hutchinson estimate of ``tr(H)`` and how it stopped.

    Attributes:
        numel: entries of the target (parameters or activation values): the divisor of
            :attr:`normalised`.
        samples: every ``vᵀHv`` drawn, in order.
        converged: whether the stopping test passed (else ``max_iter`` was reached, or the
            estimate is still running).
    """

    numel: int
    samples: list[float] = field(default_factory=list)
    converged: bool = False

    @property
    def iterations(self) -> int:
        return len(self.samples)

    @property
    def trace(self) -> float:
        """Mean of the samples (``nan`` before the first one)."""
        return math.fsum(self.samples) / len(self.samples) if self.samples else math.nan

    @property
    def normalised(self) -> float:
        """``trace / numel``: HAWQ's normalised trace (average Hessian eigenvalue)."""
        return self.trace / self.numel

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "normalised": self.normalised,
            "numel": self.numel,
            "iterations": self.iterations,
            "converged": self.converged,
        }


class HutchinsonTrace:
    """The running estimate of one target: draw a vector, add ``vᵀHv``, test for a stop.

    Args:
        shapes: the shapes of the vector's tensors (one weight: one shape).
        max_iter: most vectors drawn.
        tol: the stopping test's tolerance, the mean's standard error over its magnitude
            (0: never early).
        generator: the target's own random stream.
        min_iter: fewest vectors before the test may stop it (at most ``max_iter``).
    """

    def __init__(
        self,
        shapes: Sequence[Sequence[int]],
        *,
        max_iter: int,
        tol: float,
        generator: torch.Generator,
        min_iter: int = MIN_VECTORS,
    ) -> None:
        self.shapes = [tuple(s) for s in shapes]
        self.max_iter, self.tol, self.generator = int(max_iter), float(tol), generator
        self.min_iter = min(int(min_iter), self.max_iter)
        self.estimate = TraceEstimate(sum(math.prod(s) for s in self.shapes))

    @property
    def done(self) -> bool:
        return self.estimate.converged or self.estimate.iterations >= self.max_iter

    def step(self, hvp: HVP, like: Tensor) -> float:
        """Draw one vector (``like``: dtype and device), add its ``vᵀHv``, apply the test."""
        v = tuple(rademacher(s, self.generator, like) for s in self.shapes)
        hv = hvp(v)
        sample = float(sum((a * b).sum() for a, b in zip(v, hv, strict=True)))
        estimate = self.estimate
        estimate.samples.append(sample)
        if (
            self.tol > 0
            and estimate.iterations >= self.min_iter
            and relative_standard_error(estimate.samples) <= self.tol
        ):
            estimate.converged = True
        return sample


def hutchinson_trace(
    hvp: HVP,
    shapes: Sequence[Sequence[int]],
    *,
    max_iter: int = MAX_VECTORS,
    tol: float = TOLERANCE,
    min_iter: int = MIN_VECTORS,
    seed: int = 0,
    like: Tensor | None = None,
) -> TraceEstimate:
    """Hutchinson's estimate of ``tr(H)`` for the operator ``hvp`` on vectors of ``shapes``
    (the stopping rule of the module doc). ``like`` gives dtype and device (default float32
    on the CPU); ``seed`` the vectors."""
    _check_settings(max_iter, tol, min_iter)
    like = torch.zeros(()) if like is None else like
    generator = torch.Generator().manual_seed(int(seed))
    running = HutchinsonTrace(
        shapes, max_iter=max_iter, tol=tol, generator=generator, min_iter=min_iter
    )
    while not running.done:
        running.step(hvp, like)
    return running.estimate


def _check_settings(max_iter: int, tol: float, min_iter: int = 1) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if isinstance(min_iter, bool) or not isinstance(min_iter, int) or min_iter < 1:
        raise ValueError(f"min_iter must be a positive integer, got {min_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")


# --- double backward through hard activations ---------------------------------------
def _hardsigmoid(x: Tensor) -> Tensor:
    return (x / 6 + 0.5).clamp(0.0, 1.0)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def grouped_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """``F.conv2d`` (integer padding) as unfold + one batched product over the groups: the
    same values, and a double backward without torch's one convolution per group (a round
    of Hessian-vector products on mbv3-cifar's reference architecture: 1.3–1.5× faster on
    the CPU, ``scripts/bench_hawq.py``, docs/benchmarks.md)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, _, h, w = x.shape
    out_ch, group_ch, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    cols = cols.view(n, groups, group_ch * kh * kw, cols.shape[-1])
    kernel = weight.reshape(groups, out_ch // groups, group_ch * kh * kw)
    out = torch.einsum("ngkl,gok->ngol", cols, kernel)
    out_h = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = out.reshape(n, out_ch, out_h, out_w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


class _TwiceDifferentiable(TorchFunctionMode):
    def __init__(self, grouped_conv: bool) -> None:
        super().__init__()
        self.grouped_conv = grouped_conv

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is F.hardsigmoid or func is F.hardswish:
            x = args[0] if args else kwargs["input"]
            return _hardsigmoid(x) if func is F.hardsigmoid else x * _hardsigmoid(x)
        if func is F.conv2d and self.grouped_conv:
            call = dict(zip(_CONV_ARGS, args, strict=False)) | kwargs
            padding = call.get("padding", 0)
            if (
                call.get("groups", 1) > 1
                and not isinstance(padding, str)
                and call["input"].ndim == 4
            ):
                return grouped_conv2d(**{("x" if k == "input" else k): v for k, v in call.items()})
        return func(*args, **kwargs)


def twice_differentiable(*, grouped_conv: bool = True) -> TorchFunctionMode:
    """A context (``with twice_differentiable(): loss = ...``) in which
    ``F.hardsigmoid`` / ``F.hardswish`` (also through ``nn.Hardswish``) compute
    ``clamp(x/6 + 1/2, 0, 1)`` and ``x·clamp(x/6 + 1/2, 0, 1)``: the same values and first
    derivatives (almost everywhere), out of place, with a double backward; ``F.conv2d`` with
    ``groups > 1`` and integer padding runs as :func:`grouped_conv2d` (``grouped_conv``:
    off, to compare with torch's own). Everything else runs unchanged."""
    return _TwiceDifferentiable(grouped_conv)


# --- per-layer Hessian-vector products of a model ------------------------------------
@dataclass(frozen=True)
class Target:
    """What a Hessian-vector product differentiates twice: one layer's ``"weight"`` or its
    ``"input"`` activations (over all the probe's batches). ``name`` is
    ``"<layer>:weight"`` / ``"<layer>:input"``."""

    layer: str
    kind: str

    @property
    def name(self) -> str:
        return f"{self.layer}:{self.kind}"


class HessianProbe:
    """Hessian-vector products of a model's mean loss over fixed batches, per layer.

    The loss is ``L̄ = Σ_k (n_k/N)·CE(model(x_k), y_k)`` (the batches' mean cross-entropy),
    the model in eval mode (BN running statistics, as PyHessian does). The forward passes
    and the gradient graph are built once here; each :meth:`hvp` is one more backward pass
    through it, restricted to one target.

    Targets: every layer's weight; with ``inputs``, also its input activations (the tensor
    the layer's forward receives, over all batches: the Hessian is then block-diagonal in
    the batches; a layer fed by the images themselves gets them as a leaf). ``charge(n)``
    is called with ``N`` images before the forward passes and before each product (a
    Hessian-vector product costs about a training step per image).

    Args:
        model: the model; ``layers`` are module names in it (each must have a ``weight``).
        batches: ``(images, labels)`` pairs, on the model's device.
        inputs: also make the layers' input activations targets.
        charge: called with the number of images each pass processes (the budget).
        grouped_conv: run grouped convolutions as :func:`grouped_conv2d` (default; off:
            torch's own, one convolution per group in the double backward).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        batches: Sequence[tuple[Tensor, Tensor]],
        *,
        inputs: bool = False,
        charge: Callable[[int], None] | None = None,
        grouped_conv: bool = True,
    ) -> None:
        if not layers:
            raise ValueError("HessianProbe needs at least one layer")
        if not batches:
            raise ValueError("HessianProbe needs at least one batch")
        self.layers = list(layers)
        self.images = sum(int(x.shape[0]) for x, _ in batches)
        self._charge = charge or (lambda n: None)
        modules = dict(model.named_modules())
        missing = [n for n in self.layers if not isinstance(modules.get(n), nn.Module)]
        if missing:
            raise ValueError(f"HessianProbe: {missing[0]!r} is not a module of the model")
        self.weights: dict[str, Tensor] = {}
        for name in self.layers:
            weight = getattr(modules[name], "weight", None)
            if not isinstance(weight, Tensor) or not weight.requires_grad:
                raise ValueError(f"HessianProbe: layer {name!r} has no trainable weight")
            self.weights[name] = weight
        self.targets = [Target(n, "weight") for n in self.layers]
        if inputs:
            self.targets += [Target(n, "input") for n in self.layers]
        self.layer_inputs: dict[str, list[Tensor]] = {n: [] for n in self.layers}
        self._charge(self.images)
        self._build(model, modules, batches, inputs, grouped_conv)

    def _build(
        self,
        model: nn.Module,
        modules: Mapping[str, nn.Module],
        batches: Sequence[tuple[Tensor, Tensor]],
        inputs: bool,
        grouped_conv: bool,
    ) -> None:
        """The forward passes (recording the layers' inputs) and the gradient graph."""
        seen: dict[str, list[Tensor]] = {n: [] for n in self.layers}

        def recorder(name: str) -> Callable[..., tuple | None]:
            def record(module: nn.Module, args: tuple) -> tuple | None:
                x = args[0]
                if inputs and not x.requires_grad:  # fed by the data: make it a leaf
                    x = x.detach().requires_grad_(True)
                    seen[name].append(x)
                    return (x, *args[1:])
                seen[name].append(x)
                return None

            return record

        handles = [modules[n].register_forward_pre_hook(recorder(n)) for n in self.layers]
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad(), twice_differentiable(grouped_conv=grouped_conv):
                loss = sum(
                    F.cross_entropy(model(x), y) * (x.shape[0] / self.images) for x, y in batches
                )
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        bad = [n for n, got in seen.items() if len(got) != len(batches)]
        if bad:
            raise RuntimeError(
                f"HessianProbe: layer {bad[0]!r} ran {len(seen[bad[0]])} times for "
                f"{len(batches)} batches (one call per forward expected)"
            )
        self.loss = float(loss.detach())
        wrt: list[Tensor] = [self.weights[n] for n in self.layers]
        if inputs:
            wrt += [t for n in self.layers for t in seen[n]]
        with torch.enable_grad():
            grads = torch.autograd.grad(loss, wrt, create_graph=True, allow_unused=True)
        self._grads: dict[Target, tuple[Tensor, ...]] = {}
        self._wrt: dict[Target, tuple[Tensor, ...]] = {}
        for i, name in enumerate(self.layers):
            self._set(Target(name, "weight"), (wrt[i],), (grads[i],))
        if inputs:
            k, offset = len(batches), len(self.layers)
            for i, name in enumerate(self.layers):
                span = slice(offset + i * k, offset + (i + 1) * k)
                self._set(Target(name, "input"), tuple(wrt[span]), tuple(grads[span]))
        self.layer_inputs = {n: [t.detach() for t in seen[n]] for n in self.layers}

    def _set(self, target: Target, wrt: tuple[Tensor, ...], grads: tuple[Tensor, ...]) -> None:
        if any(g is None or not g.requires_grad for g in grads):
            raise RuntimeError(f"HessianProbe: the loss has no second derivative in {target.name}")
        self._wrt[target], self._grads[target] = wrt, grads

    def shapes(self, target: Target) -> list[tuple[int, ...]]:
        """The shapes of ``target``'s tensors (one for a weight, one per batch for inputs)."""
        return [tuple(t.shape) for t in self._wrt[target]]

    def numel(self, target: Target) -> int:
        return sum(t.numel() for t in self._wrt[target])

    def like(self) -> Tensor:
        """A tensor with the probe's dtype and device."""
        return next(iter(self.weights.values()))

    def hvp(self, target: Target, vector: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """``H v`` for ``target`` (``vector``: tensors of :meth:`shapes`); charges ``N``
        images. The graph is kept for the next product."""
        self._charge(self.images)
        with torch.enable_grad():
            out = torch.autograd.grad(
                self._grads[target], self._wrt[target], grad_outputs=vector, retain_graph=True
            )
        return tuple(o.detach() for o in out)


def hutchinson_traces(
    probe: HessianProbe,
    *,
    max_iter: int = MAX_VECTORS,
    tol: float = TOLERANCE,
    min_iter: int = MIN_VECTORS,
    seed: int = 0,
    on_round: Callable[[int, Mapping[str, TraceEstimate]], None] | None = None,
) -> dict[str, TraceEstimate]:
    """Hutchinson estimates of every target of ``probe`` (by :attr:`Target.name`).

    Runs in rounds: each round draws one vector for every target not yet done (converged or
    at ``max_iter``), then calls ``on_round(round, estimates)`` (rounds count from 1). Target
    ``i`` draws from its own generator seeded ``(seed, i)``, so its estimate is the one a
    sequential loop would give. A budget charge that raises stops the loop there.
    """
    _check_settings(max_iter, tol, min_iter)
    like = probe.like()
    running = {}
    for i, target in enumerate(probe.targets):
        generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
        shapes = probe.shapes(target)
        running[target] = HutchinsonTrace(
            shapes, max_iter=max_iter, tol=tol, generator=generator, min_iter=min_iter
        )
    estimates = {t.name: r.estimate for t, r in running.items()}
    round_ = 0
    while not all(r.done for r in running.values()):
        round_ += 1
        for target, trace in running.items():
            if not trace.done:
                trace.step(lambda v, t=target: probe.hvp(t, v), like)
        if on_round is not None:
            on_round(round_, estimates)
    return estimates
