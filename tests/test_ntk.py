"""Empirical NTK: closed form vs torch.func references vs the infinite-width kernel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from malleability.empirics.data import DataConfig, load_dataset
from malleability.empirics.ntk import (
    empirical_ntk,
    empirical_ntk_multi,
    empirical_ntk_reference,
    infinite_ntk,
    ntk,
    ntk_vector_products,
)
from malleability.errors import MalleabilityError


def rows(n, d, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (x / x.norm(dim=1, keepdim=True)).to(dtype)


@pytest.fixture(scope="module")
def mnist_rows(data_root):
    ds = load_dataset(DataConfig("mnist", n=40, n_test=1, seed=0, data_root=str(data_root)))
    return torch.from_numpy(ds.x_train)


@given(seed=st.integers(0, 2**20), n1=st.integers(1, 9), n2=st.integers(1, 9), d=st.integers(1, 6),
       m=st.integers(1, 12), weighted=st.booleans())
def test_closed_form_equals_both_references(seed, n1, n2, d, m, weighted):
    z1, z2 = rows(n1, d, seed), rows(n2, d, seed + 1)
    W = torch.randn(m, d, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    a = torch.randn(m, generator=torch.Generator().manual_seed(seed + 3), dtype=torch.float64) if weighted else None
    K = empirical_ntk(z1, z2, W, a)
    assert torch.allclose(K, empirical_ntk_reference(z1, z2, W, a, chunk_size=4), rtol=0, atol=1e-13)
    assert torch.allclose(K, ntk_vector_products(z1, z2, W, a, chunk_size=3), rtol=0, atol=1e-13)


def test_multi_output_closed_form_equals_reference():
    z1, z2 = rows(7, 5, 1), rows(4, 5, 2)
    W = torch.randn(11, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    A = torch.randint(0, 2, (11, 3), generator=torch.Generator().manual_seed(4)).double() * 2 - 1
    M = empirical_ntk_multi(z1, z2, W, A, chunk_size=5)
    assert M.shape == (7, 4, 3, 3)
    assert torch.allclose(M, empirical_ntk_reference(z1, z2, W, A), atol=1e-13)
    # ±1 outputs: every diagonal block is the scalar kernel with a = None
    for k in range(3):
        assert torch.allclose(M[:, :, k, k], empirical_ntk(z1, z2, W), atol=1e-14)
    assert torch.allclose(ntk(z1, z2, W, A), M)


def test_closed_form_on_mnist_rows_matches_reference(mnist_rows):
    z = mnist_rows[:24]
    W = torch.randn(96, 784, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    K = ntk(z, z, W)
    R = ntk(z, z, W, implementation="jacobian_contraction")
    assert float((K - R).abs().max() / R.abs().max()) < 1e-13


def test_chunking_invariance_and_symmetry():
    z = rows(23, 6, 5)
    W = torch.randn(40, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    full = empirical_ntk(z, z, W, chunk_size=1024)
    for c in (1, 5, 23):
        # equal up to BLAS blocking of the chunked products
        assert torch.allclose(empirical_ntk(z, z, W, chunk_size=c), full, rtol=0, atol=1e-15)
    assert torch.allclose(empirical_ntk(z, z.clone(), W, chunk_size=4), full, atol=1e-15)
    assert torch.allclose(full, full.T, atol=1e-15)
    assert float(torch.linalg.eigvalsh(full).min()) > -1e-12  # PSD


def test_scale_invariance_makes_paper_init_estimate_k_infinity():
    z = rows(10, 8, 1)
    W = torch.randn(64, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(empirical_ntk(z, z, W), empirical_ntk(z, z, 0.01 * W))


def test_infinite_ntk_special_values():
    e = torch.eye(3, dtype=torch.float64)
    z = torch.cat([e, -e[:1]])
    K = infinite_ntk(z, z)
    assert torch.allclose(torch.diagonal(K), torch.full((4,), 0.5, dtype=torch.float64))
    assert K[0, 1] == 0 and K[0, 3] == 0  # orthogonal; antipodal (θ = π)
    u = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2]], dtype=torch.float64)  # θ = π/3
    assert abs(float(infinite_ntk(u, u)[0, 1]) - 0.5 * (math.pi - math.pi / 3) / (2 * math.pi)) < 1e-15


def test_monte_carlo_convergence_to_k_infinity(mnist_rows):
    z = mnist_rows[:30]
    m = 20000
    W = torch.randn(m, 784, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    diff = (empirical_ntk(z, z, W) - infinite_ntk(z, z)).abs().max()
    # each entry is <z,z'> times a mean of m Bernoulli(<=1/2) draws: sd <= 0.5/sqrt(m); 6 sd for 900 entries
    assert float(diff) < 6 * 0.5 / math.sqrt(m)


def test_init_vs_infinite_distance_shrinks_like_inverse_sqrt_width(mnist_rows):
    z = mnist_rows
    Kinf = infinite_ntk(z, z)
    widths = [16, 64, 256, 1024, 4096]
    lx, ly = [], []
    for m in widths:
        for s in range(6):
            W = torch.randn(m, 784, generator=torch.Generator().manual_seed(1000 * m + s), dtype=torch.float64)
            d = torch.linalg.matrix_norm(empirical_ntk(z, z, W) - Kinf) / torch.linalg.matrix_norm(Kinf)
            lx.append(math.log(m))
            ly.append(math.log(float(d)))
    slope = np.polyfit(lx, ly, 1)[0]
    assert -0.58 < slope < -0.42, slope


def test_float32_agrees_with_float64():
    z = rows(30, 20, 3)
    W = torch.randn(128, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    K64 = empirical_ntk(z, z, W)
    K32 = empirical_ntk(z.float(), z.float(), W.float())
    assert K32.dtype == torch.float32
    assert float((K32.double() - K64).abs().max()) < 1e-5


def test_bad_inputs():
    z = rows(3, 4)
    W = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(MalleabilityError, match="feature dimensions"):
        empirical_ntk(z, rows(3, 5), W)
    with pytest.raises(MalleabilityError, match="a must be"):
        empirical_ntk(z, z, W, torch.ones(4, dtype=torch.float64))
    with pytest.raises(MalleabilityError, match="unknown NTK implementation"):
        ntk(z, z, W, implementation="magic")
    with pytest.raises(MalleabilityError, match="chunk_size"):
        empirical_ntk(z, z, W, chunk_size=0)


def test_reference_symmetric_path_mirrors_blocks():
    z = rows(10, 4, 7)
    W = torch.randn(9, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    A = torch.randint(0, 2, (9, 2), generator=torch.Generator().manual_seed(9)).double() * 2 - 1
    assert torch.allclose(empirical_ntk_reference(z, z, W, chunk_size=3), empirical_ntk(z, z, W), atol=1e-14)
    assert torch.allclose(empirical_ntk_reference(z, z, W, A, chunk_size=3), empirical_ntk_multi(z, z, W, A), atol=1e-14)
