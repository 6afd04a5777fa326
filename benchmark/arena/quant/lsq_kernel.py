"""A fused CPU kernel for LSQ fake quantization: one pass forward, one pass backward.

Built and loaded by :class:`benchmark.arena.quant.cpu_kernel.CpuKernel` (plain C++ compiled
on first use, called through ``ctypes``, OpenMP threads as torch's).

What the kernel computes (the float32 arithmetic of :class:`benchmark.arena.quant.lsq._LSQFunction`,
operation by operation, so both give the same bits):

- ``s = |step| + 1e-8``, ``v = x·(1/s)``, ``c = clamp(v, Qn, Qp)``, ``out = nearbyint(c)·s``
  (round half to even under the default rounding mode, like ``torch.round``).
- One float32 *code* per element for the backward pass: ``round(c) − c`` inside
  ``[Qn, Qp]`` (a value in ``[−0.5, 0.5]``), ``−inf`` below the range, ``+inf`` above it,
  NaN where ``x`` is NaN.
- Backward: ``grad_x = grad`` where ``|code| ≤ 0.5`` (inside), else ``0``; the step's sum
  ``Σ grad·d`` with ``d = code`` inside, ``Qn``/``Qp`` outside, accumulated in float64.

Only CPU float32 tensors are handled here; :mod:`benchmark.arena.quant.lsq` decides when to use it.
"""

from __future__ import annotations

import ctypes
import logging

import torch
from torch import Tensor

from benchmark.arena.quant.cpu_kernel import (
    GRAIN_SIZE,
    PARALLEL_CHUNKS,
    CpuKernel,
    float32_in_order_of,
    output_like,
)

log = logging.getLogger(__name__)

EXTENSION_NAME = "mpqbench_lsq_cpu"

_CPP_SOURCE = r"""
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

// x86-64: one AVX2 and one baseline copy of each loop, picked when the library is loaded.
#if defined(__x86_64__)
#define LSQ_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LSQ_CLONES
#endif

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int kLanes = 8;  // independent float64 partial sums, so the reduction vectorizes

// x -> out (and the backward code when `code` is not null).
LSQ_CLONES
void forward_chunk(const float* __restrict x, float* __restrict out, float* __restrict code,
                   int64_t n, float s, float inv, float qn, float qp) {
  if (code == nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[i] * inv;
      const float c = v < qn ? qn : (v > qp ? qp : v);  // NaN stays NaN, like torch.clamp
      out[i] = std::nearbyint(c) * s;
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] * inv;
    const float c = v < qn ? qn : (v > qp ? qp : v);
    const float q = std::nearbyint(c);
    out[i] = q * s;
    code[i] = v < qn ? -kInf : (v > qp ? kInf : q - c);
  }
}

inline float step_term(float c, float qn, float qp) {
  // d = dx_hat/ds before the factor sign(s): round(v) - v inside, Qn / Qp outside, NaN for
  // NaN. Exactly one term is not +0; a sum of selects vectorizes, nested selects do not.
  return (std::fabs(c) <= 0.5f ? c : 0.0f) + (c == kInf ? qp : 0.0f) +
         (c == -kInf ? qn : 0.0f) + (c != c ? c : 0.0f);
}

// grad_x (when not null) and, when `want_sum`, the float64 sum of grad * d.
LSQ_CLONES
double backward_chunk(const float* __restrict g, const float* __restrict code,
                      float* __restrict gx, int64_t n, float qn, float qp, bool want_sum) {
  if (!want_sum) {
    for (int64_t i = 0; i < n; ++i) gx[i] = std::fabs(code[i]) <= 0.5f ? g[i] : 0.0f;
    return 0.0;
  }
  double acc[kLanes] = {0.0};
  int64_t i = 0;
  if (gx != nullptr) {
    for (; i + kLanes <= n; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        const float c = code[i + j];
        gx[i + j] = std::fabs(c) <= 0.5f ? g[i + j] : 0.0f;
        acc[j] += double(g[i + j]) * double(step_term(c, qn, qp));
      }
    }
    for (; i < n; ++i) {
      const float c = code[i];
      gx[i] = std::fabs(c) <= 0.5f ? g[i] : 0.0f;
      acc[0] += double(g[i]) * double(step_term(c, qn, qp));
    }
  } else {
    for (; i + kLanes <= n; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        acc[j] += double(g[i + j]) * double(step_term(code[i + j], qn, qp));
      }
    }
    for (; i < n; ++i) acc[0] += double(g[i]) * double(step_term(code[i], qn, qp));
  }
  double total = 0.0;
  for (int j = 0; j < kLanes; ++j) total += acc[j];
  return total;
}

@PARALLEL_CHUNKS@

}  // namespace

extern "C" {

// out = LSQ(x); code (nullable) as described in lsq_kernel.py. step: the raw step parameter.
void mpqbench_lsq_forward(const float* x, float* out, float* code, int64_t n, float step,
                          float qn, float qp, int64_t grain, int64_t max_tasks) {
  const float s = std::fabs(step) + 1e-8f;
  const float inv = 1.0f / s;
  parallel_chunks(n, grain, max_tasks, [&](int64_t, int64_t begin, int64_t end) {
    forward_chunk(x + begin, out + begin, code == nullptr ? nullptr : code + begin, end - begin,
                  s, inv, qn, qp);
  });
}

// grad_x (nullable) from grad and code; returns sum(grad * d) when want_sum (else 0).
double mpqbench_lsq_backward(const float* grad, const float* code, float* grad_x, int64_t n,
                             float qn, float qp, int want_sum, int64_t grain, int64_t max_tasks) {
  std::vector<double> partial(std::max<int64_t>(1, max_tasks), 0.0);
  parallel_chunks(n, grain, max_tasks, [&](int64_t task, int64_t begin, int64_t end) {
    partial[task] = backward_chunk(grad + begin, code + begin,
                                   grad_x == nullptr ? nullptr : grad_x + begin, end - begin,
                                   qn, qp, want_sum != 0);
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // extern "C"
"""

