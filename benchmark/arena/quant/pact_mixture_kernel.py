"""A fused CPU kernel for a mixture of PACT activation quantizers: one pass forward, one
pass backward.

DNAS's super-net runs ``Σ_j p_j·Q_j(x)`` in every mixed layer (list order, ``Q_j`` the PACT
quantizer at the j-th bit-width, or the identity for a 32-bit term). Built and loaded by
:class:`benchmark.arena.quant.cpu_kernel.CpuKernel` (plain C++ compiled on first use,
called through ``ctypes``, OpenMP threads as torch's), without floating-point contraction
(no FMA) so that its float32 arithmetic is the PyTorch path's, operation by operation:

- *term j*, PACT with step ``s_j`` (computed by the caller as the PyTorch path does:
  ``(|α| + 1e-8)/levels``, same unit as ``x``) on the grid ``[qn_j, qp_j]``:
  ``t = (nearbyint(clamp(x / s_j, qn_j, qp_j))·s_j)·p_j`` (true division, round half to
  even); an FP term: ``t = x·p_j``.
- forward: ``out = t_0``, then ``out = out + t_j`` for ``j = 1, 2, …`` (the order of
  :func:`benchmark.arena.quant.mixture.mix`). Nothing is saved but ``x`` itself.
- backward recomputes the clip masks from ``x`` (``above = x > qp_j·s_j``,
  ``below = x < qn_j·s_j``, as :class:`benchmark.arena.quant.pact._PACTFunction` does):
  ``g_j = (above or below) ? 0 : grad·p_j`` (FP terms: ``grad·p_j``) and
  ``grad_x = ((g_(k−1) + g_(k−2)) + …) + g_0`` — the last term first, the order in which
  autograd accumulates the branches' gradients of the PyTorch path, so ``grad_x`` has its
  bits. Per term, accumulated in float64: ``Σ_above grad``, ``Σ_below grad`` (for α's
  gradient) and ``Σ grad·Q_j(x)`` (the probability's gradient, ``Q_j`` recomputed only
  when asked for).

Processed in blocks of :data:`BLOCK` elements that stay in L1 while every term runs over
them; NaN stays NaN as in torch (a NaN ``x`` is inside both clip masks' complement, so it
passes ``grad·p_j`` through, like the PyTorch path). Only CPU float32 tensors are handled;
:mod:`benchmark.arena.quant.pact` decides when to use it.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass

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

EXTENSION_NAME = "mpqbench_pact_mixture_cpu"
BLOCK = 512
"""Elements per block (C++ ``kBlock``): every term runs over one block before the next."""
SUMS_PER_TERM = 3
"""float64 sums per term from :func:`backward`: ``Σ_above grad``, ``Σ_below grad``,
``Σ grad·Q_j(x)``."""

_CPP_SOURCE = r"""
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

#if defined(__x86_64__)
#define PM_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PM_CLONES
#endif
#define PM_INLINE inline __attribute__((always_inline))

constexpr int64_t kBlock = @BLOCK@;
constexpr int kLanes = 8;  // independent float64 partial sums, so the reductions vectorize
constexpr int kSums = 3;   // per term: sum over above, sum over below, sum of grad * Q(x)

// One term of the mixture, as the caller describes it.
struct Term {
  float s, p, qn, qp, lo, hi;  // step, probability, grid, clip bounds qn*s and qp*s
  bool fp;                     // the identity (32 bits): Q(x) = x
};

// Q(x) of a PACT term: the PyTorch path's (x / s).clamp_(qn, qp).round_().mul_(s).
PM_INLINE float pact_q(float xi, float s, float qn, float qp) {
  const float v = xi / s;
  const float c = v < qn ? qn : (v > qp ? qp : v);  // NaN stays NaN, like torch.clamp
  return std::nearbyint(c) * s;
}

// out = t (first term) or out + t, t = Q(x) * p.
template <bool kFirst, bool kFp>
PM_INLINE void forward_body(const float* __restrict x, float* __restrict out, int64_t n,
                            const Term& t) {
  for (int64_t i = 0; i < n; ++i) {
    const float term = (kFp ? x[i] : pact_q(x[i], t.s, t.qn, t.qp)) * t.p;
    out[i] = kFirst ? term : out[i] + term;
  }
}

