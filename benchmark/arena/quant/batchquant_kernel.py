"""A fused CPU kernel for BatchQuant's fake quantization: one pass forward, one backward.

Built and loaded by :class:`benchmark.arena.quant.cpu_kernel.CpuKernel` (plain C++ compiled
on first use, called through ``ctypes``, OpenMP threads as torch's). The float32 arithmetic
is that of :class:`benchmark.arena.quant.batchquant._BatchQuantFunction`, operation by
operation and compiled without floating-point contraction (no FMA), so both give the same
bits:

- forward, per element, with ``a = α/s``, ``shift = z + β``, ``r = s/α`` (float32 scalars):
  ``u = x·a``; ``u = u + shift``; ``c = clamp(u, qmin, qmax)``; ``inside = (u == c)``;
  ``out = (nearbyint(c) − shift)·r``; for the backward pass ``d = (inside ? x : 0) − out``
  (float32) and ``inside`` (one byte);
- backward: ``grad_x = inside ? grad : 0``; ``Σ grad·d`` (α's sum) and ``Σ_outside grad``
  (β's sum), accumulated in float64.

Only CPU float32 tensors are handled; :mod:`benchmark.arena.quant.batchquant` decides when to
use it (``MPQBENCH_LSQ_KERNEL=python`` turns both kernels off).
"""

from __future__ import annotations

import ctypes
import logging

import torch
from torch import Tensor

from benchmark.arena.quant.cpu_kernel import GRAIN_SIZE, PARALLEL_CHUNKS, CpuKernel

log = logging.getLogger(__name__)

EXTENSION_NAME = "mpqbench_batchquant_cpu"

_CPP_SOURCE = r"""
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

#if defined(__x86_64__)
#define BQ_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define BQ_CLONES
#endif

constexpr int kLanes = 8;

BQ_CLONES
void forward_chunk(const float* __restrict x, float* __restrict out, float* __restrict d,
                   uint8_t* __restrict inside, int64_t n, float a, float shift, float r,
                   float qmin, float qmax) {
  if (d == nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      float u = x[i] * a;
      u = u + shift;
      const float c = u < qmin ? qmin : (u > qmax ? qmax : u);
      out[i] = (std::nearbyint(c) - shift) * r;
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    float u = x[i] * a;
    u = u + shift;
    const float c = u < qmin ? qmin : (u > qmax ? qmax : u);
    const float o = (std::nearbyint(c) - shift) * r;
    const bool in = (u == c);
    out[i] = o;
    inside[i] = in ? 1 : 0;
    d[i] = (in ? x[i] : 0.0f) - o;
  }
}

// grad_x (nullable); sums[0] += sum(grad * d) when want_alpha, sums[1] += outside grad.
BQ_CLONES
void backward_chunk(const float* __restrict g, const float* __restrict d,
                    const uint8_t* __restrict inside, float* __restrict gx, int64_t n,
                    bool want_alpha, double* sums) {
  double acc_a[kLanes] = {0.0};
  double acc_b[kLanes] = {0.0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float gi = g[i + j];
      const bool in = inside[i + j] != 0;
      if (gx != nullptr) gx[i + j] = in ? gi : 0.0f;
      if (want_alpha) acc_a[j] += double(gi) * double(d[i + j]);
      acc_b[j] += in ? 0.0 : double(gi);
    }
  }
  for (; i < n; ++i) {
    const float gi = g[i];
    const bool in = inside[i] != 0;
    if (gx != nullptr) gx[i] = in ? gi : 0.0f;
    if (want_alpha) acc_a[0] += double(gi) * double(d[i]);
    acc_b[0] += in ? 0.0 : double(gi);
  }
  for (int j = 0; j < kLanes; ++j) {
    sums[0] += acc_a[j];
    sums[1] += acc_b[j];
  }
}

@PARALLEL_CHUNKS@

}  // namespace

extern "C" {

void mpqbench_bq_forward(const float* x, float* out, float* d, uint8_t* inside, int64_t n,
                         float a, float shift, float r, float qmin, float qmax, int64_t grain,
                         int64_t max_tasks) {
  parallel_chunks(n, grain, max_tasks, [&](int64_t, int64_t begin, int64_t end) {
    forward_chunk(x + begin, out + begin, d == nullptr ? nullptr : d + begin,
                  inside == nullptr ? nullptr : inside + begin, end - begin, a, shift, r,
                  qmin, qmax);
  });
}

void mpqbench_bq_backward(const float* grad, const float* d, const uint8_t* inside,
                          float* grad_x, int64_t n, int want_alpha, double* sums,
                          int64_t grain, int64_t max_tasks) {
  std::vector<double> partial(2 * std::max<int64_t>(1, max_tasks), 0.0);
  parallel_chunks(n, grain, max_tasks, [&](int64_t task, int64_t begin, int64_t end) {
    backward_chunk(grad + begin, d + begin, inside + begin,
                   grad_x == nullptr ? nullptr : grad_x + begin, end - begin, want_alpha != 0,
                   partial.data() + 2 * task);
  });
  sums[0] = sums[1] = 0.0;
  for (size_t t = 0; t < partial.size(); t += 2) {
    sums[0] += partial[t];
    sums[1] += partial[t + 1];
  }
}

}  // extern "C"
"""

