"""A fused CPU kernel for BatchQuant: the batch range in one pass, the fake quantization in
one pass forward and one backward.

Built and loaded by :class:`benchmark.arena.quant.cpu_kernel.CpuKernel` (plain C++ compiled
on first use, called through ``ctypes``, OpenMP threads as torch's). The float32 arithmetic
is that of :class:`benchmark.arena.quant.batchquant._BatchQuantFunction`, operation by
operation and compiled without floating-point contraction (no FMA), so both give the same
bits:

- range: the min and the max of every contiguous (n, c) plane of an N×C×H×W batch in one
  read (torch's ``amin`` and ``amax`` read it twice); NaN where the plane holds one, as
  theirs;
- forward, per element, with ``a = α/s``, ``shift = z + β``, ``r = s/α`` (float32 scalars):
  ``u = x·a``; ``u = u + shift``; ``c = clamp(u, qmin, qmax)``;
  ``out = (nearbyint(c) − shift)·r``. Nothing activation-sized is saved but ``x`` itself;
- backward recomputes ``out`` and ``inside = (u == c)`` from ``x``: ``grad_x = inside ?
  grad : 0``; ``Σ grad·d`` with ``d = (inside ? x : 0) − out`` (α's sum) and
  ``Σ_outside grad`` (β's sum), accumulated in float64.

Only CPU float32 tensors are handled; :mod:`benchmark.arena.quant.batchquant` decides when to
use it (``MPQBENCH_LSQ_KERNEL=python`` turns both kernels off).
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

// The fake-quantized value of one element, and whether it lies inside [qmin, qmax]: the
// PyTorch path's float32 operations in its order (u = x·a; u += shift; clamp; round).
inline float quantize_one(float xi, float a, float shift, float r, float qmin, float qmax,
                          bool* in) {
  float u = xi * a;
  u = u + shift;
  const float c = u < qmin ? qmin : (u > qmax ? qmax : u);
  *in = (u == c);
  return (std::nearbyint(c) - shift) * r;
}

BQ_CLONES
void forward_chunk(const float* __restrict x, float* __restrict out, int64_t n, float a,
                   float shift, float r, float qmin, float qmax) {
  bool in;
  for (int64_t i = 0; i < n; ++i) out[i] = quantize_one(x[i], a, shift, r, qmin, qmax, &in);
}

// Recomputes the forward pass from x (no activation-sized state is saved): grad_x
// (nullable) = inside ? grad : 0; sums[0] += sum(grad * d) with d = (inside ? x : 0) - out
// when want_alpha; sums[1] += the gradient outside the range.
BQ_CLONES
void backward_chunk(const float* __restrict g, const float* __restrict x,
                    float* __restrict gx, int64_t n, float a, float shift, float r,
                    float qmin, float qmax, bool want_alpha, double* sums) {
  double acc_a[kLanes] = {0.0};
  double acc_b[kLanes] = {0.0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float gi = g[i + j];
      const float xi = x[i + j];
      bool in;
      const float o = quantize_one(xi, a, shift, r, qmin, qmax, &in);
      if (gx != nullptr) gx[i + j] = in ? gi : 0.0f;
      if (want_alpha) acc_a[j] += double(gi) * double((in ? xi : 0.0f) - o);
      acc_b[j] += in ? 0.0 : double(gi);
    }
  }
  for (; i < n; ++i) {
    const float gi = g[i];
    const float xi = x[i];
    bool in;
    const float o = quantize_one(xi, a, shift, r, qmin, qmax, &in);
    if (gx != nullptr) gx[i] = in ? gi : 0.0f;
    if (want_alpha) acc_a[0] += double(gi) * double((in ? xi : 0.0f) - o);
    acc_b[0] += in ? 0.0 : double(gi);
  }
  for (int j = 0; j < kLanes; ++j) {
    sums[0] += acc_a[j];
    sums[1] += acc_b[j];
  }
}

// min and max of one contiguous plane in one pass; NaN if the plane holds a NaN (as
// torch's amin / amax).
BQ_CLONES
void plane_range(const float* __restrict x, int64_t n, float* low, float* high) {
  float lo[kLanes], hi[kLanes];
  bool nan = false;
  for (int j = 0; j < kLanes; ++j) {
    lo[j] = INFINITY;
    hi[j] = -INFINITY;
  }
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float v = x[i + j];
      lo[j] = v < lo[j] ? v : lo[j];
      hi[j] = v > hi[j] ? v : hi[j];
      nan |= (v != v);
    }
  }
  for (; i < n; ++i) {
    const float v = x[i];
    lo[0] = v < lo[0] ? v : lo[0];
    hi[0] = v > hi[0] ? v : hi[0];
    nan |= (v != v);
  }
  float l = lo[0], h = hi[0];
  for (int j = 1; j < kLanes; ++j) {
    l = lo[j] < l ? lo[j] : l;
    h = hi[j] > h ? hi[j] : h;
  }
  *low = nan ? NAN : l;
  *high = nan ? NAN : h;
}

// Per-channel min and max of `rows` rows of `channels` floats (channels innermost: a
// channels-last batch), folded into lo / hi; nan[c] set if channel c holds a NaN.
BQ_CLONES
void rows_range(const float* __restrict x, int64_t rows, int64_t channels, float* __restrict lo,
                float* __restrict hi, unsigned char* __restrict nan) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * channels;
    for (int64_t c = 0; c < channels; ++c) {
      const float v = row[c];
      lo[c] = v < lo[c] ? v : lo[c];
      hi[c] = v > hi[c] ? v : hi[c];
      nan[c] |= (v != v);
    }
  }
}

@PARALLEL_CHUNKS@

}  // namespace

extern "C" {

void mpqbench_bq_forward(const float* x, float* out, int64_t n, float a, float shift, float r,
                         float qmin, float qmax, int64_t grain, int64_t max_tasks) {
  parallel_chunks(n, grain, max_tasks, [&](int64_t, int64_t begin, int64_t end) {
    forward_chunk(x + begin, out + begin, end - begin, a, shift, r, qmin, qmax);
  });
}

void mpqbench_bq_backward(const float* grad, const float* x, float* grad_x, int64_t n,
                          float a, float shift, float r, float qmin, float qmax,
                          int want_alpha, double* sums, int64_t grain, int64_t max_tasks) {
  std::vector<double> partial(2 * std::max<int64_t>(1, max_tasks), 0.0);
  parallel_chunks(n, grain, max_tasks, [&](int64_t task, int64_t begin, int64_t end) {
    backward_chunk(grad + begin, x + begin, grad_x == nullptr ? nullptr : grad_x + begin,
                   end - begin, a, shift, r, qmin, qmax, want_alpha != 0,
                   partial.data() + 2 * task);
  });
  sums[0] = sums[1] = 0.0;
  for (size_t t = 0; t < partial.size(); t += 2) {
    sums[0] += partial[t];
    sums[1] += partial[t + 1];
  }
}

// low[p], high[p]: min and max of plane p (planes of plane_size contiguous elements).
void mpqbench_bq_plane_ranges(const float* x, float* low, float* high, int64_t planes,
                              int64_t plane_size, int64_t grain, int64_t max_tasks) {
  const int64_t plane_grain = std::max<int64_t>(1, grain / std::max<int64_t>(1, plane_size));
  parallel_chunks(planes, plane_grain, max_tasks, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      plane_range(x + p * plane_size, plane_size, low + p, high + p);
    }
  });
}

// low[c], high[c]: min and max of channel c of a rows × channels array (channels-last).
void mpqbench_bq_channel_ranges_last(const float* x, float* low, float* high, int64_t rows,
                                     int64_t channels, int64_t grain, int64_t max_tasks) {
  const int64_t tasks = std::max<int64_t>(1, max_tasks);
  std::vector<float> lo(tasks * channels, INFINITY), hi(tasks * channels, -INFINITY);
  std::vector<unsigned char> nan(tasks * channels, 0);
  const int64_t row_grain = std::max<int64_t>(1, grain / std::max<int64_t>(1, channels));
  parallel_chunks(rows, row_grain, max_tasks, [&](int64_t task, int64_t begin, int64_t end) {
    rows_range(x + begin * channels, end - begin, channels, lo.data() + task * channels,
               hi.data() + task * channels, nan.data() + task * channels);
  });
  for (int64_t c = 0; c < channels; ++c) {
    float l = lo[c], h = hi[c];
    bool any_nan = nan[c] != 0;
    for (int64_t t = 1; t < tasks; ++t) {
      l = lo[t * channels + c] < l ? lo[t * channels + c] : l;
      h = hi[t * channels + c] > h ? hi[t * channels + c] : h;
      any_nan |= nan[t * channels + c] != 0;
    }
    low[c] = any_nan ? NAN : l;
    high[c] = any_nan ? NAN : h;
  }
}

}  // extern "C"
"""

