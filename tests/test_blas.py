"""numpy-BLAS products used by the closed-form NTK: against torch's, thread-limited, and without
effect on the kernel."""

import pytest
import torch

import malleability.empirics.blas as B
from malleability.empirics.ntk import empirical_ntk


def _rows(n, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (z / z.norm(dim=1, keepdim=True)).to(dtype)


@pytest.mark.parametrize("numpy_faster", [True, False])
def test_mm_nt_is_a_times_b_transposed_on_either_backend(monkeypatch, numpy_faster):
    monkeypatch.setattr(B, "_SGEMM_FASTER", numpy_faster)
    a, b = _rows(9, 17, torch.float32, 1), _rows(4, 17, torch.float32, 2)
    want = a.double() @ b.double().T
    got = B.mm_nt(a, b)
    assert got.shape == (9, 4) and got.dtype == torch.float32
    assert float((got.double() - want).abs().max()) <= 64 * 17 * torch.finfo(torch.float32).eps


def test_blas_threads_follows_torch(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with B.blas_threads():
            blas = [lib for lib in B._controller().info() if lib["user_api"] == "blas"]
            assert blas and all(lib["num_threads"] == 1 for lib in blas)
    finally:
        torch.set_num_threads(before)


def test_the_screen_backend_cannot_change_the_kernel(monkeypatch):
    # the float32 screen only decides which entries are rechecked in float64; its backend (and hence
    # its summation order) must leave the pattern, and so the kernel, bitwise the same
    z, W = _rows(257, 50, seed=6), torch.randn(128, 50, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    kernels = []
    for numpy_faster in (True, False):
        monkeypatch.setattr(B, "_SGEMM_FASTER", numpy_faster)
        kernels.append(empirical_ntk(z, z, W, chunk_size=100))
    assert torch.equal(*kernels)


def test_without_threadpoolctl_torch_does_every_product(monkeypatch):
    # numpy's BLAS threads cannot be held to torch's count then, so it is never chosen
    monkeypatch.setattr(B, "_CONTROLLER", False)
    monkeypatch.setattr(B, "_SGEMM_FASTER", None)
    assert B.numpy_sgemm_faster() is False
    with B.blas_threads():
        pass
    a, b = _rows(5, 8, torch.float32, 1), _rows(3, 8, torch.float32, 2)
    assert torch.equal(B.mm_nt(a, b), a @ b.T)


@pytest.mark.parametrize("numpy_backend", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_sym_equals_exact_integer_gram_and_is_bitwise_symmetric(monkeypatch, numpy_backend, dtype):
    # 0/1 and small-integer entries: every summation order gives the exact integer Gram
    if not numpy_backend:
        monkeypatch.setattr(B, "_controller", lambda: None)
    g = torch.Generator().manual_seed(5)
    a = torch.randint(-3, 4, (37, 300), generator=g).to(dtype)
    exact = (a.long() @ a.long().T).to(dtype)
    got = B.gram_sym(a)
    assert torch.equal(got, exact)
    # into a strided view of a larger matrix (a diagonal block), leaving the rest untouched
    big = torch.full((50, 50), -7.0, dtype=dtype)
    B.gram_sym(a, out=big[5:42, 5:42])
    assert torch.equal(big[5:42, 5:42], exact) and bool((big[:5] == -7).all()) and bool((big[:, 42:] == -7).all())
    r = _rows(64, 33, dtype, 9)
    K = B.gram_sym(r)
    assert torch.equal(K, K.T)
    assert float((K.double() - r.double() @ r.double().T).abs().max()) <= 64 * 33 * torch.finfo(dtype).eps


def test_self_kernel_blocks_give_the_same_kernel_on_either_diagonal_backend(monkeypatch):
    # the diagonal blocks' z Gram may round differently per backend; both stay at float64 rounding
    z, W = _rows(150, 20, seed=3), torch.randn(64, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    S = (z @ W.T > 0).long()
    exact = (z @ z.T) * (S @ S.T).double() / 64
    with_numpy = empirical_ntk(z, z, W, chunk_size=40)
    monkeypatch.setattr(B, "_controller", lambda: None)
    with_torch = empirical_ntk(z, z, W, chunk_size=40)
    for K in (with_numpy, with_torch):
        assert torch.equal(K, K.T) and float((K - exact).abs().max()) <= 1e-15