_CPP_SOURCE = _CPP_SOURCE.replace("@PARALLEL_CHUNKS@", PARALLEL_CHUNKS)


def _bind(lib: ctypes.CDLL) -> None:
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    lib.mpqbench_lsq_forward.argtypes = [ptr, ptr, ptr, i64, f32, f32, f32, i64, i64]
    lib.mpqbench_lsq_forward.restype = None
    lib.mpqbench_lsq_backward.argtypes = [ptr, ptr, ptr, i64, f32, f32, ctypes.c_int, i64, i64]
    lib.mpqbench_lsq_backward.restype = ctypes.c_double


KERNEL = CpuKernel(EXTENSION_NAME, _CPP_SOURCE, label="LSQ", bind=_bind, logger=log)
"""The library (built on first :func:`load`). gcc's ``-fno-trapping-math`` lets it
vectorize the selects; results are unchanged (IEEE float32, no fast-math, default
rounding mode)."""


def load() -> ctypes.CDLL | None:
    """The compiled library, built on the first call; ``None`` if the build failed (logged once
    as a warning, not retried in this process)."""
    return KERNEL.load()


def load_seconds() -> float | None:
    """Seconds the first :func:`load` took in this process (build or cache load), if tried."""
    return KERNEL.load_s


def supports(x: Tensor, step: Tensor) -> bool:
    """Whether the kernel handles these inputs (CPU float32 ``x``, 1-element float32 ``step``)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and step.device.type == "cpu"
        and step.dtype == torch.float32
        and step.numel() == 1
    )


def forward(
    lib: ctypes.CDLL, x: Tensor, step: Tensor, qn: int, qp: int, save_code: bool
) -> tuple[Tensor, Tensor | None]:
    """``(out, code)``: fake-quantized ``x`` (same unit and memory order as ``x``) and the
    float32 per-element code for :func:`backward` (``None`` unless ``save_code``)."""
    out, x = output_like(x)
    code = torch.empty_like(x) if save_code else None
    n = x.numel()
    if n:
        lib.mpqbench_lsq_forward(
            x.data_ptr(),
            out.data_ptr(),
            None if code is None else code.data_ptr(),
            n,
            float(step.detach()),
            float(qn),
            float(qp),
            GRAIN_SIZE,
            torch.get_num_threads(),
        )
    return out, code


def backward(
    lib: ctypes.CDLL,
    grad: Tensor,
    code: Tensor,
    qn: int,
    qp: int,
    want_grad_x: bool,
    want_sum: bool,
) -> tuple[Tensor | None, float]:
    """``(grad_x, total)``: the gradient to ``x`` (``None`` unless ``want_grad_x``) and the
    float64 sum ``Σ grad·d`` before the factors ``sign(s)·grad_scale`` (0 unless ``want_sum``)."""
    grad = float32_in_order_of(grad, code)
    grad_x = torch.empty_like(code) if want_grad_x else None
    n = code.numel()
    total = 0.0
    if n and (want_grad_x or want_sum):
        total = lib.mpqbench_lsq_backward(
            grad.data_ptr(),
            code.data_ptr(),
            None if grad_x is None else grad_x.data_ptr(),
            n,
            float(qn),
            float(qp),
            int(want_sum),
            GRAIN_SIZE,
            torch.get_num_threads(),
        )
    return grad_x, total
