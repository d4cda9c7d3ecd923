"""CPU float32 products through numpy's BLAS (OpenBLAS) where it beats torch's own GEMM.

Measured on one thread (AMD EPYC, 2026-12-03, 1024x784x1024): torch (MKL) 53 GFLOP/s, numpy
(OpenBLAS) 83. Only products whose exact rounding the caller does not depend on go here (the
NTK's float32 screen, whose error bound holds for any summation order), so which backend a
machine picks cannot change a result.

numpy's OpenBLAS (and scipy's, a second copy) keeps its own thread pool, sized when it was
first imported, not by ``torch.set_num_threads``. Every call here runs with that pool limited to torch's thread
count (threadpoolctl, about 12 µs per call), so a one-thread audit worker stays on one thread.
"""

from __future__ import annotations

import contextlib

import torch

from malleability.empirics.timing import best_time

_CONTROLLER = None
_SGEMM_FASTER: bool | None = None


def _controller():
    """threadpoolctl's controller of the loaded BLAS libraries, or None where threadpoolctl is missing."""
    global _CONTROLLER
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # an environment installed before it was a dependency: torch does every product
            _CONTROLLER = False
        else:
            import numpy  # noqa: F401 - the controller sees only the libraries loaded when it is made:
            import scipy.linalg  # noqa: F401 - numpy and scipy each bring their own OpenBLAS

            _CONTROLLER = ThreadpoolController()
    return _CONTROLLER or None


def blas_threads():
    """Context manager: numpy's and scipy's BLAS limited to torch's current thread count (a no-op without threadpoolctl)."""
    controller = _controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=torch.get_num_threads(), user_api="blas")


def hold_blas_threads(threads: int) -> None:
    """Limit numpy's BLAS pool to ``threads`` from now on (a worker's setting; a no-op without threadpoolctl).

    A float64 reduction's last bits depend on the thread count (an SVD, a Gram), so a worker holds
    numpy's pool where torch's is, whatever it was sized to at numpy's import.
    """
    controller = _controller()
    if controller is not None:
        controller.limit(limits=int(threads), user_api="blas")  # kept: never restored in this process


def _numpy_ok(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and t.is_contiguous()
               and not t.requires_grad for t in tensors)


def mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a bᵀ`` by whichever backend multiplies float32 faster here (:func:`numpy_sgemm_faster`).

    For products whose exact rounding does not matter to the caller (a screen whose error is
    bounded independently of the summation order): the backend is chosen by timing.
    """
    if not (_numpy_ok(a, b) and a.dtype == b.dtype == torch.float32 and numpy_sgemm_faster()):
        return a @ b.T
    import numpy as np

    out = torch.empty(a.shape[0], b.shape[0], dtype=a.dtype)
    with blas_threads():
        np.matmul(a.numpy(), b.numpy().T, out=out.numpy())
    return out


def numpy_sgemm_faster(rows: int = 512, inner: int = 784) -> bool:
    """Whether numpy's float32 GEMM beats torch's here; decided once per process by one timed product each way.

    On an Intel host MKL may be the faster, hence a measurement, not a rule.
    """
    global _SGEMM_FASTER
    if _SGEMM_FASTER is None and _controller() is None:  # numpy's thread pool could not be held to torch's
        _SGEMM_FASTER = False
    if _SGEMM_FASTER is None:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(rows, inner, generator=gen)
        b = torch.randn(rows, inner, generator=gen)
        an, bn = a.numpy(), b.numpy()
        with blas_threads():
            t_np = best_time(lambda: an @ bn.T)
        _SGEMM_FASTER = t_np < best_time(lambda: a @ b.T)
    return _SGEMM_FASTER


def gram_sym(a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a aᵀ``, exactly symmetric, into ``out`` ((n, n), a view with unit column stride, or None).

    On the CPU numpy hands ``A @ A.T`` of one buffer to BLAS syrk: half a GEMM's multiply-adds,
    the lower triangle copied from the upper (about 1.8x faster than torch's full product, float32
    and float64, one thread, AMD EPYC 2026-12-06). Elsewhere (CUDA, or numpy's pool not held to
    torch's thread count) torch's full product, its upper triangle mirrored.
    """
    n = a.shape[0]
    if out is None:
        out = torch.empty(n, n, dtype=a.dtype, device=a.device)
    if (_numpy_ok(a) and out.device.type == "cpu" and out.dtype == a.dtype and out.stride(1) == 1
            and _controller() is not None):
        import numpy as np

        an = a.numpy()
        with blas_threads():
            np.matmul(an, an.T, out=out.numpy())
        return out
    torch.mm(a, a.T, out=out)
    out.copy_(out.triu().add_(out.triu(1).T))
    return out
