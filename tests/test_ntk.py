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
    IMPLEMENTATIONS,
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


def test_hand_computed_two_by_two():
    # z1 = e1, z2 = (e1 + e2)/√2; w1 = (1, 1) active on both, w2 = (-1, 2) active on z2 only.
    # K = <z, z'> · #{r active on both} / m, m = 2
    s = 1 / math.sqrt(2)
    z = torch.tensor([[1.0, 0.0], [s, s]], dtype=torch.float64)
    W = torch.tensor([[1.0, 1.0], [-1.0, 2.0]], dtype=torch.float64)
    expected = torch.tensor([[1 * 1 / 2, s * 1 / 2], [s * 1 / 2, 1 * 2 / 2]], dtype=torch.float64)
    for impl in IMPLEMENTATIONS:
        assert torch.allclose(ntk(z, z, W, implementation=impl), expected, rtol=0, atol=1e-15), impl
    a = torch.tensor([2.0, -3.0], dtype=torch.float64)  # general a: weights a_r² = 4, 9
    wexp = torch.tensor([[4 / 2, s * 4 / 2], [s * 4 / 2, (4 + 9) / 2]], dtype=torch.float64)
    assert torch.allclose(empirical_ntk(z, z, W, a), wexp, rtol=0, atol=1e-14)
    # a = ±c: c² times the counts
    assert torch.allclose(empirical_ntk(z, z, W, torch.tensor([-3.0, 3.0], dtype=torch.float64)),
                          9 * expected, rtol=0, atol=1e-14)


def test_near_zero_preactivations_take_the_float64_sign():
    # z·w = ±1e-9: float32 rounds -1 + 1e-9 to -1 and would see 0; the float64 sign must win
    eps = 1e-9
    z = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    W = torch.tensor([[1.0, -1.0 + eps], [1.0, -1.0 - eps], [-1.0, 1.0 + eps], [0.0, 1.0]], dtype=torch.float64)
    S = (z @ W.T > 0).double()
    assert S[0].tolist() == [1.0, 0.0, 1.0, 1.0]
    exact = (z @ z.T) * (S @ S.T) / 4
    assert torch.equal(empirical_ntk(z, z, W), exact)
    assert torch.equal(empirical_ntk(z[:2], z, W), exact[:2])


@pytest.mark.parametrize("n,m,chunk", [(1, 1, 1024), (2, 1, 1), (5, 7, 2), (37, 9, 8), (300, 64, 1024), (300, 40, 64)])
def test_integer_counts_and_symmetric_tiles_equal_exact_arithmetic(n, m, chunk):
    # exact oracle: counts in int64 and <z, z'> in float64 from the same pattern
    z = rows(n, 6, n + m)
    W = torch.randn(m, 6, generator=torch.Generator().manual_seed(m), dtype=torch.float64)
    S = (z @ W.T > 0).long()
    exact = (z @ z.T) * (S @ S.T).double() / m
    K = empirical_ntk(z, z, W, chunk_size=chunk)
    assert float((K - exact).abs().max()) <= 1e-15
    assert torch.equal(K, K.T)
    # a view of the same memory is the self-kernel too; a copy takes the general path
    assert torch.allclose(empirical_ntk(z, z[:], W, chunk_size=chunk), exact, rtol=0, atol=1e-15)
    assert torch.allclose(empirical_ntk(z, z.clone(), W, chunk_size=chunk), exact, rtol=0, atol=1e-15)


