"""The fused C++ LSQ kernel gives what the PyTorch implementation gives, and falls back cleanly.

Forward values and ``grad_x`` must be bit-identical (the kernel does the same float32
operations in the same order); the step's gradient is a sum, so only its order differs
(float64 accumulation in the kernel, float32 pairwise in torch): compared to a tolerance.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import Tensor

from benchmark.arena.quant import LSQQuantizer, lsq_kernel
from benchmark.arena.quant import lsq as lsq_module
from benchmark.arena.quant.cpu_kernel import CpuKernel
from benchmark.arena.quant.lsq import KERNEL_ENV, lsq_path, lsq_quantize

BITS = (2, 3, 4, 8)


@pytest.fixture(scope="module", autouse=True)
def kernel() -> None:
    if lsq_kernel.load() is None:
        pytest.skip(f"LSQ kernel could not be built here: {lsq_kernel.KERNEL.error}")


def grid(bits: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def run(
    x: Tensor,
    step: Tensor,
    qn: int,
    qp: int,
    upstream: Tensor | None,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    grad_scale: float = 0.01,
) -> tuple[Tensor, Tensor | None, Tensor | None, str]:
    """Output, grad_x, grad_step of one call on copies of the inputs, through ``path``."""
    monkeypatch.setenv(KERNEL_ENV, "python" if path == "python" else "auto")
    x = x.detach().clone().requires_grad_(x.requires_grad)
    step = step.detach().clone().requires_grad_(step.requires_grad)
    out = lsq_quantize(x, step, qn, qp, grad_scale)
    used = type(out.grad_fn).__name__ if out.grad_fn is not None else "no-grad"
    if upstream is not None:
        out.backward(upstream)
    return out.detach(), x.grad, step.grad, used


def compare(
    x: Tensor,
    step: Tensor,
    qn: int,
    qp: int,
    monkeypatch: pytest.MonkeyPatch,
    upstream: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Run both paths; assert equal output and grad_x, close grad_step; return the fused one."""
    if upstream is None and (x.requires_grad or step.requires_grad):
        upstream = torch.randn(x.shape)
    py = run(x, step, qn, qp, upstream, "python", monkeypatch)
    fu = run(x, step, qn, qp, upstream, "fused", monkeypatch)
    assert py[3] in ("_LSQFunctionBackward", "no-grad")
    assert fu[3] in ("_LSQKernelFunctionBackward", "no-grad")
    assert torch.equal(fu[0], py[0])  # bit for bit (NaN-free inputs here)
    assert fu[0].stride() == py[0].stride() or not x.is_contiguous()
    assert (fu[1] is None) == (py[1] is None)
    if fu[1] is not None:
        assert torch.equal(fu[1], py[1])
    assert (fu[2] is None) == (py[2] is None)
    if fu[2] is not None:
        torch.testing.assert_close(fu[2], py[2], rtol=1e-5, atol=1e-7)
    return fu[:3]