PM_CLONES
void forward_term(const float* __restrict x, float* __restrict out, int64_t n, const Term& t,
                  bool first) {
  if (t.fp) {
    first ? forward_body<true, true>(x, out, n, t) : forward_body<false, true>(x, out, n, t);
  } else {
    first ? forward_body<true, false>(x, out, n, t) : forward_body<false, false>(x, out, n, t);
  }
}

// One term's share of grad_x over one block: gx = g_j (first) or gx + g_j, with
// g_j = grad * p masked outside [lo, hi] (not for an FP term).
template <bool kFirst, bool kFp>
PM_INLINE void grad_x_body(const float* __restrict g, const float* __restrict x,
                           float* __restrict gx, int64_t n, float p, float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) {
    const bool outside = !kFp && ((x[i] > hi) | (x[i] < lo));
    const float gt = outside ? 0.0f : g[i] * p;
    gx[i] = kFirst ? gt : gx[i] + gt;
  }
}

// sum over the block of double(f(g[i], x[i])) in kLanes float64 partial sums.
template <typename F>
PM_INLINE double lane_sum(const float* __restrict g, const float* __restrict x, int64_t n,
                          const F& f) {
  double acc[kLanes] = {0.0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += f(g[i + j], x[i + j]);
  }
  for (; i < n; ++i) acc[0] += f(g[i], x[i]);
  double total = 0.0;
  for (int j = 0; j < kLanes; ++j) total += acc[j];
  return total;
}

// One term's sums over one block: sums[0] += sum over x > hi of grad, sums[1] += over
// x < lo (when kClip; the latter for signed grids only: α's gradient of an unsigned grid
// has no lower-bound part), sums[2] += sum of grad * Q(x) (when kProb).
template <bool kClip, bool kProb, bool kFp>
PM_INLINE void sums_body(const float* __restrict g, const float* __restrict x, int64_t n,
                         float s, float qn, float qp, float lo, float hi, double* sums) {
  if (kClip) {
    sums[0] += lane_sum(g, x, n, [hi](float gi, float xi) {
      return double(xi > hi ? gi : 0.0f); });
    if (qn < 0.0f) {
      sums[1] += lane_sum(g, x, n, [lo](float gi, float xi) {
        return double(xi < lo ? gi : 0.0f); });
    }
  }
  if (kProb) {
    sums[2] += lane_sum(g, x, n, [=](float gi, float xi) {
      return double(gi) * double(kFp ? xi : pact_q(xi, s, qn, qp)); });
  }
}

// One term over one block (grad_x when gx is not null; the sums asked for).
PM_CLONES
void backward_term(const float* __restrict g, const float* __restrict x, float* __restrict gx,
                   int64_t n, const Term& t, bool first, bool clip, bool prob, double* sums) {
  const float s = t.s, p = t.p, qn = t.qn, qp = t.qp, lo = t.lo, hi = t.hi;
  if (gx != nullptr) {
    if (t.fp) {
      first ? grad_x_body<true, true>(g, x, gx, n, p, lo, hi)
            : grad_x_body<false, true>(g, x, gx, n, p, lo, hi);
    } else {
      first ? grad_x_body<true, false>(g, x, gx, n, p, lo, hi)
            : grad_x_body<false, false>(g, x, gx, n, p, lo, hi);
    }
  }
  if (t.fp) {
    if (prob) sums_body<false, true, true>(g, x, n, s, qn, qp, lo, hi, sums);
  } else if (clip && prob) {
    sums_body<true, true, false>(g, x, n, s, qn, qp, lo, hi, sums);
  } else if (clip) {
    sums_body<true, false, false>(g, x, n, s, qn, qp, lo, hi, sums);
  } else if (prob) {
    sums_body<false, true, false>(g, x, n, s, qn, qp, lo, hi, sums);
  }
}

