"""Condition numbers against mpmath at high precision; the precision escalation; the kernels' κ."""

import math

import mpmath
import numpy as np
import pytest

from malleability.errors import MalleabilityError
from malleability.properties import generators as gen
from malleability.theory.conditioning import condition_numbers, mp_singular_values, rank_tolerance
from malleability.theory.kernels import kernel_kappas, ntk_inf_from_cosines, normalised_features


def mp_reference(x, p, dps=80):
    """κ₂(G^p) by forming G^p exactly in mpmath and taking its eigenvalues (independent path)."""
    with mpmath.workdps(dps):
        xm = mpmath.matrix(x.tolist())
        g = xm * xm.T
        gp = g**p
        w = mpmath.eigsy(gp, eigvals_only=True)
        w = [abs(w[i]) for i in range(len(w))]
        return max(w) / min(w)


def rel(a, b):
    return abs(mpmath.mpf(a) - b) / abs(b)


@pytest.mark.parametrize("kappa_x", [1.0, 3.0, 1e2, 1e4])
def test_kappa_matches_mpmath_to_6_digits(kappa_x):
    x = gen.conditioned_matrix(np.random.default_rng(1), n=4, d=6, kappa_x=kappa_x)
    c = condition_numbers(x)
    for p, key in ((1, "kappa_G"), (3, "kappa_G3")):
        assert rel(c[key], mp_reference(x, p)) < 1e-6
    assert c["rank"] == 4 and c["kappa_G"] == c["pseudo_kappa_G"] == c["kappa_d"]


def test_escalation_on_kappa_power_beyond_float64():
    # κ(X) = 1e9: κ(G³) = 1e54. The float64 SVD cannot resolve s_min to 6 digits → mpmath.
    x = gen.conditioned_matrix(np.random.default_rng(2), n=5, d=5, kappa_x=1e9)
    c = condition_numbers(x)
    assert c["precision"].startswith("mpmath-")
    digits = int(c["precision"].split("-")[1])
    # digits for the relative error of (s_1/s_r)^6, not for the size of κ³: log10(2·3·κ(X)) + 20
    assert digits >= math.log10(6 * math.sqrt(float(c["kappa_G"]))) + 20
    ref1, ref3 = mp_reference(x, 1, 200), mp_reference(x, 3, 200)
    assert ref3 > 1e16
    assert rel(c["kappa_G"], ref1) < 1e-6 and rel(c["kappa_G3"], ref3) < 1e-6
    # the naive float64 answer (κ of the formed G³) is wrong by orders of magnitude
    g = x @ x.T
    naive = np.linalg.cond(g @ g @ g)
    assert not (0.1 < naive / float(ref3) < 10)


def test_float64_suffices_when_error_bound_is_small_even_beyond_1e16():
    x = gen.conditioned_matrix(np.random.default_rng(3), n=6, d=6, kappa_x=1e4)  # κ(G³) = 1e24
    c = condition_numbers(x)
    assert c["precision"] == "float64"
    ref3 = mp_reference(x, 3, 120)
    assert ref3 > 1e16 and rel(c["kappa_G3"], ref3) < 1e-6


def test_large_powers_print_as_strings_beyond_float_range():
    # κ(X) = 1e12 is above the rank tolerance 1/(3·eps); κ(G^27) = 1e648 overflows float64
    x = gen.conditioned_matrix(np.random.default_rng(4), n=3, d=3, kappa_x=1e12)
    c = condition_numbers(x, powers=(1, 27))
    assert c["precision"].startswith("mpmath-")
    assert isinstance(c["kappa_G27"], str) and "e+" in c["kappa_G27"]
    ref = mpmath.mpf(c["kappa_G"]) ** 27
    assert rel(mpmath.mpf(c["kappa_G27"]), ref) < 1e-6 and 640 <= int(c["kappa_G27"].split("e+")[1]) <= 655


def test_singular_gram_pseudo_and_truncated():
    x = gen.conditioned_matrix(np.random.default_rng(5), n=7, d=3, kappa_x=10.0)
    c = condition_numbers(x)
    assert c["kappa_G"] is None and c["kappa_G3"] is None
    assert rel(c["pseudo_kappa_G"], mpmath.mpf(100)) < 1e-9
    assert rel(c["pseudo_kappa_G3"], mpmath.mpf(1e6)) < 1e-8
    assert c["kappa_d"] == c["pseudo_kappa_G"]
    assert any("singular" in w for w in c["warnings"])


def test_rank_deficient_kappa_d_null_and_tolerance_documented():
    x = gen.conditioned_matrix(np.random.default_rng(6), n=6, d=5, kappa_x=10.0, rank=3)
    c = condition_numbers(x)
    assert c["rank"] == 3 and c["kappa_d"] is None and c["pseudo_kappa_G"] is not None
    s = np.linalg.svd(x, compute_uv=False)
    assert c["rank_tolerance"] == rank_tolerance(6, 5, s[0])