_CPP_SOURCE = _CPP_SOURCE.replace("@PARALLEL_CHUNKS@", PARALLEL_CHUNKS)


def _bind(lib: ctypes.CDLL) -> None:
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    lib.mpqbench_bq_forward.argtypes = [ptr, ptr, ptr, ptr, i64, f32, f32, f32, f32, f32, i64, i64]
    lib.mpqbench_bq_forward.restype = None
    lib.mpqbench_bq_backward.argtypes = [ptr, ptr, ptr, ptr, i64, ctypes.c_int, ptr, i64, i64]
    lib.mpqbench_bq_backward.restype = None


KERNEL = CpuKernel(
    EXTENSION_NAME,
    _CPP_SOURCE,
    label="BatchQuant",
    bind=_bind,
    cflags=["-ffp-contract=off"],  # no FMA contraction: the PyTorch path's float32 bits
    logger=log,
)
"""The library (built on first :func:`load`)."""


def load() -> ctypes.CDLL | None:
    """The compiled library, built on the first call; ``None`` if the build failed (logged
    once as a warning, not retried in this process)."""
    return KERNEL.load()


def supports(x: Tensor, *scalars: Tensor) -> bool:
    """Whether the kernel handles these inputs (CPU float32 ``x`` and scalar tensors)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and all(t.device.type == "cpu" and t.numel() == 1 for t in scalars)
    )


def forward(
    lib: ctypes.CDLL, x: Tensor, a: float, shift: float, r: float, qmin: int, qmax: int,
    save: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:  # fmt: skip
    """``(out, d, inside)``: the fake-quantized ``x`` and, when ``save``, what
    :func:`backward` needs (``d`` float32, ``inside`` uint8, ``x``'s memory order)."""
    out = torch.empty_like(x)
    if out.stride() != x.stride():
        x = x.contiguous()
        out = torch.empty_like(x)
    d = torch.empty_like(x) if save else None
    inside = torch.empty_like(x, dtype=torch.uint8) if save else None
    n = x.numel()
    if n:
        lib.mpqbench_bq_forward(
            x.data_ptr(),
            out.data_ptr(),
            None if d is None else d.data_ptr(),
            None if inside is None else inside.data_ptr(),
            n,
            a,
            shift,
            r,
            float(qmin),
            float(qmax),
            GRAIN_SIZE,
            torch.get_num_threads(),
        )
    return out, d, inside


def backward(
    lib: ctypes.CDLL, grad: Tensor, d: Tensor, inside: Tensor, want_grad_x: bool,
    want_alpha: bool,
) -> tuple[Tensor | None, float, float]:  # fmt: skip
    """``(grad_x, Σ grad·d, Σ_outside grad)`` (sums in float64)."""
    if grad.dtype != torch.float32 or grad.stride() != d.stride():
        grad = torch.empty_like(d).copy_(grad)
    grad_x = torch.empty_like(d) if want_grad_x else None
    sums = (ctypes.c_double * 2)(0.0, 0.0)
    n = d.numel()
    if n:
        lib.mpqbench_bq_backward(
            grad.data_ptr(),
            d.data_ptr(),
            inside.data_ptr(),
            None if grad_x is None else grad_x.data_ptr(),
            n,
            int(want_alpha),
            sums,
            GRAIN_SIZE,
            torch.get_num_threads(),
        )
    return grad_x, float(sums[0]), float(sums[1])