std::vector<Term> make_terms(int64_t k, const float* steps, const float* probs,
                             const float* qn, const float* qp, const int32_t* fp) {
  std::vector<Term> terms(k);
  for (int64_t j = 0; j < k; ++j) {
    Term& t = terms[j];
    t.s = steps[j];
    t.p = probs[j];
    t.qn = qn[j];
    t.qp = qp[j];
    // the PyTorch path's bounds: x < qn * step (signed) or x < 0 (unsigned), x > qp * step
    t.lo = qn[j] < 0.0f ? qn[j] * steps[j] : 0.0f;
    t.hi = qp[j] * steps[j];
    t.fp = fp[j] != 0;
  }
  return terms;
}

@PARALLEL_CHUNKS@

}  // namespace

extern "C" {

// out = sum_j p_j * Q_j(x) over the k terms (arrays of k: step, probability, grid, FP flag).
void mpqbench_pact_mix_forward(const float* x, float* out, int64_t n, int64_t k,
                               const float* steps, const float* probs, const float* qn,
                               const float* qp, const int32_t* fp, int64_t grain,
                               int64_t max_tasks) {
  const std::vector<Term> terms = make_terms(k, steps, probs, qn, qp, fp);
  parallel_chunks(n, grain, max_tasks, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t len = std::min(kBlock, end - b);
      for (int64_t j = 0; j < k; ++j) forward_term(x + b, out + b, len, terms[j], j == 0);
    }
  });
}

// grad_x (nullable) and sums[3 * j + {0, 1, 2}] (sum over above, below, of grad * Q_j(x));
// the clip sums when want_clip, the last when want_prob (else left at 0).
void mpqbench_pact_mix_backward(const float* grad, const float* x, float* grad_x, int64_t n,
                                int64_t k, const float* steps, const float* probs,
                                const float* qn, const float* qp, const int32_t* fp,
                                int want_clip, int want_prob, double* sums, int64_t grain,
                                int64_t max_tasks) {
  const std::vector<Term> terms = make_terms(k, steps, probs, qn, qp, fp);
  const int64_t tasks = std::max<int64_t>(1, max_tasks);
  std::vector<double> partial(tasks * k * kSums, 0.0);
  parallel_chunks(n, grain, max_tasks, [&](int64_t task, int64_t begin, int64_t end) {
    double* mine = partial.data() + task * k * kSums;
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t len = std::min(kBlock, end - b);
      for (int64_t j = k - 1; j >= 0; --j) {  // last term first: autograd's order for grad_x
        backward_term(grad + b, x + b, grad_x == nullptr ? nullptr : grad_x + b, len,
                      terms[j], j == k - 1, want_clip != 0, want_prob != 0,
                      mine + j * kSums);
      }
    }
  });
  for (int64_t j = 0; j < k * kSums; ++j) sums[j] = 0.0;
  for (int64_t t = 0; t < tasks; ++t) {
    for (int64_t j = 0; j < k * kSums; ++j) sums[j] += partial[t * k * kSums + j];
  }
}

}  // extern "C"
"""

_CPP_SOURCE = _CPP_SOURCE.replace("@PARALLEL_CHUNKS@", PARALLEL_CHUNKS).replace(
    "@BLOCK@", str(BLOCK)
)


def _bind(lib: ctypes.CDLL) -> None:
    i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    terms = [ptr, ptr, ptr, ptr, ptr]  # steps, probs, qn, qp, fp
    lib.mpqbench_pact_mix_forward.argtypes = [ptr, ptr, i64, i64, *terms, i64, i64]
    lib.mpqbench_pact_mix_forward.restype = None
    lib.mpqbench_pact_mix_backward.argtypes = [
        ptr, ptr, ptr, i64, i64, *terms, c_int, c_int, ptr, i64, i64
    ]  # fmt: skip
    lib.mpqbench_pact_mix_backward.restype = None


KERNEL = CpuKernel(
    EXTENSION_NAME,
    _CPP_SOURCE,
    label="PACT mixture",
    bind=_bind,
    cflags=["-ffp-contract=off"],  # no FMA contraction: the PyTorch path's float32 bits
    logger=log,
)
"""The library (built on first :func:`load`)."""


def load() -> ctypes.CDLL | None:
    """The compiled library, built on the first call; ``None`` if the build failed (logged
    once as a warning, not retried in this process)."""
    return KERNEL.load()


def load_seconds() -> float | None:
    """Seconds the first :func:`load` took in this process (build or cache load), if tried."""
    return KERNEL.load_s


def supports(x: Tensor, alpha: Tensor) -> bool:
    """Whether the kernel handles these inputs (CPU float32 ``x`` and clip ``alpha``)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and alpha.device.type == "cpu"
        and alpha.dtype == torch.float32
    )


