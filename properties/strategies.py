"""Hypothesis strategies (keyword-only, strictly validated, like hypothesis.extra.numpy).

They draw a seed and shape parameters and delegate to :mod:`malleability.properties.generators`,
the same generators the CLI's counterexample search uses.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from malleability.errors import require
from malleability.properties import generators as gen


def _check_range(name, lo, hi, minimum=1):
    require(isinstance(lo, int) and isinstance(hi, int), f"{name} bounds must be integers")
    require(minimum <= lo <= hi, f"need {minimum} <= min_{name} <= max_{name}, got {lo}, {hi}")


def spectrum_matrices(*, min_n: int = 1, max_n: int = 6, min_d: int = 1, max_d: int = 6,
                      min_log10_kappa_x: float = 0.0, max_log10_kappa_x: float = 3.0, full_rank: bool = True):
    """Matrices U diag(s) Vᵀ with Haar factors and log-spaced s with κ(X) = 10^t, t in the given range.
    ``full_rank=False`` also draws rank-deficient ones (rank < min(n, d))."""
    _check_range("n", min_n, max_n)
    _check_range("d", min_d, max_d)
    require(0 <= min_log10_kappa_x <= max_log10_kappa_x <= 150, "need 0 <= min_log10_kappa_x <= max_log10_kappa_x <= 150")

    @st.composite
    def build(draw):
        n = draw(st.integers(min_n, max_n))
        d = draw(st.integers(min_d, max_d))
        r = min(n, d) if full_rank else draw(st.integers(1, min(n, d)))
        t = draw(st.floats(min_log10_kappa_x, max_log10_kappa_x))
        seed = draw(st.integers(0, 2**32 - 1))
        return gen.conditioned_matrix(np.random.default_rng(seed), n=n, d=d, kappa_x=10.0**t, rank=r)

    return build()


def integer_matrices(*, min_n: int = 1, max_n: int = 3, min_d: int = 1, max_d: int = 3, max_abs: int = 3):
    """Small integer matrices (numpy int64) for exact checks; shrink towards small shapes and zeros."""
    _check_range("n", min_n, max_n)
    _check_range("d", min_d, max_d)
    require(isinstance(max_abs, int) and max_abs >= 1, f"max_abs must be an integer >= 1, got {max_abs!r}")

    @st.composite
    def build(draw):
        n = draw(st.integers(min_n, max_n))
        d = draw(st.integers(min_d, max_d))
        vals = draw(st.lists(st.integers(-max_abs, max_abs), min_size=n * d, max_size=n * d))
        return np.array(vals, dtype=np.int64).reshape(n, d)

    return build()


def data_like_matrices(*, min_d: int = 2, max_d: int = 6, max_extra_rows: int = 6, sparsity: float = 0.5):
    """Non-negative unit-norm rows with n > d (G singular), like flattened images."""
    _check_range("d", min_d, max_d)
    require(isinstance(max_extra_rows, int) and max_extra_rows >= 1, "max_extra_rows must be an integer >= 1")
    require(0 <= sparsity < 1, "sparsity must be in [0, 1)")

    @st.composite
    def build(draw):
        d = draw(st.integers(min_d, max_d))
        n = d + draw(st.integers(1, max_extra_rows))
        seed = draw(st.integers(0, 2**32 - 1))
        return gen.data_like_matrix(np.random.default_rng(seed), n=n, d=d, sparsity=sparsity)

    return build()