def test_large_width_entries_match_mpmath():
    import mpmath

    z = rows(6, 784, 2)
    W = torch.randn(4096, 784, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    K = empirical_ntk(z, z, W)
    S = (z @ W.T > 0).long()
    counts = S @ S.T
    mpmath.mp.prec = 200
    for i, j in [(0, 0), (0, 5), (3, 4)]:
        dot = mpmath.fsum(mpmath.mpf(float(x)) * mpmath.mpf(float(y)) for x, y in zip(z[i], z[j]))
        exact = dot * int(counts[i, j]) / 4096
        assert abs(float(K[i, j]) - float(exact)) <= 1e-15 * abs(float(exact)) + 1e-300


def test_weighted_path_equals_reference_at_width():
    z = rows(20, 30, 4)
    W = torch.randn(200, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = torch.randn(200, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    R = empirical_ntk_reference(z, z, W, a)
    assert float((empirical_ntk(z, z, W, a, chunk_size=7) - R).abs().max() / R.abs().max()) < 1e-13


def test_non_finite_inputs_are_rejected():
    z = rows(3, 4)
    W = torch.randn(5, 4, dtype=torch.float64)
    bad = z.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(MalleabilityError, match="finite"):
        empirical_ntk(bad, z, W)
    with pytest.raises(MalleabilityError, match="finite"):
        empirical_ntk(z, z, W * float("inf"))


def test_benchmark_reports_all_ratios_and_old_aliases():
    from malleability.empirics.ntk_bench import benchmark_ntk

    res = benchmark_ntk(40, 8, 32, repeats=1, neural_tangents=False)
    assert res["speedup_vs_reference"] == res["speedup"] > 0
    assert res["ratio_to_floor"] == res["closed_form_over_floor"] > 0
    assert res["speedup_vs_neural_tangents"] is None and res["neural_tangents_reason"]
    assert res["max_rel_diff"] < 1e-12
    assert res["floor_flops"]["pattern_gram"] == 40 * 41 * 32
    backends = res["floor_backends"]
    assert backends["pattern_gram"] in ("torch int8, half", "torch float32, half", "numpy float32 syrk")
    assert backends["z_gram"] in ("torch gemm, half", "numpy syrk")
    assert backends["pattern"].split()[0] in ("torch", "numpy")
    assert 0 < res["matmul_floor_s"] and all(v > 0 for v in res["floor_gflops_rates"].values())
    assert res["max_rel_error"] < 1e-14 and res["reference_max_rel_error"] < 1e-12 and res["oracle_rows"] == 40


@pytest.mark.parametrize("n1, n2", [(1, 1), (1, 9), (9, 1), (2, 2)])
def test_integer_pattern_gram_with_a_single_row(n1, n2):
    # torch's int8 GEMM returned wrong counts for one-row operands: those shapes must not take it
    z1, z2 = rows(n1, 5, 3), rows(n2, 5, 4)
    W = torch.randn(16, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(empirical_ntk(z1, z2, W), empirical_ntk_reference(z1, z2, W), rtol=0, atol=1e-14)


def test_exact_oracle_catches_an_error_of_one_rounding_unit_in_a_thousand():
    from malleability.empirics.ntk_bench import _max_rel_error, exact_ntk_rows

    z, W = rows(12, 7, 1), torch.randn(20, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    K = empirical_ntk(z, z, W)
    oracle = exact_ntk_rows(z, W, 12)
    assert _max_rel_error(K, oracle) < 1e-15
    top = divmod(int(K.abs().argmax()), K.shape[1])
    K[top] *= 1 + 1e-13
    assert _max_rel_error(K, oracle) > 5e-14


@pytest.mark.parametrize("b,leaf", [(2, 2), (3, 2), (9, 2), (130, 128), (300, 128), (257, 16), (64, 1000)])
@pytest.mark.parametrize("int8", [True, False])
def test_symmetric_counts_equal_the_exact_integer_gram(monkeypatch, b, leaf, int8):
    # the halving recursion (cross blocks copied transposed, leaf squares direct) must fill every entry
    import malleability.empirics.ntk as ntk_module

    if int8:
        try:
            torch._int_mm(torch.ones(2, 8, dtype=torch.int8), torch.ones(8, 2, dtype=torch.int8))
        except (RuntimeError, AttributeError):
            pytest.skip("no int8 GEMM in this torch")
    monkeypatch.setattr(ntk_module, "_INT_MM", int8)
    S = (torch.rand(b, 40, generator=torch.Generator().manual_seed(b)) > 0.4).to(torch.int8)
    counts = ntk_module._sym_counts(S, leaf=leaf)
    exact = S.long() @ S.long().T
    assert torch.equal(counts.long(), exact)
    assert torch.equal(counts, counts.T)


def test_int8_and_float32_counts_give_the_same_kernel_bitwise(monkeypatch):
    # which one runs is decided by a speed probe on each machine: both must be the same numbers
    import malleability.empirics.ntk as ntk_module

    try:
        torch._int_mm(torch.ones(2, 8, dtype=torch.int8), torch.ones(8, 2, dtype=torch.int8))
    except (RuntimeError, AttributeError):
        pytest.skip("no int8 GEMM in this torch")
    z, W = rows(70, 9, 3), torch.randn(40, 9, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    z2 = rows(33, 9, 4)
    out = {}
    for flag in (True, False):
        monkeypatch.setattr(ntk_module, "_INT_MM", flag)
        out[flag] = (empirical_ntk(z, z, W, chunk_size=16), empirical_ntk(z, z2, W, chunk_size=16))
    assert all(torch.equal(a, b) for a, b in zip(out[True], out[False]))
    assert torch.allclose(out[True][1], empirical_ntk_reference(z, z2, W), rtol=0, atol=1e-13)


@pytest.mark.parametrize("n,m,chunk", [(64, 96, 1024), (50, 33, 7), (17, 5, 3)])
def test_screened_pattern_equals_the_float64_pattern_on_near_zero_pre_activations(n, m, chunk):
    # W rows built nearly orthogonal to z rows: many |w·z| below the float32 screen's bound, so the
    # sampled float64 recheck decides them (and, past 1/16 of a chunk, the whole float64 product)
    from malleability.empirics.ntk_pattern import _finite_row_norms, _pattern_int8, _unit_rows_f32, screen_bound

    g = torch.Generator().manual_seed(n * m)
    z = rows(n, 784, n + m)
    W = torch.randn(m, 784, generator=g, dtype=torch.float64)
    tilt = torch.randn(m, generator=g, dtype=torch.float64) * 1e-10
    for r in range(m):  # w = v - (v·z_j) z_j + tiny·z_j: w·z_j is far below float32's rounding of it
        j = r % n
        W[r] = W[r] - (W[r] @ z[j]) * z[j] + tilt[r] * z[j]
    exact = (z @ W.T > 0).to(torch.int8)
    zs, Ws = _unit_rows_f32(z, _finite_row_norms(z)), _unit_rows_f32(W, _finite_row_norms(W))
    near = int(((Ws @ zs.T).abs() <= screen_bound(784)).sum())
    assert near >= m  # the recheck is exercised
    assert torch.equal(_pattern_int8(z, W, chunk, zs=zs, Ws=Ws), exact)
    # the screen without its recheck would get some of them wrong: the test can fail
    assert not torch.equal(((zs @ Ws.T) > 0).to(torch.int8), exact)
    S = exact.double()
    K = empirical_ntk(z, z, W, chunk_size=chunk)
    # the z Grams may sum in different orders (tiles vs one product): each within d·eps of exact
    # for unit rows, while one wrong pattern bit moves an entry by |z_i·z_j|/m (about 1e-3 here)
    assert float((K - (z @ z.T) * (S @ S.T) / m).abs().max()) <= 2 * 784 * torch.finfo(torch.float64).eps


@pytest.mark.parametrize("size", [0, 1, 7, 8, 64, 1001, 4096])
def test_flat_nonzero_equals_nonzero(size):
    from malleability.empirics.ntk_pattern import _flat_nonzero

    g = torch.Generator().manual_seed(size)
    for density in (0.0, 0.003, 0.5, 1.0):
        mask = torch.rand(size, generator=g) < density
        assert torch.equal(_flat_nonzero(mask), mask.nonzero().view(-1))
        if size >= 64 and size % 8 == 0:
            grid = mask.view(8, -1)
            assert torch.equal(_flat_nonzero(grid), grid.reshape(-1).nonzero().view(-1))
            assert torch.equal(_flat_nonzero(grid[:, 1:]), grid[:, 1:].reshape(-1).nonzero().view(-1))


def test_recheck_without_sampled_products_gathers_the_rows(monkeypatch):
    # a backend without torch.sparse.sampled_addmm falls back to gathered dot products: same pattern
    from malleability.empirics.ntk_pattern import _exact_dot_signs_sampled

    z = rows(40, 30, 1)
    W = torch.randn(50, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    flat = torch.randperm(40 * 50, generator=torch.Generator().manual_seed(3))[:300].sort().values
    i, r = flat // 50, flat % 50  # sorted by (i, r)
    exact = (z @ W.T > 0)[i, r]
    assert torch.equal(_exact_dot_signs_sampled(z, W, i, r), exact)

    def unavailable(*_a, **_k):
        raise NotImplementedError("no SDDMM here")

    monkeypatch.setattr(torch.sparse, "sampled_addmm", unavailable)
    assert torch.equal(_exact_dot_signs_sampled(z, W, i, r), exact)


def test_pattern_counts_off_the_cpu_take_the_float32_product(monkeypatch):
    # CUDA's int8 GEMM refuses sizes that are not multiples of 8 (a 250-row tile of n = 1000)
    import malleability.empirics.ntk as ntk_mod

    def refuse(*args):
        raise AssertionError("torch._int_mm called off the CPU")

    monkeypatch.setattr(torch, "_int_mm", refuse)
    S1 = torch.zeros(250, 4096, dtype=torch.int8, device="meta")
    out = ntk_mod._count_gram(S1, torch.zeros(4096, 250, dtype=torch.int8, device="meta"))
    assert out.dtype == torch.float32 and out.shape == (250, 250)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_kernel_equals_the_cpu_kernel_on_tiles_that_are_not_multiples_of_8():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(250, 30, generator=gen, dtype=torch.float64)
    W = torch.randn(64, 30, generator=gen, dtype=torch.float64)
    cpu = empirical_ntk(z, z, W, chunk_size=100)
    gpu = empirical_ntk(z.cuda(), z.cuda(), W.cuda(), chunk_size=100).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-12, atol=1e-12)


def test_the_screen_bound_is_gamma_d_plus_8_with_its_margin():
    from malleability.empirics.ntk_pattern import screen_bound

    u = 2.0**-24
    k = 792 * u
    assert screen_bound(784) == pytest.approx(1.01 * k / (1 - k), rel=1e-12)
    assert screen_bound(784) > 784 * u  # at least the accumulation error of a length-784 dot product
    assert screen_bound(2**23) == float("inf")  # γ undefined: every entry rechecked


def test_bench_of_a_kernel_that_is_all_zero_reports_differences_not_nan():
    # m = 1 with its one unit inactive on the one row: K_ref = 0, and a relative difference would be 0/0
    import math

    from malleability.empirics.ntk_bench import _relative, benchmark_ntk

    assert _relative(0.0, 0.0) == 0.0 and _relative(1e-3, 0.0) == 1e-3 and _relative(1.0, 4.0) == 0.25
    res = benchmark_ntk(1, 1, 1, "float64", repeats=1, neural_tangents=False)
    for key in ("max_rel_diff", "max_rel_error", "reference_max_rel_error"):
        assert math.isfinite(res[key]), (key, res[key])