_CPP_SOURCE = _CPP_SOURCE.replace("@PARALLEL_CHUNKS@", PARALLEL_CHUNKS)


def _bind(lib: ctypes.CDLL) -> None:
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    lib.mpqbench_bq_forward.argtypes = [ptr, ptr, i64, f32, f32, f32, f32, f32, i64, i64]
    lib.mpqbench_bq_forward.restype = None
    lib.mpqbench_bq_backward.argtypes = [
        ptr, ptr, ptr, i64, f32, f32, f32, f32, f32, ctypes.c_int, ptr, i64, i64
    ]  # fmt: skip
    lib.mpqbench_bq_backward.restype = None
    lib.mpqbench_bq_plane_ranges.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64]
    lib.mpqbench_bq_plane_ranges.restype = None
    lib.mpqbench_bq_channel_ranges_last.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64]
    lib.mpqbench_bq_channel_ranges_last.restype = None


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


def plane_ranges(lib: ctypes.CDLL, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(min, max)`` over every dim but 1 of a contiguous N×C×… float32 ``x``
    (two C-element tensors, ``x``'s unit): each (n, c) plane's in one pass, then the
    smallest / largest over the batch."""
    planes = x.shape[0] * x.shape[1]
    low = torch.empty(planes, dtype=torch.float32)
    high = torch.empty(planes, dtype=torch.float32)
    if planes and x.numel():
        lib.mpqbench_bq_plane_ranges(
            x.data_ptr(), low.data_ptr(), high.data_ptr(), planes, x.numel() // planes,
            GRAIN_SIZE, torch.get_num_threads(),
        )  # fmt: skip
    shape = (x.shape[0], x.shape[1])
    return low.view(shape).amin(dim=0), high.view(shape).amax(dim=0)


def channel_ranges_last(lib: ctypes.CDLL, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(min, max)`` over every dim but 1 of a channels-last N×C×H×W float32
    ``x`` (two C-element tensors, ``x``'s unit), in one pass over its memory (N·H·W rows of
    C floats); NaN for a channel holding a NaN, as torch's ``amin`` / ``amax``."""
    channels = x.shape[1]
    low = torch.empty(channels, dtype=torch.float32)
    high = torch.empty(channels, dtype=torch.float32)
    if channels and x.numel():
        lib.mpqbench_bq_channel_ranges_last(
            x.data_ptr(), low.data_ptr(), high.data_ptr(), x.numel() // channels, channels,
            GRAIN_SIZE, torch.get_num_threads(),
        )  # fmt: skip
    return low, high


def forward(
    lib: ctypes.CDLL, x: Tensor, a: float, shift: float, r: float, qmin: int, qmax: int
) -> tuple[Tensor, Tensor]:
    """``(out, x)``: the fake-quantized ``x`` and the ``x`` it was computed from (made
    contiguous where ``out`` could not share its memory order), which :func:`backward`
    takes."""
    out, x = output_like(x)
    n = x.numel()
    if n:
        lib.mpqbench_bq_forward(
            x.data_ptr(), out.data_ptr(), n, a, shift, r, float(qmin), float(qmax),
            GRAIN_SIZE, torch.get_num_threads(),
        )  # fmt: skip
    return out, x


def backward(
    lib: ctypes.CDLL, grad: Tensor, x: Tensor, a: float, shift: float, r: float, qmin: int,
    qmax: int, want_grad_x: bool, want_alpha: bool,
) -> tuple[Tensor | None, float, float]:  # fmt: skip
    """``(grad_x, Σ grad·d, Σ_outside grad)`` (sums in float64), the forward pass recomputed
    from ``x`` with the same scalars."""
    grad = float32_in_order_of(grad, x)
    grad_x = torch.empty_like(x) if want_grad_x else None
    sums = (ctypes.c_double * 2)(0.0, 0.0)
    n = x.numel()
    if n:
        lib.mpqbench_bq_backward(
            grad.data_ptr(), x.data_ptr(), None if grad_x is None else grad_x.data_ptr(), n,
            a, shift, r, float(qmin), float(qmax), int(want_alpha), sums, GRAIN_SIZE,
            torch.get_num_threads(),
        )  # fmt: skip
    return grad_x, float(sums[0]), float(sums[1])
