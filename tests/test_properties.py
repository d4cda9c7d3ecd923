"""The Hypothesis strategies: argument validation, the promised shapes/spectra, and the properties themselves."""

import mpmath
import numpy as np
import pytest
from hypothesis import given

from malleability.errors import MalleabilityError
from malleability.properties import generators as gen
from malleability.properties import strategies as S
from malleability.theory import exact
from malleability.theory.conditioning import condition_numbers


@pytest.mark.parametrize("call", [
    lambda: S.spectrum_matrices(min_n=0),
    lambda: S.spectrum_matrices(min_n=3, max_n=2),
    lambda: S.spectrum_matrices(max_log10_kappa_x=-1.0),
    lambda: S.integer_matrices(max_abs=0),
    lambda: S.data_like_matrices(sparsity=1.0),
    lambda: gen.spectrum_matrix(np.random.default_rng(0), n=2, d=2, singular_values=[1, 2, 3]),
    lambda: gen.conditioned_matrix(np.random.default_rng(0), n=2, d=2, kappa_x=0.5),
    lambda: gen.random_orthonormal(np.random.default_rng(0), rows=2, cols=3),
])
def test_strict_validation(call):
    with pytest.raises(MalleabilityError):
        call()


def test_keyword_only():
    with pytest.raises(TypeError):
        S.spectrum_matrices(1, 3)  # noqa


@given(S.spectrum_matrices(max_n=4, max_d=5, max_log10_kappa_x=4.0))
def test_kappa_cubes_in_2_norm(x):
    """κ₂(G³) = κ₂(G)³: our X-based value against an independent mpmath eigensolve of the formed G³."""
    n, d = x.shape
    c = condition_numbers(x)
    k, k3 = mpmath.mpf(c["pseudo_kappa_G"]), mpmath.mpf(c["pseudo_kappa_G3"])
    assert abs(k3 - k**3) <= 1e-6 * k**3
    if n <= d:
        with mpmath.workdps(80):
            xm = mpmath.matrix(x.tolist())
            g = xm * xm.T
            w = mpmath.eigsy(g * g * g, eigvals_only=True)
            ref = max(abs(w[i]) for i in range(n)) / min(abs(w[i]) for i in range(n))
        assert abs(k3 - ref) <= 1e-6 * ref


@given(S.integer_matrices(max_n=3, max_d=3))
def test_thm41_exact(x):
    xe = exact.to_exact(x)
    g = exact.gram(xe)
    f = exact.matmul(g, xe)
    assert exact.equal(exact.matmul(f, exact.transpose(f)), exact.matpow(g, 3))


@given(S.data_like_matrices())
def test_data_like(x):
    n, d = x.shape
    assert n > d and np.all(x >= 0)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
    assert condition_numbers(x)["kappa_G"] is None  # n > d: G singular


def test_integer_enumeration_smallest_first():
    mats = list(gen.integer_matrices(n=1, d=2, max_abs=1, limit=100))
    assert len(mats) == 9 and not mats[0].any()
    assert [int(np.abs(m).sum()) for m in mats] == sorted(int(np.abs(m).sum()) for m in mats)