def test_mp_singular_values_agree_with_float64_on_easy_matrix():
    x = np.random.default_rng(7).standard_normal((5, 3))
    s = np.linalg.svd(x, compute_uv=False)
    sm = mp_singular_values(x, 40)
    assert np.allclose([float(v) for v in sm], s, rtol=1e-13)


def test_bad_input():
    with pytest.raises(MalleabilityError):
        condition_numbers(np.array([[np.nan, 1.0]]))
    with pytest.raises(MalleabilityError):
        condition_numbers(np.zeros((2, 2)))


def test_ntk_formula_against_monte_carlo():
    rng = np.random.default_rng(8)
    z = rng.standard_normal((3, 4))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    w = rng.standard_normal((400_000, 4))
    act = (z @ w.T > 0).astype(float)
    mc = act @ act.T / w.shape[0] * (z @ z.T)
    assert np.abs(mc - ntk_inf_from_cosines(z @ z.T)).max() < 5e-3


def test_normalised_kernel_kappa_against_mpmath():
    x = gen.conditioned_matrix(np.random.default_rng(9), n=4, d=5, kappa_x=5.0)
    kk = kernel_kappas(x)
    z = normalised_features(x)
    with mpmath.workdps(50):
        from malleability.theory.kernels import mp_normalised_kernel

        k = mp_normalised_kernel(x, 50)
        w = mpmath.eigsy(k, eigvals_only=True)
        ref = max(abs(w[i]) for i in range(4)) / min(abs(w[i]) for i in range(4))
    assert rel(kk["kappa_K_norm"], ref) < 1e-6
    assert np.allclose(np.diag(z @ z.T), 1.0)


def test_normalised_kernel_escalates_when_ill_conditioned():
    x = gen.conditioned_matrix(np.random.default_rng(10), n=4, d=4, kappa_x=1e4)
    kk = kernel_kappas(x)
    assert kk["precision"].startswith("mpmath-")
    from malleability.theory.kernels import mp_normalised_kernel

    with mpmath.workdps(120):
        k = mp_normalised_kernel(x, 120)
        w = mpmath.eigsy(k, eigvals_only=True)
        ref = max(abs(w[i]) for i in range(4)) / min(abs(w[i]) for i in range(4))
    assert ref > 1e16 and rel(kk["kappa_K_norm"], ref) < 1e-6


def test_inspect_escalates_and_every_kappa_matches_mpmath():
    from malleability.theory import inspect_matrix

    x = gen.conditioned_matrix(np.random.default_rng(11), n=4, d=5, kappa_x=1e7)
    out = inspect_matrix(x, layers=2, recursion="ccc")
    assert out["precision"].startswith("mpmath-")
    assert rel(out["kappa_G"], mp_reference(x, 1, 200)) < 1e-6
    assert rel(out["kappa_G3"], mp_reference(x, 3, 300)) < 1e-6
    k2 = out["layers"][1]
    assert k2["k"] == 2 and k2["exponent"] == pytest.approx(9, rel=1e-9)
    assert rel(k2["kappa"], mp_reference(x, 9, 600)) < 1e-6


def test_real_mnist_rows(data_root):
    from malleability.theory import inspect_matrix

    path = data_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    if not path.exists():
        pytest.skip(f"no {path}")
    with open(path, "rb") as fh:
        fh.seek(16)
        raw = np.frombuffer(fh.read(120 * 784), dtype=np.uint8)
    x = raw.reshape(120, 784).astype(float) / 255.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = inspect_matrix(x, layers=1, recursion="ccc")
    s = np.linalg.svd(x, compute_uv=False)
    assert out["rank"] == 120 and out["precision"] == "float64"
    assert out["kappa_G"] == pytest.approx((s[0] / s[-1]) ** 2, rel=1e-9)
    assert out["kappa_G3"] == pytest.approx(out["kappa_G"] ** 3, rel=1e-9)
    assert out["kappa_K_norm"] is not None and out["kappa_ntk_inf"] is not None


def test_real_mnist_normalised_kernel_float64_against_mpmath(data_root):
    from malleability.theory.kernels import mp_normalised_kernel

    path = data_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    if not path.exists():
        pytest.skip(f"no {path}")
    x = np.fromfile(path, dtype=np.uint8, offset=16, count=12 * 784).reshape(12, 784) / 255.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kk = kernel_kappas(x, allow_mpmath=False)
    with mpmath.workdps(40):
        k = mp_normalised_kernel(x, 40)
        w = mpmath.eigsy(k, eigvals_only=True)
        ref = max(abs(w[i]) for i in range(12)) / min(abs(w[i]) for i in range(12))
    assert rel(kk["kappa_K_norm"], ref) < 1e-6


def test_without_mpmath_untrustworthy_powers_are_null_not_wrong():
    x = gen.conditioned_matrix(np.random.default_rng(12), n=3, d=3, kappa_x=1e14)
    c = condition_numbers(x, powers=(1, 27), allow_mpmath=False)
    assert c["precision"] == "float64"
    assert c["pseudo_kappa_G27"] is None and any("G^27" in w for w in c["warnings"])
    # κ(G) itself is still within its (reported) bound of the mpmath value
    ref = mp_reference(x, 1, 120)
    assert rel(c["pseudo_kappa_G"], ref) <= 2 * c["singular_value_relative_error"] + 1e-12


