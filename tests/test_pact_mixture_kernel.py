"""The fused C++ PACT mixture kernel gives what the PyTorch path gives, and falls back cleanly.

The PyTorch path of ``mix(PACTQuantizer, x, bits, probs)`` is one PACT autograd function per
bit-width, each output multiplied by its probability and summed in list order. The kernel
does the same float32 operations in the same order, so:

- the forward values are bit-identical (``torch.equal``);
- ``grad_x`` is bit-identical too: autograd runs the branches' backward nodes last-created
  first and accumulates their gradients to ``x`` in that order,
  ``((g_(k−1) + g_(k−2)) + …) + g_0`` with ``g_j = grad·p_j`` masked outside term j's clip
  range, and the kernel sums them in that order;
- the gradients of ``α`` and of the probabilities are sums over all elements (float32
  pairwise in torch, float64 in the kernel, and ``p_j`` applied after the sum): compared to
  a tolerance, and the kernel's probability gradient to a float64 reference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from benchmark.arena.quant import (
    LSQQuantizer,
    PACTConfig,
    PACTQuantizer,
    QConv2d,
    QuantConfig,
    pact_mixture_kernel,
)
from benchmark.arena.quant import pact as pact_module
from benchmark.arena.quant.cpu_kernel import CpuKernel
from benchmark.arena.quant.dorefa import DoReFaConfig
from benchmark.arena.quant.mixture import mix
from benchmark.arena.quant.pact import KERNEL_ENV, pact_mixture_path

PYTHON_NODE = "AddBackward0"  # the PyTorch path's output: the last "+" of the sum
FUSED_NODE = "_PACTMixtureFunctionBackward"
BIT_LISTS = [(2, 3, 4, 8), (2, 4), (8, 32, 2, 4), (4, 32)]
BIT_IDS = ["2-3-4-8", "2-4", "8-fp-2-4", "4-fp"]


@pytest.fixture(scope="module", autouse=True)
def kernel() -> None:
    if pact_mixture_kernel.load() is None:
        pytest.skip(f"PACT mixture kernel could not be built: {pact_mixture_kernel.KERNEL.error}")


def make_quantizer(signed: bool | None, per_bit: bool, alpha: Sequence[float] | None = None):
    q = PACTQuantizer(signed=signed, per_bit=per_bit)
    if alpha is not None:  # preset clips: no data-driven initialisation
        with torch.no_grad():
            q.alpha.copy_(torch.tensor(alpha[: q.num_slots]))
        q.initialized.fill_(True)
    return q


def clone_quantizer(q: PACTQuantizer) -> PACTQuantizer:
    copy = PACTQuantizer(signed=None, per_bit=q.per_bit, config=q.config)
    copy.load_state_dict(q.state_dict())
    copy.alpha.requires_grad_(q.alpha.requires_grad)
    return copy


def one_call(
    path: str,
    q: PACTQuantizer,
    x: Tensor,
    logits: Tensor,
    bits: Sequence[int],
    upstream: Tensor | None,
    monkeypatch: pytest.MonkeyPatch,
    probs_dtype: torch.dtype = torch.float32,
) -> dict:
    """Output, gradients and the quantizer's state after one call through ``path``, on
    copies of ``x``, ``logits`` and ``q``."""
    monkeypatch.setenv(KERNEL_ENV, "python" if path == "python" else "auto")
    q = clone_quantizer(q)
    x = x.detach().clone().requires_grad_(x.requires_grad)
    logits = logits.detach().clone().requires_grad_(logits.requires_grad)
    out = mix(q, x, bits, logits.to(probs_dtype).softmax(0))
    node = type(out.grad_fn).__name__ if out.grad_fn is not None else "no-grad"
    if upstream is not None:
        out.backward(upstream)
    return {
        "out": out.detach(),
        "grad_x": x.grad,
        "grad_logits": logits.grad,
        "grad_alpha": q.alpha.grad,
        "node": node,
        "alpha": q.alpha.detach().clone(),
        "initialized": q.initialized.clone(),
        "signed": q.signed,
    }


def close(actual: Tensor | None, expected: Tensor | None) -> None:
    """Equal up to the order of a float sum over many elements (relative to the largest)."""
    assert (actual is None) == (expected is None)
    if expected is None:
        return
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=2e-5 * scale)


def compare(
    q: PACTQuantizer,
    x: Tensor,
    logits: Tensor,
    bits: Sequence[int],
    monkeypatch: pytest.MonkeyPatch,
    upstream: Tensor | None = None,
    probs_dtype: torch.dtype = torch.float32,
) -> tuple[dict, dict]:
    """Both paths: bit-identical output and grad_x, close α / logit gradients, equal state."""
    if upstream is None and (x.requires_grad or logits.requires_grad or q.alpha.requires_grad):
        upstream = torch.randn(x.shape)
    py = one_call("python", q, x, logits, bits, upstream, monkeypatch, probs_dtype)
    fu = one_call("fused", q, x, logits, bits, upstream, monkeypatch, probs_dtype)
    assert py["node"] in (PYTHON_NODE, "no-grad"), py["node"]
    assert fu["node"] in (FUSED_NODE, "no-grad"), fu["node"]
    assert torch.equal(fu["out"], py["out"])
    assert fu["out"].stride() == py["out"].stride() or not x.is_contiguous()
    assert (fu["grad_x"] is None) == (py["grad_x"] is None)
    if fu["grad_x"] is not None:
        assert torch.equal(fu["grad_x"], py["grad_x"])
    close(fu["grad_logits"], py["grad_logits"])
    close(fu["grad_alpha"], py["grad_alpha"])
    # the lazy initialisation and the signedness are decided as in the PyTorch path
    assert torch.equal(fu["alpha"], py["alpha"])
    assert torch.equal(fu["initialized"], py["initialized"])
    assert fu["signed"] == py["signed"]
    return py, fu


# --------------------------------------------------------------------------- equality


@pytest.mark.parametrize("per_bit", [True, False], ids=["per-bit", "shared"])
@pytest.mark.parametrize("signed", [False, True, None], ids=["unsigned", "signed", "auto"])
@pytest.mark.parametrize("bits", BIT_LISTS, ids=BIT_IDS)
def test_fused_equals_python_on_random_data(
    bits: tuple[int, ...], signed: bool | None, per_bit: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fresh quantizers (α set from the data on first use, the sign decided from it), more
    than one thread's chunk of elements and a length that is not a multiple of 8."""
    torch.manual_seed(0)
    x = torch.randn(2 * pact_mixture_kernel.GRAIN_SIZE + 13) * 2
    if signed is False:
        x = x.relu()
    x.requires_grad_()
    logits = torch.randn(len(bits), requires_grad=True)
    q = make_quantizer(signed, per_bit)
    py, fu = compare(q, x, logits, bits, monkeypatch)
    assert all(bool(py["initialized"][q.slot(b)]) for b in bits if b < 32)
    assert float(fu["grad_logits"].abs().sum()) > 0 and float(fu["grad_alpha"].abs().sum()) > 0


