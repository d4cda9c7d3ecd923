"""NTK influence: exact leave-one-out (LOO) change of the test loss of kernel ridge regression.

Following Zhang & Zhang 2022 (arXiv 2112.08297), the trained network is replaced by kernel
ridge regression (KRR) with its empirical NTK ``K`` (n x n, training x training):

    f_D(x) = k(x, X)^T alpha,    alpha = H Y,    H = (K + lam I)^{-1},

with ``Y`` the (n, K) targets (one-hot for multi-class, +-1 in one column for binary).

Closed-form leave-one-out (no refit)
------------------------------------
Write the training indices as {i} and R = the rest. By the block-inverse (Schur complement)
identity, the inverse of the kernel without point i is

    (K_RR + lam I)^{-1} = H_RR - H_Ri H_iR / H_ii .

Since alpha_R = H_RR Y_R + H_Ri Y_i and alpha_i = H_iR Y_R + H_ii Y_i,

    alpha^{(-i)}_R = H_RR Y_R - H_Ri (alpha_i - H_ii Y_i) / H_ii = alpha_R - H_Ri alpha_i / H_ii .

The same formula at index i gives alpha_i - H_ii alpha_i / H_ii = 0, so the full-length vector
alpha - H[:, i] alpha_i / H_ii *is* the LOO coefficient vector padded with a zero at i, and the
LOO prediction at a test point t is

    f_{-i}(x_t) = f(x_t) - B[t, i] alpha_i / H_ii,      B = K_test H   (n_test, n).

Influence and its sign
----------------------
The test loss is the squared error of the KRR predictor, ``L_t(f) = 1/2 ||f(x_t) - y_t||^2``
summed over the outputs. The influence of training point i on test point t is

    I[t, i] = L_t(f_{-i}) - L_t(f)          (sign convention: POSITIVE = removing i RAISES the
                                             test loss, i.e. point i is helpful)

and with r_t = f(x_t) - y_t, Delta = -B[t, i] alpha_i / H_ii:

    I[t, i] = r_t . Delta + 1/2 ||Delta||^2 .

The aggregate influence is the sum over the test set, ``I[i] = sum_t I[t, i]``. Everything is
exact (no first-order approximation); tests check it against brute-force refits
(:func:`loo_influence_bruteforce`) in float64.

Numerics: one Cholesky factorisation of K + lam I; ``alpha`` and ``B`` come from triangular
solves; ``diag(H)`` from the column norms of L^{-1} (the one triangular inverse we need).
Cost O(n^3 + n^2 n_test), against O(n^4) for n refits.

Multi-output NTK: for the paper's network f_k(z) = m^{-1/2} sum_r a_rk relu(w_r . z) with
fixed a_rk in {-1, +1}, the per-output (diagonal) NTK blocks are identical because a_rk^2 = 1;
the cross-output blocks sum a_rk a_rl over units and vanish in expectation over the random
signs (and at infinite width). We use the reading ``block-diagonal``: one kernel K shared by all
outputs, i.e. K (x) I_K, which is what :func:`malleability.empirics.ntk.empirical_ntk` with
``a=None`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from malleability.errors import MalleabilityError, require
from malleability.validation import as_finite_matrix

SIGN_CONVENTION = "positive = removing the training point raises the test loss (the point is helpful)"
TEST_LOSS = "half squared error 1/2 ||f(x) - y||^2 of the KRR predictor, summed over outputs"
MULTI_OUTPUT_READING = "block-diagonal: one empirical NTK block shared by all outputs (a_rk^2 = 1)"


@dataclass(frozen=True)
class InfluenceResult:
    """Exact LOO influences of every training point on every test point (float64 numpy arrays)."""

    per_test: np.ndarray  # (n_test, n): I[t, i] = L_t(f_{-i}) - L_t(f)
    total: np.ndarray  # (n,): sum over the test set
    test_loss: np.ndarray  # (n_test,): L_t(f) of the full KRR fit
    alpha: np.ndarray  # (n, K) dual coefficients
    lam: float
    predictions: np.ndarray | None = None  # (n_test, K): the full KRR fit on the test points

    def to_json(self) -> dict:
        return {
            "total": self.total.tolist(),
            "mean_test_loss": float(self.test_loss.mean()),
            "lam": self.lam,
            "sign_convention": SIGN_CONVENTION,
            "test_loss": TEST_LOSS,
        }


def _as_targets(y, n: int, name: str) -> np.ndarray:
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    arr = as_finite_matrix(arr, name)
    require(arr.shape[0] == n, f"{name} has {arr.shape[0]} rows, expected {n}")
    return arr


def _check_inputs(K, K_test, Y, Y_test, lam):
    K = as_finite_matrix(K, "K (train x train kernel)")
    n = K.shape[0]
    require(K.shape == (n, n), f"K must be square, got shape {K.shape}")
    require(n >= 2, f"leave-one-out needs at least 2 training points, got {n}")
    # A kernel computed in float32 is symmetric only up to rounding: accept that, then symmetrise.
    asym = float(np.max(np.abs(K - K.T)))
    require(asym <= 1e-5 * max(1.0, float(np.max(np.abs(K)))), f"K must be symmetric (max |K - K^T| = {asym:.3g})")
    K = 0.5 * (K + K.T)
    K_test = as_finite_matrix(K_test, "K_test (test x train kernel)")
    require(K_test.shape[1] == n, f"K_test must have {n} columns (one per training point), got shape {K_test.shape}")
    Y = _as_targets(Y, n, "Y (training targets)")
    Y_test = _as_targets(Y_test, K_test.shape[0], "Y_test (test targets)")
    require(Y.shape[1] == Y_test.shape[1], f"Y has {Y.shape[1]} outputs but Y_test has {Y_test.shape[1]}")
    require(np.isfinite(lam) and lam > 0, f"lam must be a positive finite number, got {lam}")
    return K, K_test, Y, Y_test, float(lam)


def loo_influence(K, K_test, Y, Y_test, lam: float = 1e-3) -> InfluenceResult:
    """Exact LOO influence of each training point on each test point, from one Cholesky factorisation.

    Args:
        K: (n, n) symmetric positive semi-definite training kernel (the empirical NTK).
        K_test: (n_test, n) kernel between test and training points.
        Y: (n,) or (n, K) training targets; Y_test: (n_test,) or (n_test, K) test targets.
        lam: ridge lam > 0 (default 1e-3).

    Returns:
        :class:`InfluenceResult`; sign convention: positive = removing i raises the test loss.
    """
    K, K_test, Y, Y_test, lam = _check_inputs(K, K_test, Y, Y_test, lam)
    n = K.shape[0]
    A = K + lam * np.eye(n)
    L, info = scipy.linalg.lapack.dpotrf(A, lower=1, clean=1)
    if info != 0:
        raise MalleabilityError(f"K + lam I is not positive definite (lam={lam}); is K a PSD kernel?")
    # L^{-1} (lower; the zero upper triangle of L stays zero): diag(H) = column norms^2 of
    # L^{-1}, since H = L^{-T} L^{-1}.
    L_inv, info = scipy.linalg.lapack.dtrtri(L, lower=1)
    require(info == 0, f"triangular inverse failed (LAPACK info={info})")
    h_diag = np.einsum("ij,ij->j", L_inv, L_inv)
    alpha = L_inv.T @ (L_inv @ Y)  # H Y
    B = (K_test @ L_inv.T) @ L_inv  # K_test H, (n_test, n)
    residual = K_test @ alpha - Y_test  # (n_test, K)
    scale = B / h_diag[None, :]  # Delta[t, i, :] = -scale[t, i] * alpha[i, :]
    cross = residual @ alpha.T  # r_t . alpha_i
    alpha_sq = np.einsum("ik,ik->i", alpha, alpha)
    per_test = -scale * cross + 0.5 * scale**2 * alpha_sq[None, :]
    test_loss = 0.5 * np.einsum("tk,tk->t", residual, residual)
    return InfluenceResult(per_test=per_test, total=per_test.sum(axis=0), test_loss=test_loss, alpha=alpha, lam=lam,
                           predictions=residual + Y_test)


def loo_influence_bruteforce(K, K_test, Y, Y_test, lam: float = 1e-3) -> InfluenceResult:
    """The exact oracle: n refits of KRR, each without one training point (O(n^4)). For tests and benchmarks."""
    K, K_test, Y, Y_test, lam = _check_inputs(K, K_test, Y, Y_test, lam)
    n = K.shape[0]

    def fit_loss(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        A = K[np.ix_(keep, keep)] + lam * np.eye(keep.size)
        factor = scipy.linalg.cho_factor(A, lower=True, check_finite=False)
        coef = scipy.linalg.cho_solve(factor, Y[keep], check_finite=False)
        residual = K_test[:, keep] @ coef - Y_test
        return 0.5 * np.einsum("tk,tk->t", residual, residual), coef

    everything = np.arange(n)
    full_loss, alpha = fit_loss(everything)
    per_test = np.empty((K_test.shape[0], n))
    for i in range(n):
        loss_i, _ = fit_loss(np.delete(everything, i))
        per_test[:, i] = loss_i - full_loss
    return InfluenceResult(per_test=per_test, total=per_test.sum(axis=0), test_loss=full_loss, alpha=alpha, lam=lam)


def regression_targets(labels, num_outputs: int) -> np.ndarray:
    """KRR targets from integer labels: one-hot (n, K) for K > 1 outputs, +-1 in one column for K = 1.

    The +-1 encoding matches the binary MSE training loss (label 1 -> +1, label 0 -> -1).
    """
    labels = np.asarray(labels)
    require(labels.ndim == 1 and labels.size > 0, "labels must be a non-empty 1-D array")
    require(np.issubdtype(labels.dtype, np.integer), f"labels must be integers, got dtype {labels.dtype}")
    if num_outputs == 1:
        require(set(np.unique(labels).tolist()) <= {0, 1}, "binary targets need labels in {0, 1}")
        return (2.0 * labels - 1.0)[:, None]
    require(labels.min() >= 0 and labels.max() < num_outputs, f"labels must lie in 0..{num_outputs - 1}")
    return np.eye(num_outputs)[labels]


def benchmark_loo(n: int = 500, n_test: int = 100, outputs: int = 10, *, d: int = 64, lam: float = 1e-3,
                  seed: int = 0, repeats: int = 5) -> dict:
    """Closed-form LOO against brute-force refits on the same kernel, in this process.

    The kernel is the infinite-width ReLU NTK of ``n + n_test`` random unit rows in R^d (a
    genuine, full-rank PSD kernel like the empirical NTKs we use). The closed form is timed as
    the best of ``repeats`` runs; the n refits once. ``max_rel_diff`` = max |fast - brute| over
    all (test, train) influences divided by max |brute|; ``max_rel_diff_total`` the same for the
    influences summed over the test set.
    """
    import time

    require(int(n) >= 2, f"n must be >= 2, got {n}")
    require(int(n_test) >= 1, f"n_test must be >= 1, got {n_test}")
    require(int(outputs) >= 1, f"outputs must be >= 1, got {outputs}")
    require(int(repeats) >= 1, f"repeats must be >= 1, got {repeats}")
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n + n_test, d))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    g = np.clip(z @ z.T, -1.0, 1.0)
    K_all = g * (np.pi - np.arccos(g)) / (2 * np.pi)
    labels = rng.integers(0, max(int(outputs), 2), size=n + n_test)
    Y_all = regression_targets(labels, int(outputs))
    args = (K_all[:n, :n], K_all[n:, :n], Y_all[:n], Y_all[n:], lam)
    fast_s = float("inf")
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        fast = loo_influence(*args)
        fast_s = min(fast_s, time.perf_counter() - t0)
    t0 = time.perf_counter()
    brute = loo_influence_bruteforce(*args)
    brute_s = time.perf_counter() - t0
    return {
        "n": int(n),
        "n_test": int(n_test),
        "outputs": int(outputs),
        "d": int(d),
        "lam": float(lam),
        "seed": int(seed),
        "closed_form_s": fast_s,
        "bruteforce_s": brute_s,
        "speedup": brute_s / fast_s,
        "max_rel_diff": float(np.abs(fast.per_test - brute.per_test).max() / np.abs(brute.per_test).max()),
        "max_rel_diff_total": float(np.abs(fast.total - brute.total).max() / np.abs(brute.total).max()),
        "targets": {"speedup_min_at_n500": 100.0, "max_rel_diff_max": 1e-8},
        "dtype": "float64",
    }