def test_k_layer_power_12_in_mpmath_when_float64_cannot_resolve_it():
    from malleability.theory import inspect_matrix

    # κ(X) = 1e3: float64 singular values to ~1e-13 relative, times 2·3^12 ≈ 1e6: not to 1e-8 -> mpmath
    x = gen.conditioned_matrix(np.random.default_rng(13), n=4, d=5, kappa_x=1e3)
    out = inspect_matrix(x, layers=12, recursion="ccc")
    assert out["precision"].startswith("mpmath-")
    row = out["layers"][-1]
    with mpmath.workdps(60):
        s = mpmath.svd_r(mpmath.matrix(x.tolist()), compute_uv=False)
        ref = (max(s) / min(s)) ** (2 * 3**12)
        # a κ beyond float64 is reported as a 7-significant-digit string: agreement to its last digit
        assert abs(mpmath.mpf(row["kappa"]) / ref - 1) < 1e-6
    assert row["rel_error_bound"] < 1e-9 and isinstance(row["kappa"], str)


def test_residual_recursion_at_k_12_against_direct_recursion():
    from malleability.theory import layers as L

    x = gen.conditioned_matrix(np.random.default_rng(14), n=3, d=3, kappa_x=2.0)
    c = condition_numbers(x, keep_singular_values=True)
    out = L.gram_kappas_from_singular_values(c["singular_values"], 3, 3, "ccc+res", 12, dps=60)
    assert out["gram_polynomial"] is None and out["degree"] == 3**12
    with mpmath.workdps(60):  # independent: μ from the matrix recursion on the eigenvalues directly
        lams = [mpmath.mpf(v) ** 2 for v in c["singular_values"]]
        mus = []
        for lam in lams:
            p = mpmath.mpf(1)
            for _ in range(12):
                p = p + lam * p**3
            mus.append(lam * p * p)
        ref = max(mus) / min(mus)
        assert abs(out["kappa"] / ref - 1) < 1e-30


def ntk_kappa_reference(x, dps=40):
    from malleability.theory.kernels import mp_normalised_kernel, mp_ntk_inf_entry

    with mpmath.workdps(dps):
        k = mp_normalised_kernel(x, dps)
        n = k.rows
        t = mpmath.matrix(n, n)
        for i in range(n):
            for j in range(n):
                t[i, j] = mp_ntk_inf_entry(k[i, j])
        w = mpmath.eigsy(t, eigvals_only=True)
        w = [abs(w[i]) for i in range(n)]
        return max(w) / min(w)


@pytest.mark.parametrize("seed", [0, 1])
def test_ntk_kappa_error_bound_covers_the_true_error_on_data_like_rows(seed):
    # non-negative unit rows, like images: cosines near 1, where arccos is ill-conditioned
    x = gen.data_like_matrix(np.random.default_rng(seed), n=16, d=40, sparsity=0.2)
    kk = kernel_kappas(x, allow_mpmath=False)
    true = rel(kk["kappa_ntk_inf"], ntk_kappa_reference(x))
    assert true <= kk["kappa_ntk_inf_rel_error_bound"] < 1e-3


def test_ntk_kappa_error_bound_on_mnist_rows(data_root):
    path = data_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    if not path.exists():
        pytest.skip(f"no {path}")
    x = np.fromfile(path, dtype=np.uint8, offset=16, count=20 * 784).reshape(20, 784) / 255.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kk = kernel_kappas(x, allow_mpmath=False)
    true = rel(kk["kappa_ntk_inf"], ntk_kappa_reference(x))
    assert true <= kk["kappa_ntk_inf_rel_error_bound"]


def test_ntk_of_a_repeated_row_is_singular_but_a_near_repeat_keeps_its_large_kappa():
    """Two equal rows make Θ exactly singular: mpmath shows a rounding-level eigenvalue, whose κ grows with
    the digits, and it is reported as null with a warning. A row 2^-50 away is ill-conditioned but not
    singular: its κ (~1e16, beyond the first precision's trusted range) is kept, stable at more digits."""

    x = np.random.default_rng(0).standard_normal((6, 4))
    twin = kernel_kappas(np.vstack([x, x[:1]]))
    assert twin["kappa_ntk_inf"] is None and any("NTK is singular" in w for w in twin["warnings"])
    near = np.vstack([x, x[:1] + np.array([2.0**-50, 0, 0, 0])])
    out = kernel_kappas(near)
    assert out["kappa_ntk_inf"] is not None and 1e15 < out["kappa_ntk_inf"] < 1e17
    assert not any("NTK is singular" in w for w in out["warnings"])
    assert int(out["precision"].split("-")[1]) > 60  # resolved by the second, longer evaluation