@dataclass(frozen=True)
class Terms:
    """The k terms of one mixture as the kernel takes them (ctypes arrays of k each).

    Attributes:
        steps: PACT's step per term (same unit as ``x``; 0 for an FP term).
        probs: the float32 mixing weight per term.
        qn / qp: the integer grid per term (as floats; 0 for an FP term).
        fp: 1 for an FP (32-bit, identity) term, else 0.
    """

    steps: ctypes.Array
    probs: ctypes.Array
    qn: ctypes.Array
    qp: ctypes.Array
    fp: ctypes.Array

    @property
    def count(self) -> int:
        return len(self.steps)

    @classmethod
    def create(
        cls,
        steps: Sequence[float],
        probs: Sequence[float],
        grids: Sequence[tuple[int, int] | None],
    ) -> Terms:
        """From per-term steps, probabilities and grids (``None``: an FP term)."""
        k = len(grids)
        if not (len(steps) == len(probs) == k) or k == 0:
            raise ValueError(f"need as many steps and probabilities as grids (>0), got {k}")
        floats, ints = ctypes.c_float * k, ctypes.c_int32 * k
        return cls(
            floats(*(0.0 if g is None else float(s) for s, g in zip(steps, grids, strict=True))),
            floats(*(float(p) for p in probs)),
            floats(*(0.0 if g is None else float(g[0]) for g in grids)),
            floats(*(0.0 if g is None else float(g[1]) for g in grids)),
            ints(*(1 if g is None else 0 for g in grids)),
        )


def forward(lib: ctypes.CDLL, x: Tensor, terms: Terms) -> tuple[Tensor, Tensor]:
    """``(out, x)``: the mixture ``Σ_j p_j·Q_j(x)`` (same unit and memory order as ``x``)
    and the ``x`` it was computed from (made contiguous where ``out`` could not share its
    memory order: slices, expanded tensors), which :func:`backward` takes."""
    out, x = output_like(x)
    n = x.numel()
    if n:
        lib.mpqbench_pact_mix_forward(
            x.data_ptr(), out.data_ptr(), n, terms.count, terms.steps, terms.probs, terms.qn,
            terms.qp, terms.fp, GRAIN_SIZE, torch.get_num_threads(),
        )  # fmt: skip
    return out, x


def backward(
    lib: ctypes.CDLL,
    grad: Tensor,
    x: Tensor,
    terms: Terms,
    want_grad_x: bool,
    want_clip: bool,
    want_prob: bool,
) -> tuple[Tensor | None, list[tuple[float, float, float]]]:
    """``(grad_x, sums)``: the gradient to ``x`` (``None`` unless ``want_grad_x``) and per
    term ``(Σ_above grad, Σ_below grad, Σ grad·Q_j(x))`` in float64, in ``grad``'s unit
    times ``x``'s for the last (the first two 0 unless ``want_clip``, for FP terms, and the
    second for unsigned grids; the last 0 unless ``want_prob``). ``x`` is :func:`forward`'s
    second result."""
    grad = float32_in_order_of(grad, x)
    grad_x = torch.empty_like(x) if want_grad_x else None
    k = terms.count
    sums = (ctypes.c_double * (SUMS_PER_TERM * k))()
    n = x.numel()
    if n and (want_grad_x or want_clip or want_prob):
        lib.mpqbench_pact_mix_backward(
            grad.data_ptr(), x.data_ptr(), None if grad_x is None else grad_x.data_ptr(), n, k,
            terms.steps, terms.probs, terms.qn, terms.qp, terms.fp, int(want_clip),
            int(want_prob), sums, GRAIN_SIZE, torch.get_num_threads(),
        )  # fmt: skip
    values = list(sums)
    return grad_x, [tuple(values[SUMS_PER_TERM * j : SUMS_PER_TERM * (j + 1)]) for j in range(k)]
