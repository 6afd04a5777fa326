"""What the fused CPU quantizer kernels share: building, loading and threading.

A kernel is plain C++ (no torch headers, so it compiles in a second or two), built on first
use with ``torch.utils.cpp_extension.load_inline`` (needs a C++ compiler and ninja) into
torch's extension directory (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``).
torch locks that directory while building, so parallel worker processes build it once and
then load the cached shared library. Its functions are called through ``ctypes`` on the
tensors' memory; threads come from OpenMP, the same runtime (and thread count) as torch's,
split by :data:`PARALLEL_CHUNKS` (C++, part of every kernel's source).

:class:`CpuKernel` is one such library: built once per process, a failed build logged once
as a warning and not retried (the callers then use their PyTorch path).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

GRAIN_SIZE = 32768
"""Elements per thread at least (torch's ``at::internal::GRAIN_SIZE``)."""


def output_like(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(out, x)``: an empty tensor for an elementwise kernel's result and the ``x`` to read,
    both one flat array in the same memory order. ``torch.empty_like`` keeps the strides of
    a dense ``x`` (contiguous in some dimension order), so equal strides mean ``out`` follows
    ``x`` element for element; otherwise (slices, expanded tensors) ``x`` is made contiguous."""
    out = torch.empty_like(x)
    if out.stride() != x.stride():
        x = x.contiguous()
        out = torch.empty_like(x)
    return out, x


def float32_in_order_of(grad: Tensor, x: Tensor) -> Tensor:
    """``grad`` as float32 in ``x``'s memory order (``x`` from :func:`output_like`), copied
    only where it is not already (another dtype, another order, an expanded gradient)."""
    if grad.dtype != torch.float32 or grad.stride() != x.stride():
        grad = torch.empty_like(x).copy_(grad)
    return grad


PARALLEL_CHUNKS = r"""
// Calls body(task, begin, end) over [0, n) split into at most max_tasks contiguous chunks of
// at least `grain` elements, one per OpenMP thread (as torch's at::parallel_for does: no
// num_threads clause, serial inside an enclosing parallel region).
template <typename Body>
void parallel_chunks(int64_t n, int64_t grain, int64_t max_tasks, const Body& body) {
  int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(max_tasks, (n + grain - 1) / grain));
  if (tasks == 1 || omp_in_parallel()) {
    body(0, 0, n);
    return;
  }
  tasks = std::min<int64_t>(tasks, omp_get_max_threads());
  const int64_t chunk = (n + tasks - 1) / tasks;
#pragma omp parallel
  {
    const int64_t tid = omp_get_thread_num();
    const int64_t begin = tid * chunk;
    if (tid < tasks && begin < n) body(tid, begin, std::min(n, begin + chunk));
  }
}
"""
"""The C++ helper every kernel's anonymous namespace includes (needs ``<omp.h>``,
``<algorithm>`` and ``<cstdint>``)."""


def ensure_ninja_on_path() -> None:
    """Put the ``ninja`` PyPI package's binary on ``PATH`` if no ``ninja`` is found there."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja  # type: ignore[import-not-found]
    except ImportError:
        return
    bin_dir = getattr(ninja, "BIN_DIR", "")  # e.g. a virtual environment's bin, not activated
    if bin_dir and shutil.which("ninja", path=bin_dir) is not None:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def import_cpp_extension() -> Any:
    """``torch.utils.cpp_extension``, without the "No CUDA runtime is found" line that CUDA
    wheels log on import on a machine with no GPU (this CPU-only build needs no CUDA)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


class CpuKernel:
    """One C++ kernel library: ``name`` (the extension's), its ``source``, extra compiler
    flags, a ``label`` for the log ("LSQ", "BatchQuant") and ``bind``, which declares the
    library's functions' ``argtypes`` / ``restype``."""

    def __init__(
        self,
        name: str,
        source: str,
        *,
        label: str,
        bind: Callable[[ctypes.CDLL], None],
        cflags: Sequence[str] = (),
        logger: logging.Logger | None = None,
    ) -> None:
        self.name, self.source, self.label, self.bind = name, source, label, bind
        self.cflags = tuple(cflags)
        self.log = logger or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget any earlier load (tests: the next :meth:`load` builds again)."""
        self.tried, self.lib, self.error, self.load_s = False, None, None, None

    def build(self) -> ctypes.CDLL:
        """Compile (or load the cached build) and bind the library; raises on failure."""
        cpp_extension = import_cpp_extension()
        ensure_ninja_on_path()
        path = cpp_extension.load_inline(
            name=self.name,
            cpp_sources=[self.source],
            extra_cflags=["-O3", *self.cflags, "-fno-trapping-math", "-fno-math-errno",
                          "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            no_implicit_headers=True,  # plain C++: no torch/extension.h, so a fast compile
            verbose=False,
        )  # fmt: skip
        lib = ctypes.CDLL(path)
        self.bind(lib)
        return lib

    def load(self) -> ctypes.CDLL | None:
        """The compiled library, built on the first call; ``None`` if the build failed
        (logged once as a warning, not retried in this process)."""
        if self.tried:
            return self.lib
        with self._lock:
            if not self.tried:
                t0 = time.perf_counter()
                try:
                    self.lib = self.build()
                except Exception as error:  # any build or load failure: the PyTorch path
                    self.error = f"{type(error).__name__}: {error}"
                    self.log.warning(
                        "%s CPU kernel unavailable, using the PyTorch implementation (%s)",
                        self.label,
                        self.error.splitlines()[0][:500],
                    )
                self.load_s = time.perf_counter() - t0
                self.tried = True
        return self.lib