def edge_values(grids: Sequence[tuple[int, int]], steps: Sequence[float]) -> Tensor:
    """For every term's grid and step: each grid point, each tie ``(k + 0.5)·step``, the
    clip bounds ``qn·step`` / ``qp·step`` and ``α`` themselves and the floats next to them,
    exactly 0 (both signs), beyond the range; plus random values."""
    parts = [torch.tensor([0.0, -0.0, 1e6, -1e6, 1e-30, -1e-30])]
    for (qn, qp), step in zip(grids, steps, strict=True):
        k = torch.arange(qn, qp + 1, dtype=torch.float32)
        bounds = torch.tensor([qn * step, qp * step, max(-qn, qp) * step], dtype=torch.float32)
        parts += [
            k * step,
            (k + 0.5) * step,
            (k - 0.5) * step,
            bounds,
            -bounds,
            torch.nextafter(bounds, torch.full_like(bounds, math.inf)),
            torch.nextafter(bounds, torch.full_like(bounds, -math.inf)),
            torch.tensor([(qn - 3) * step, (qp + 3) * step]),
        ]
    parts.append(torch.empty(3001).uniform_(-3.0, 3.0))
    return torch.cat(parts)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("bits", BIT_LISTS, ids=BIT_IDS)
def test_fused_equals_python_on_edges_and_ties(
    bits: tuple[int, ...], signed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """α a power of two (the step exact for signed grids, so the ties are exact ties) and
    an arbitrary one, per bit-width."""
    torch.manual_seed(1)
    for alphas in ([1.0, 2.0, 0.5, 4.0], [0.73, 1.9, 0.41, 2.6]):
        q = make_quantizer(signed, per_bit=True, alpha=alphas)
        quantized = [b for b in bits if b < 32]
        grids = [q.grid(b) for b in quantized]
        steps = [
            float(pact_module._step(q.alpha.detach()[q.slot(b)], max(-g[0], g[1])))
            for b, g in zip(quantized, grids, strict=True)
        ]
        x = edge_values(grids, steps).requires_grad_()
        logits = torch.randn(len(bits), requires_grad=True)
        compare(q, x, logits, bits, monkeypatch)
    # the exact ties of a power-of-two step round half to even (one-hot on the first term)
    if signed:
        q = make_quantizer(signed, per_bit=True, alpha=[1.0, 2.0, 0.5, 4.0])
        qn, qp = q.grid(bits[0])
        step = float(pact_module._step(q.alpha.detach()[q.slot(bits[0])], -qn))
        ties = (torch.arange(qn, qp) + 0.5) * step  # every tie inside the grid
        one_hot = torch.full((len(bits),), -1e4)  # softmax: exactly (1, 0, 0, ...)
        one_hot[0] = 0.0
        single = one_call("fused", q, ties, one_hot, bits, None, monkeypatch)
        assert torch.equal(single["out"], torch.round(ties / step) * step)
        assert bool((torch.round(ties / step) % 2 == 0).all())


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_kernel_steps_are_the_pytorch_paths(signed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The steps handed to the kernel (computed for all terms at once) are ``_step``'s
    float32 values for each slot, bit for bit."""
    monkeypatch.setenv(KERNEL_ENV, "auto")
    captured = []
    create = pact_mixture_kernel.Terms.create
    monkeypatch.setattr(
        pact_mixture_kernel.Terms, "create", lambda *args: captured.append(args) or create(*args)
    )
    bits = (2, 3, 32, 4, 8)
    generator = torch.Generator().manual_seed(4)
    for _ in range(20):
        alphas = (torch.rand(4, generator=generator) * 10 - 5).tolist()
        q = make_quantizer(signed, per_bit=True, alpha=alphas)
        mix(q, torch.randn(16), bits, torch.ones(len(bits)) / len(bits))
        steps = captured[-1][0]
        for j, b in enumerate(bits):
            if b >= 32:
                assert steps[j] == 0.0
                continue
            slot = q.slot(b)
            expected = pact_module._step(
                q.alpha.detach()[slot : slot + 1], max(-q.grid(b)[0], q.grid(b)[1])
            )
            assert steps[j] == float(expected), (b, alphas)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_nan_and_inf_inputs(signed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN stays NaN (and passes ``grad·p`` to x, as the PyTorch path's masks do); ±inf
    are clipped."""
    x = torch.tensor([math.nan, math.inf, -math.inf, 0.3, 100.0, -0.2], requires_grad=True)
    logits = torch.zeros(4, requires_grad=True)
    q = make_quantizer(signed, per_bit=True, alpha=[1.0, 1.5, 2.0, 3.0])
    upstream = torch.ones(6)
    bits = (2, 3, 32, 8)
    py = one_call("python", q, x, logits, bits, upstream, monkeypatch)
    fu = one_call("fused", q, x, logits, bits, upstream, monkeypatch)
    assert fu["node"] == FUSED_NODE
    torch.testing.assert_close(fu["out"], py["out"], equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(fu["grad_x"], py["grad_x"], equal_nan=True, rtol=0, atol=0)
    assert bool(torch.isnan(fu["grad_logits"]).all()) == bool(torch.isnan(py["grad_logits"]).all())


def test_probability_gradient_matches_float64_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """``∂out/∂p_j = Σ grad·Q_j(x)``: the kernel's float64 sum against one from the PyTorch
    path's float32 ``Q_j(x)``; α's against PACT's formula in float64."""
    torch.manual_seed(2)
    bits = (2, 3, 32, 8)
    x = (torch.randn(4, 8, 33, 17) * 1.5).requires_grad_()
    q = make_quantizer(True, per_bit=True, alpha=[-0.9, 1.3, 2.1, 0.7])  # a negative α: sign
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
    upstream = torch.randn(x.shape)
    monkeypatch.setenv(KERNEL_ENV, "auto")
    out = mix(q, x, bits, probs)
    assert type(out.grad_fn).__name__ == FUSED_NODE
    out.backward(upstream)
    g = upstream.double()
    alpha_ref = torch.zeros(4, dtype=torch.float64)
    for j, b in enumerate(bits):
        with torch.no_grad():
            qx = q(x, b).detach()  # 32 bits: x itself
        assert float(probs.grad[j]) == pytest.approx(float((g * qx.double()).sum()), rel=1e-6)
        if b < 32:
            qn, qp = q.grid(b)
            levels = max(-qn, qp)
            a = float(q.alpha.detach()[q.slot(b)])
            step = pact_module._step(q.alpha.detach()[q.slot(b) : q.slot(b) + 1], levels)
            above, below = x.detach() > qp * step, x.detach() < qn * step
            total = (g[above].sum() * qp + g[below].sum() * qn) / levels
            alpha_ref[q.slot(b)] += float(probs.detach()[j]) * float(total) * math.copysign(1.0, a)
    torch.testing.assert_close(q.alpha.grad.double(), alpha_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda t: t.transpose(1, 3),  # dense, another dimension order
        lambda t: t.to(memory_format=torch.channels_last),
        lambda t: t[:, ::2, 1:],  # gaps
        lambda t: t[:1].expand(3, -1, -1, -1),  # overlapping
    ],
    ids=["transposed", "channels_last", "sliced", "expanded"],
)
def test_non_contiguous_inputs(make, monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch.randn(3, 6, 5, 7) * 2
    x = make(base)
    assert not x.is_contiguous()
    x.requires_grad_()
    logits = torch.randn(3, requires_grad=True)
    q = make_quantizer(True, per_bit=True, alpha=[1.0, 1.5, 2.0, 3.0])
    py, fu = compare(q, x, logits, (2, 4, 8), monkeypatch)
    assert fu["out"].shape == x.shape and fu["grad_x"].shape == x.shape
    if x.stride() == torch.empty_like(x).stride():  # dense: the output keeps x's layout
        assert fu["out"].stride() == x.stride() and fu["grad_x"].stride() == x.stride()


def test_non_contiguous_and_expanded_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    x = (torch.randn(2, 3, 4, 5) * 2).requires_grad_()
    logits = torch.randn(4, requires_grad=True)
    q = make_quantizer(False, per_bit=False, alpha=[1.7])
    transposed = torch.randn(5, 4, 3, 2).permute(3, 2, 1, 0)
    compare(q, x, logits, (2, 3, 4, 8), monkeypatch, upstream=transposed)
    compare(q, x, logits, (2, 3, 4, 8), monkeypatch, upstream=torch.ones(()).expand(x.shape))


def test_zero_size_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.empty(0, 3, requires_grad=True)
    logits = torch.randn(2, requires_grad=True)
    q = make_quantizer(True, per_bit=True, alpha=[1.0, 1.0, 1.0, 1.0])
    py, fu = compare(q, x, logits, (2, 4), monkeypatch)
    assert fu["out"].shape == (0, 3) and fu["grad_x"].shape == (0, 3)
    assert float(fu["grad_logits"].abs().sum()) == 0.0 and float(fu["grad_alpha"].sum()) == 0.0


@pytest.mark.parametrize("which", ["x", "probs", "alpha", "none"])
def test_requires_grad_on_one_input(which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x = (torch.randn(7, 11) * 2).requires_grad_(which == "x")
    logits = torch.randn(4).requires_grad_(which == "probs")
    q = make_quantizer(True, per_bit=True, alpha=[1.0, 1.5, 2.0, 3.0])
    q.alpha.requires_grad_(which == "alpha")
    py, fu = compare(q, x, logits, (2, 3, 4, 8), monkeypatch)
    assert (fu["grad_x"] is not None) == (which == "x")
    assert (fu["grad_logits"] is not None) == (which == "probs")
    assert (fu["grad_alpha"] is not None) == (which == "alpha")
    assert (fu["node"] == "no-grad") == (which == "none")


def test_float64_probabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    """Float64 mixing weights are used as float32 (x's dtype), as ``mix`` does; their
    gradient comes back as float64."""
    logits = torch.randn(3, dtype=torch.float64, requires_grad=True)
    q = make_quantizer(False, per_bit=True)
    x = (torch.randn(6, 50) * 2).relu().requires_grad_()
    py, fu = compare(q, x, logits, (2, 4, 32), monkeypatch, probs_dtype=torch.float64)
    assert fu["out"].dtype == torch.float32 and fu["grad_logits"].dtype == torch.float64


def test_no_grad_mode_uses_the_kernel_forward_only(monkeypatch: pytest.MonkeyPatch) -> None:
    x = (torch.randn(5, 9) * 2).requires_grad_()
    probs = torch.tensor([0.2, 0.3, 0.5], requires_grad=True)
    q = make_quantizer(True, per_bit=True, alpha=[1.0, 1.5, 2.0, 3.0])
    monkeypatch.setenv(KERNEL_ENV, "python")
    expected = mix(q, x, (2, 4, 8), probs)
    monkeypatch.setenv(KERNEL_ENV, "auto")
    calls = []
    monkeypatch.setattr(
        pact_module._PACTMixtureFunction, "apply", lambda *a: calls.append(a) or None
    )
    with torch.no_grad():
        out = mix(q, x, (2, 4, 8), probs)
    assert not calls  # no autograd function: the forward kernel alone
    assert out.grad_fn is None and not out.requires_grad
    assert torch.equal(out, expected.detach())


def test_one_hot_mixture_equals_the_single_quantizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_ENV, "auto")
    x = torch.randn(4, 33) * 2
    q = make_quantizer(True, per_bit=True, alpha=[1.0, 1.5, 2.0, 3.0])
    bits = (2, 3, 32, 8)
    for k, b in enumerate(bits):
        probs = torch.nn.functional.one_hot(torch.tensor(k), len(bits)).float()
        assert torch.equal(mix(q, x, bits, probs), q(x, b))


def test_bad_bit_width_raises_in_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    q = make_quantizer(True, per_bit=True, alpha=[1.0, 1.5, 2.0, 3.0])
    for path in ("python", "auto"):
        monkeypatch.setenv(KERNEL_ENV, path)
        with pytest.raises(ValueError, match="5-bit"):
            mix(q, torch.randn(10), (2, 5), torch.ones(2) / 2)


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("a_bits", [(2, 3, 4, 8), (2, 4, 32)], ids=["2-3-4-8", "2-4-fp"])
def test_qconv2d_with_bit_mixture_same_through_both_paths(
    a_bits: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole DNAS layer (DoReFa weights, PACT activations, per-bit state) under a
    ``BitMixture``: the same output and gradients (weight, input, clips, both logits)."""
    quant = QuantConfig(
        weight=DoReFaConfig(), act=PACTConfig(), per_bit_weight=True, per_bit_act=True
    )
    torch.manual_seed(0)
    x0 = torch.randn(4, 6, 11, 11).relu()
    w_bits = (2, 4, 8)
    results = {}
    for path in ("python", "auto"):
        monkeypatch.setenv(KERNEL_ENV, path)
        torch.manual_seed(0)
        layer = QConv2d(6, 8, 3, padding=1, bias=True, quant=quant)  # sign from the data
        x = x0.clone().requires_grad_()
        w_logits = torch.linspace(-1, 1, len(w_bits)).requires_grad_()
        a_logits = torch.linspace(1, -0.5, len(a_bits)).requires_grad_()
        layer.set_bit_mixture(w_bits, w_logits.softmax(0), a_bits, a_logits.softmax(0))
        out = layer(x)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(5)))
        layer.clear_bit_mixture()
        results[path] = (
            out.detach(),
            x.grad,
            layer.weight.grad,
            layer.act_quantizer.alpha.grad,
            w_logits.grad,
            a_logits.grad,
            layer.act_quantizer.alpha.detach().clone(),
            layer.act_quantizer.signed,
        )
    py, fu = results["python"], results["auto"]
    # the convolution sees bit-identical inputs, so its output is the same bits
    assert torch.equal(fu[0], py[0])
    assert torch.equal(fu[1], py[1])  # grad_x: the conv's input gradient, then the kernel's
    assert torch.equal(fu[2], py[2])  # the weight's: same quantized input, same upstream
    close(fu[3], py[3])
    close(fu[4], py[4])
    close(fu[5], py[5])
    assert torch.equal(fu[6], py[6])
    assert fu[7] is False and py[7] is False  # decided from the (post-ReLU) data


def test_other_quantizers_and_fp_only_mixtures_use_the_sum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KERNEL_ENV, "auto")
    x = torch.randn(5, 7, requires_grad=True)
    probs = torch.tensor([0.3, 0.7], requires_grad=True)
    lsq = LSQQuantizer(signed=True)
    assert not hasattr(lsq, "fused_mix")
    assert type(mix(lsq, x, (2, 4), probs).grad_fn).__name__ == PYTHON_NODE
    pact = make_quantizer(None, per_bit=True)
    assert pact.fused_mix(x, (32,), probs[:1]) is None
    out = mix(pact, x, (32,), torch.ones(1))
    assert torch.equal(out, x * 1.0) and pact.signed is None  # nothing decided from x
    assert pact.fused_mix(x, (2, 4), torch.ones(3)) is None  # not one weight per bit-width


# --------------------------------------------------------------------------- fallback


def test_env_var_forces_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(10, requires_grad=True)
    probs = torch.tensor([0.5, 0.5], requires_grad=True)
    q = make_quantizer(True, per_bit=True, alpha=[1.0, 1.5, 2.0, 3.0])
    monkeypatch.setenv(KERNEL_ENV, "python")
    assert pact_mixture_path(x, q.alpha) == "python"
    assert q.fused_mix(x, (2, 4), probs) is None
    assert type(mix(q, x, (2, 4), probs).grad_fn).__name__ == PYTHON_NODE
    monkeypatch.setenv(KERNEL_ENV, " Python ")
    assert pact_mixture_path(x, q.alpha) == "python"
    monkeypatch.setenv(KERNEL_ENV, "auto")
    assert pact_mixture_path(x, q.alpha) == "fused"
    assert type(mix(q, x, (2, 4), probs).grad_fn).__name__ == FUSED_NODE
    monkeypatch.delenv(KERNEL_ENV)
    assert pact_mixture_path(x, q.alpha) == "fused"


def test_other_dtypes_use_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    x = torch.randn(10, dtype=torch.float64, requires_grad=True)
    q = make_quantizer(True, per_bit=True, alpha=[1.0, 1.5, 2.0, 3.0])
    assert pact_mixture_path(x, q.alpha) == "python"
    out = mix(q, x, (2, 4), torch.tensor([0.5, 0.5], requires_grad=True))
    assert out.dtype == torch.float64 and type(out.grad_fn).__name__ == PYTHON_NODE
    assert pact_mixture_path(x.float(), q.alpha.double()) == "python"  # a float64 clip


def test_unsupported_device_uses_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA tensor (simulated: ``supports`` says no) takes the PyTorch path, with the
    same state updates."""
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    seen = []

    def no_support(x: Tensor, alpha: Tensor) -> bool:
        seen.append(x.device.type)
        return False

    monkeypatch.setattr(pact_mixture_kernel, "supports", no_support)
    x = torch.randn(3, 20).relu().requires_grad_()
    q = make_quantizer(None, per_bit=True)
    out = mix(q, x, (2, 4, 8), torch.tensor([0.2, 0.3, 0.5], requires_grad=True))
    assert type(out.grad_fn).__name__ == PYTHON_NODE and seen == ["cpu"]
    assert q.signed is False and q.initialized.tolist() == [True, False, True, True]


def test_failed_build_warns_once_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    kernel = CpuKernel("unused", "", label="PACT mixture", bind=print,
                       logger=pact_mixture_kernel.log)  # fmt: skip

    def broken() -> None:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(kernel, "build", broken)
    monkeypatch.setattr(pact_mixture_kernel, "KERNEL", kernel)
    x = torch.randn(10, requires_grad=True)
    probs = torch.tensor([0.5, 0.5], requires_grad=True)
    q = make_quantizer(True, per_bit=True, alpha=[1.0, 1.5, 2.0, 3.0])
    with caplog.at_level(logging.WARNING, logger=pact_mixture_kernel.__name__):
        for _ in range(3):
            out = mix(q, x, (2, 4), probs)
            assert type(out.grad_fn).__name__ == PYTHON_NODE
        assert pact_mixture_path(x, q.alpha) == "python"
    warnings = [r for r in caplog.records if r.name == pact_mixture_kernel.__name__]
    assert len(warnings) == 1 and "no compiler here" in warnings[0].getMessage()
    assert pact_module.pact_mixture_kernel.load() is None
