"""Seeded numpy generators shared by the Hypothesis strategies and the CLI's counterexample search.

Every function is keyword-only and validates its arguments strictly (MalleabilityError).
"""

from __future__ import annotations

import itertools

import numpy as np

from malleability.errors import require


def _check_shape(n, d):
    require(isinstance(n, (int, np.integer)) and n >= 1, f"n must be an integer >= 1, got {n!r}")
    require(isinstance(d, (int, np.integer)) and d >= 1, f"d must be an integer >= 1, got {d!r}")


def random_orthonormal(rng: np.random.Generator, *, rows: int, cols: int) -> np.ndarray:
    """rows × cols with orthonormal columns (Haar, via QR with sign fix); needs cols <= rows."""
    require(cols <= rows, f"need cols <= rows, got {rows}x{cols}")
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def spectrum_matrix(rng: np.random.Generator, *, n: int, d: int, singular_values) -> np.ndarray:
    """X = U diag(s) Vᵀ with Haar U (n×r), V (d×r) and the given r <= min(n, d) singular values."""
    _check_shape(n, d)
    s = np.asarray(singular_values, dtype=float)
    require(s.ndim == 1 and 1 <= s.size <= min(n, d), f"need 1..min(n,d)={min(n, d)} singular values, got {s.size}")
    require(np.all(np.isfinite(s)) and np.all(s >= 0), "singular values must be finite and >= 0")
    u = random_orthonormal(rng, rows=n, cols=s.size)
    v = random_orthonormal(rng, rows=d, cols=s.size)
    return (u * s) @ v.T


def conditioned_matrix(rng: np.random.Generator, *, n: int, d: int, kappa_x: float, rank: int | None = None) -> np.ndarray:
    """A matrix with rank ``rank`` (default min(n, d)) and κ(X) = kappa_x over its nonzero spectrum
    (log-spaced singular values from 1 down to 1/kappa_x), so κ(G) = kappa_x²."""
    _check_shape(n, d)
    r = min(n, d) if rank is None else rank
    require(isinstance(r, (int, np.integer)) and 1 <= r <= min(n, d), f"rank must be in 1..{min(n, d)}, got {rank!r}")
    require(np.isfinite(kappa_x) and kappa_x >= 1, f"kappa_x must be finite and >= 1, got {kappa_x!r}")
    s = np.logspace(0, -np.log10(kappa_x), r) if r > 1 else np.ones(1)
    return spectrum_matrix(rng, n=n, d=d, singular_values=s)


def data_like_matrix(rng: np.random.Generator, *, n: int, d: int, sparsity: float = 0.5) -> np.ndarray:
    """Non-negative rows of unit ℓ2 norm (like flattened images), no zero row."""
    _check_shape(n, d)
    require(0 <= sparsity < 1, f"sparsity must be in [0, 1), got {sparsity!r}")
    x = rng.uniform(0, 1, (n, d)) * (rng.uniform(0, 1, (n, d)) >= sparsity)
    x[np.arange(n), rng.integers(0, d, n)] += 0.5  # no zero row
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def integer_matrices(*, n: int, d: int, max_abs: int, limit: int, rng: np.random.Generator | None = None):
    """Integer n×d matrices with entries in [-max_abs, max_abs]: all of them, smallest first
    (by sum of |entries|, then number of nonzeros), when there are at most ``limit``; else
    ``limit`` random ones (needs rng)."""
    _check_shape(n, d)
    require(isinstance(max_abs, int) and max_abs >= 1, f"max_abs must be an integer >= 1, got {max_abs!r}")
    vals = [0] + [v for a in range(1, max_abs + 1) for v in (a, -a)]  # positives first on ties
    total = (2 * max_abs + 1) ** (n * d)
    if total <= limit:
        mats = [np.array(c, dtype=np.int64).reshape(n, d) for c in itertools.product(vals, repeat=n * d)]
        mats.sort(key=lambda m: (int(np.abs(m).sum()), int(np.count_nonzero(m))))
        yield from mats
    else:
        require(rng is not None, "rng is needed when sampling")
        for _ in range(limit):
            yield rng.integers(-max_abs, max_abs + 1, (n, d))


def small_shapes(max_n: int, max_d: int):
    """(n, d) pairs ordered smallest first: by n·d, then n."""
    return sorted(((n, d) for n in range(1, max_n + 1) for d in range(1, max_d + 1)), key=lambda s: (s[0] * s[1], s[0]))