def with_boundaries_and_ties(qn: int, qp: int, n_random: int = 3000) -> Tensor:
    """``v = x/s`` values for ``s = 0.25`` (a power of two: ``x·(1/s)`` is exact): random ones,
    every ``.5`` tie, exactly ``Qn``/``Qp`` and the floats next to them, and beyond the range."""
    ties = torch.arange(qn, qp + 1, dtype=torch.float32) + 0.5
    edges = torch.tensor([float(qn), float(qp)])
    near = torch.cat(
        [
            torch.nextafter(edges, torch.full_like(edges, -math.inf)),
            torch.nextafter(edges, torch.full_like(edges, math.inf)),
        ]
    )
    far = torch.tensor([qn - 3.0, qp + 3.0, qn - 0.5, qp + 0.5, -1e6, 1e6])
    rand = torch.empty(n_random).uniform_(qn - 2.0, qp + 2.0)
    return torch.cat([ties, -ties, edges, near, far, rand, ties[:5]]) * 0.25


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_fused_equals_python_on_edges_and_ties(
    bits: int, signed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    qn, qp = grid(bits, signed)
    x = with_boundaries_and_ties(qn, qp).requires_grad_()
    step = torch.tensor([0.25], requires_grad=True)
    assert float(step.detach().abs() + 1e-8) == 0.25  # the 1e-8 vanishes in float32 at this step
    out, grad_x, grad_step = compare(x, step, qn, qp, monkeypatch)
    v = x.detach() / 0.25
    # round half to even at the ties, the range ends count as inside
    ties = (v - v.floor()) == 0.5
    inside = (v >= qn) & (v <= qp)
    assert bool((ties & inside).sum() >= 5)
    k = out / 0.25
    assert torch.equal(k[ties & inside], torch.round(v[ties & inside]))
    assert bool((k[ties & inside] % 2 == 0).all())
    on_edge = (v == qn) | (v == qp)
    assert bool(on_edge.sum() >= 2) and bool((grad_x[on_edge] != 0).all())
    assert bool((grad_x[~inside] == 0).all())
    assert grad_step is not None and bool(torch.isfinite(grad_step).all())


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_fused_equals_python_random_step(
    bits: int, signed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that is not a power of two (rounded ``x·(1/s)``), a negative one, many threads'
    worth of elements (more than one chunk) and a length that is not a multiple of 8."""
    qn, qp = grid(bits, signed)
    x = (torch.randn(2 * lsq_kernel.GRAIN_SIZE + 13) * 2.0).requires_grad_()
    for value in (1.7 / qp, -0.9 / qp):
        compare(x, torch.tensor([value], requires_grad=True), qn, qp, monkeypatch)


def test_step_gradient_matches_float64_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    qn, qp = grid(4, False)
    x = torch.randn(4, 8, 33, 17).requires_grad_()
    step = torch.tensor([-0.11], requires_grad=True)  # negative: sign(s) = -1
    upstream = torch.randn(x.shape)
    _, _, grad_step = compare(x, step, qn, qp, monkeypatch, upstream)
    s = 0.11 + 1e-8
    v = x.detach().double() / s
    d = torch.where(v < qn, float(qn), torch.where(v > qp, float(qp), v.round() - v))
    expected = -float((upstream.double() * d).sum()) * 0.01
    assert float(grad_step) == pytest.approx(expected, rel=1e-5)


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
    out, grad_x, _ = compare(x, torch.tensor([0.3], requires_grad=True), -8, 7, monkeypatch)
    assert out.shape == x.shape and grad_x.shape == x.shape
    dense = x.stride() == torch.empty_like(x).stride()
    if dense:  # processed in place order: the output keeps the input's memory layout
        assert out.stride() == x.stride() and grad_x.stride() == x.stride()


def test_non_contiguous_and_expanded_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    x = (torch.randn(2, 3, 4, 5) * 2).requires_grad_()
    step = torch.tensor([0.2], requires_grad=True)
    compare(x, step, 0, 15, monkeypatch, upstream=torch.randn(5, 4, 3, 2).permute(3, 2, 1, 0))
    compare(x, step, 0, 15, monkeypatch, upstream=torch.ones(()).expand(x.shape))


def test_zero_size_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.empty(0, 3, requires_grad=True)
    step = torch.tensor([0.5], requires_grad=True)
    out, grad_x, grad_step = compare(x, step, -8, 7, monkeypatch)
    assert out.shape == (0, 3) and grad_x.shape == (0, 3)
    assert float(grad_step) == 0.0


@pytest.mark.parametrize("which", ["x", "step", "none"])
def test_requires_grad_on_one_input(which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x = (torch.randn(7, 11) * 2).requires_grad_(which == "x")
    step = torch.tensor([0.3]).requires_grad_(which == "step")
    out, grad_x, grad_step = compare(x, step, -4, 3, monkeypatch)
    assert (grad_x is not None) == (which == "x")
    assert (grad_step is not None) == (which == "step")


def test_no_grad_mode_uses_the_kernel_forward_only(monkeypatch: pytest.MonkeyPatch) -> None:
    x = (torch.randn(5, 9) * 2).requires_grad_()
    step = torch.tensor([0.3], requires_grad=True)
    monkeypatch.setenv(KERNEL_ENV, "python")
    expected = lsq_quantize(x, step, 0, 15, 0.01)
    monkeypatch.setenv(KERNEL_ENV, "auto")
    with torch.no_grad():
        out = lsq_quantize(x, step, 0, 15, 0.01)
    assert out.grad_fn is None and not out.requires_grad
    assert torch.equal(out, expected.detach())


def test_nan_and_inf_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN stays NaN with no gradient to x (and a NaN step gradient), in both paths."""
    x = torch.tensor([math.nan, math.inf, -math.inf, 0.3, 100.0], requires_grad=True)
    step = torch.tensor([0.1], requires_grad=True)
    upstream = torch.ones(5)
    py = run(x, step, -8, 7, upstream, "python", monkeypatch)
    fu = run(x, step, -8, 7, upstream, "fused", monkeypatch)
    torch.testing.assert_close(fu[0], py[0], equal_nan=True, rtol=0, atol=0)
    assert torch.equal(fu[1], py[1])
    assert bool(torch.isnan(fu[2]).all()) and bool(torch.isnan(py[2]).all())


def test_quantizer_module_uses_fused_path_and_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.relu(torch.randn(4, 8, 6, 6)).requires_grad_()
    results = {}
    for path in ("python", "auto"):
        monkeypatch.setenv(KERNEL_ENV, path)
        torch.manual_seed(0)
        q = LSQQuantizer(signed=False, per_bit=True)
        xi = x.detach().clone().requires_grad_()
        out = q(xi, 3)
        out.backward(torch.ones_like(out))
        results[path] = (out.detach(), xi.grad, q.step.grad, type(out.grad_fn).__name__)
    assert results["auto"][3] == "_LSQKernelFunctionBackward"
    assert results["python"][3] == "_LSQFunctionBackward"
    assert torch.equal(results["auto"][0], results["python"][0])
    assert torch.equal(results["auto"][1], results["python"][1])
    torch.testing.assert_close(results["auto"][2], results["python"][2], rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- fallback


def test_env_var_forces_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    x, step = torch.randn(10, requires_grad=True), torch.tensor([0.2], requires_grad=True)
    monkeypatch.setenv(KERNEL_ENV, "python")
    assert lsq_path(x, step) == "python"
    assert type(lsq_quantize(x, step, -8, 7, 0.1).grad_fn).__name__ == "_LSQFunctionBackward"
    monkeypatch.setenv(KERNEL_ENV, "auto")
    assert lsq_path(x, step) == "fused"
    monkeypatch.delenv(KERNEL_ENV)
    assert lsq_path(x, step) == "fused"


def test_other_dtypes_use_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    x = torch.randn(10, dtype=torch.float64, requires_grad=True)
    step = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    assert lsq_path(x, step) == "python"
    out = lsq_quantize(x, step, -8, 7, 0.1)
    assert out.dtype == torch.float64
    assert type(out.grad_fn).__name__ == "_LSQFunctionBackward"
    assert lsq_path(x.float(), step) == "python"  # float64 step


def test_failed_build_warns_once_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    kernel = CpuKernel("unused", "", label="LSQ", bind=print, logger=lsq_kernel.log)

    def broken() -> None:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(kernel, "build", broken)
    monkeypatch.setattr(lsq_kernel, "KERNEL", kernel)
    x, step = torch.randn(10, requires_grad=True), torch.tensor([0.2], requires_grad=True)
    with caplog.at_level(logging.WARNING, logger=lsq_kernel.__name__):
        for _ in range(3):
            out = lsq_quantize(x, step, -8, 7, 0.1)
            assert type(out.grad_fn).__name__ == "_LSQFunctionBackward"
        assert lsq_path(x, step) == "python"
    warnings = [r for r in caplog.records if r.name == lsq_kernel.__name__]
    assert len(warnings) == 1 and "no compiler here" in warnings[0].getMessage()
    assert lsq_module.lsq_kernel.load() is None


def test_unsupported_device_uses_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA tensor (simulated: ``supports`` says no) takes the PyTorch path: the same
    values, its own autograd node."""
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    x = (torch.randn(6, 10) * 2).requires_grad_()
    step = torch.tensor([0.3], requires_grad=True)
    fused = lsq_quantize(x, step, -8, 7, 0.01)
    seen: list[str] = []

    def no_support(x: Tensor, step: Tensor) -> bool:
        seen.append(x.device.type)
        return False

    monkeypatch.setattr(lsq_kernel, "supports", no_support)
    assert lsq_path(x, step) == "python"
    out = lsq_quantize(x, step, -8, 7, 0.01)
    assert type(out.grad_fn).__name__ == "_LSQFunctionBackward" and seen
    assert torch.equal(out, fused)
