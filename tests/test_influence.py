"""Exact closed-form leave-one-out influence of NTK kernel ridge regression, against brute-force refits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from malleability.empirics.influence import (
    loo_influence,
    loo_influence_bruteforce,
    regression_targets,
)
from malleability.errors import MalleabilityError


def arccos_kernel(z1, z2):
    """Infinite-width first-layer ReLU NTK on unit rows: a genuine PSD kernel."""
    g = np.clip(z1 @ z2.T, -1.0, 1.0)
    return g * (np.pi - np.arccos(g)) / (2 * np.pi)


def problem(seed: int, n: int, n_test: int, outputs: int, d: int = 6):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n + n_test, d))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    labels = rng.integers(0, max(outputs, 2), size=n + n_test)
    y = regression_targets(labels, outputs)
    K_all = arccos_kernel(z, z)
    return K_all[:n, :n], K_all[n:, :n], y[:n], y[n:]


@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(2, 14),
    n_test=st.integers(1, 5),
    outputs=st.sampled_from([1, 2, 3]),
    lam=st.sampled_from([1e-3, 1e-2, 0.5]),
)
def test_closed_form_equals_bruteforce_refits(seed, n, n_test, outputs, lam):
    K, K_test, Y, Y_test = problem(seed, n, n_test, outputs)
    fast = loo_influence(K, K_test, Y, Y_test, lam)
    slow = loo_influence_bruteforce(K, K_test, Y, Y_test, lam)
    scale = max(np.abs(slow.per_test).max(), 1e-300)
    assert np.abs(fast.per_test - slow.per_test).max() <= 1e-8 * scale + 1e-13
    np.testing.assert_allclose(fast.total, fast.per_test.sum(axis=0))
    np.testing.assert_allclose(fast.test_loss, slow.test_loss, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(fast.alpha, slow.alpha, rtol=1e-7, atol=1e-9)


def test_loo_coefficient_identity():
    """alpha_{-i} = alpha - H[:, i] alpha_i / H_ii restricted to the others, and its i-th entry is 0."""
    K, _, Y, _ = problem(3, 9, 1, 2)
    lam = 1e-2
    H = np.linalg.inv(K + lam * np.eye(9))
    alpha = H @ Y
    for i in range(9):
        keep = np.delete(np.arange(9), i)
        refit = np.linalg.solve(K[np.ix_(keep, keep)] + lam * np.eye(8), Y[keep])
        formula = alpha - np.outer(H[:, i], alpha[i]) / H[i, i]
        np.testing.assert_allclose(formula[keep], refit, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(formula[i], 0.0, atol=1e-12)


def test_bench_size_matches_bruteforce_on_a_larger_problem():
    K, K_test, Y, Y_test = problem(11, 120, 20, 10, d=30)
    fast = loo_influence(K, K_test, Y, Y_test)
    slow = loo_influence_bruteforce(K, K_test, Y, Y_test)
    assert np.abs(fast.per_test - slow.per_test).max() <= 1e-8 * np.abs(slow.per_test).max()


def test_sign_convention_helpful_point_is_positive():
    """Linear kernel on orthonormal points; the test point IS training point 0 with its label.

    Removing point 0 leaves the test point unexplained (loss rises: positive influence);
    point 1 is orthogonal to the test point (influence exactly 0).
    """
    X = np.eye(3)[:2]
    K = X @ X.T
    K_test = np.eye(3)[:1] @ X.T
    Y = np.array([[1.0], [-1.0]])
    Y_test = np.array([[1.0]])
    lam = 1e-3
    res = loo_influence(K, K_test, Y, Y_test, lam)
    # Full fit: f(test) = 1 / (1 + lam); without point 0: f = 0.
    full = 0.5 * (1 / (1 + lam) - 1) ** 2
    assert res.total[0] == pytest.approx(0.5 - full, rel=1e-12)
    assert res.total[0] > 0
    assert res.total[1] == pytest.approx(0.0, abs=1e-15)


def test_harmful_point_is_negative():
    """A mislabelled duplicate of the test point hurts: removing it lowers the test loss."""
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    K = x @ x.T
    Y = np.array([[1.0], [-1.0], [1.0]])  # point 1 duplicates point 0 with the wrong sign
    res = loo_influence(K, np.array([[1.0, 0.0]]) @ x.T, Y, np.array([[1.0]]), 1e-3)
    assert res.total[1] < 0 < res.total[0]


def test_float32_kernel_that_is_symmetric_up_to_rounding_is_accepted():
    K, K_test, Y, Y_test = problem(5, 10, 3, 1)
    K32 = K.astype(np.float32).astype(np.float64)
    K32[0, 1] += 1e-8
    res = loo_influence(K32, K_test, Y, Y_test)
    assert np.all(np.isfinite(res.total))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda K, Kt, Y, Yt, lam: (K[:, :-1], Kt, Y, Yt, lam), "square"),
        (lambda K, Kt, Y, Yt, lam: (np.where(np.eye(len(K)) > 0, np.nan, K), Kt, Y, Yt, lam), "NaN"),
        (lambda K, Kt, Y, Yt, lam: (K, Kt, Y, Yt, 0.0), "lam"),
        (lambda K, Kt, Y, Yt, lam: (K, Kt, Y, Yt, -1.0), "lam"),
        (lambda K, Kt, Y, Yt, lam: (K, Kt[:, :-1], Y, Yt, lam), "columns"),
        (lambda K, Kt, Y, Yt, lam: (K, Kt, Y[:-1], Yt, lam), "rows"),
        (lambda K, Kt, Y, Yt, lam: (K, Kt, Y, np.hstack([Yt, Yt]), lam), "outputs"),
        (lambda K, Kt, Y, Yt, lam: (K + np.triu(np.ones_like(K), 1), Kt, Y, Yt, lam), "symmetric"),
        (lambda K, Kt, Y, Yt, lam: (K - 10 * np.eye(len(K)), Kt, Y, Yt, lam), "positive definite"),
        (lambda K, Kt, Y, Yt, lam: (K[:1, :1], Kt[:, :1], Y[:1], Yt, lam), "at least 2"),
    ],
)
def test_bad_inputs(mutate, match):
    args = mutate(*problem(0, 6, 2, 1), 1e-3)
    with pytest.raises(MalleabilityError, match=match):
        loo_influence(*args)


def test_regression_targets():
    np.testing.assert_array_equal(regression_targets(np.array([0, 1, 1]), 1), [[-1.0], [1.0], [1.0]])
    np.testing.assert_array_equal(regression_targets(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(MalleabilityError):
        regression_targets(np.array([0, 3]), 3)
    with pytest.raises(MalleabilityError):
        regression_targets(np.array([0, 2]), 1)
