"""2-norm condition numbers of G = X Xᵀ and its powers, from the singular values of X.

Why from X: the eigenvalues of G are s_i(X)², those of G^p are s_i(X)^(2p), so
κ₂(G^p) = (s_1 / s_r)^(2p). Forming G³ in float64 and asking for its κ cannot resolve
κ beyond ~1e15 (its small eigenvalues drown in rounding of the large ones); the SVD of
X keeps each singular value to an absolute error of about max(n, d)·eps·s_1, so the
relative error of κ₂(G^p) is about 2p·max(n, d)·eps·s_1/s_r. When that bound exceeds
``TRUST_RTOL`` the computation escalates automatically to an mpmath SVD of X (exact
float64 inputs) with at least p·log10 κ + 15 digits; where that is too large to do in
mpmath, the number is returned with a warning giving its error bound, or null when the
bound exceeds 50 % (never a number wrong by orders of magnitude).

Rank tolerance (documented, used for every pseudo-condition number): a singular value
of X counts as nonzero when it exceeds ``max(n, d) · eps64 · s_1`` (NumPy's default for
``matrix_rank``), whatever precision computed it: directions below that level are
indistinguishable from the rounding of float64 data. The eigenvalue threshold on G is
the square of it.

Names: ``kappa_G`` = κ₂(G) (None when G is singular, i.e. rank < n), ``pseudo_kappa_G``
over the nonzero spectrum, ``kappa_d`` = κ of the rank-min(n, d) truncation (paper v2;
None when s_min(n,d) is below the tolerance), and the same for G³.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

from malleability.errors import require
from malleability.validation import as_finite_matrix, power_of_two_scaled

EPS64 = float(np.finfo(np.float64).eps)
TRUST_RTOL = 1e-8  # float64 accepted when the relative error bound of every κ is below this
MPMATH_MAX_WORK = 2_000_000  # n·d·min(n, d) above which an mpmath SVD is too slow to run


def rank_tolerance(n: int, d: int, s_max: float) -> float:
    """The documented rank tolerance on singular values of X: max(n, d)·eps64·s_1."""
    return max(n, d) * EPS64 * float(s_max)


def singular_values(x: np.ndarray) -> np.ndarray:
    """Float64 singular values, descending. For larger matrices a QR of the tall orientation
    comes first (backward stable, so the error bound is unchanged): LAPACK's SVD of a wide
    2000 × 3072 matrix is ~10x slower than QR + SVD of the 2000 × 2000 triangle."""
    import scipy.linalg

    tall = x if x.shape[0] >= x.shape[1] else x.T
    if tall.shape[1] < 64:
        return np.linalg.svd(tall, compute_uv=False)
    r = scipy.linalg.qr(tall, mode="r", check_finite=False)[0][: tall.shape[1]]
    return scipy.linalg.svdvals(r, check_finite=False)


def mp_singular_values(x: np.ndarray, dps: int) -> list:
    """Singular values of the float64 matrix x (taken exactly) in mpmath with dps digits, descending."""
    with mpmath.workdps(dps):
        a = mpmath.matrix(x.tolist() if x.shape[0] >= x.shape[1] else x.T.tolist())
        s = mpmath.svd_r(a, compute_uv=False)
        vals = sorted((s[i] for i in range(len(s))), reverse=True)
    return vals


def number_out(value) -> float | str | None:
    """A κ for JSON: float when float64 can hold it, a 7-digit string beyond (e.g. '1.234567e+400')."""
    if value is None:
        return None
    if isinstance(value, mpmath.mpf):
        if mpmath.isinf(value):
            return None
        f = float(value)
        if math.isfinite(f) and f != 0.0:
            return f
        return mpmath.nstr(value, 7, min_fixed=1, max_fixed=0)
    f = float(value)
    return f if math.isfinite(f) else None


def _power_ratio(s_hi, s_lo, exponent: int):
    """(s_hi/s_lo)^exponent, in mpmath when the inputs are mpf, else float64 (inf on overflow)."""
    if isinstance(s_hi, mpmath.mpf) or isinstance(s_lo, mpmath.mpf):
        return (mpmath.mpf(s_hi) / mpmath.mpf(s_lo)) ** exponent
    with np.errstate(over="ignore"):
        log = exponent * (math.log(s_hi) - math.log(s_lo))
    return math.exp(log) if log < 709 else mpmath.power(mpmath.mpf(s_hi) / mpmath.mpf(s_lo), exponent)


def condition_numbers(x, powers: tuple[int, ...] = (1, 3), allow_mpmath: bool = True,
                      keep_singular_values: bool = False) -> dict:
    """κ₂ of G^p (G = X Xᵀ) for each p in ``powers``, plus pseudo and rank-min(n, d) variants.

    Returns a JSON-ready dict: ``n``, ``d``, ``rank``, ``rank_tolerance``, ``s_max``,
    ``s_min_nonzero``, for each p keys ``kappa_G{p}``/``pseudo_kappa_G{p}``/``kappa_d{p}``
    (p = 1 written without the number: ``kappa_G``, ``pseudo_kappa_G``, ``kappa_d``),
    ``precision`` ('float64' or 'mpmath-<digits>'), ``relative_error_bound`` (of the
    largest-power κ, from the float64 bound, or 10^-(digits-p·log10κ) after escalation)
    and ``warnings``; with ``keep_singular_values`` also ``singular_values`` (the values
    used, float64 array or mpmath list; not JSON-ready). JSON-ready otherwise.
    """
    x = as_finite_matrix(x)
    require(all(isinstance(p, int) and p >= 1 for p in powers), "powers must be positive integers")
    x, scale = power_of_two_scaled(x)  # exact; κ is scale-free, the SVD stays inside float64
    s = singular_values(x)
    out = _from_singular_values(x, s, powers, allow_mpmath)
    for key in ("rank_tolerance", "s_max", "s_min_nonzero"):
        out[key] = number_out(mpmath.mpf(out[key]) * scale)
    if not keep_singular_values:
        out.pop("singular_values")  # float64 array or mpf list: not JSON; ask for it explicitly
    return out


def _from_singular_values(x, s, powers, allow_mpmath, precision_power: int | None = None):
    """The dict of :func:`condition_numbers` from float64 singular values ``s``; the precision
    is chosen so that κ(G^precision_power) (default: the largest of ``powers``) is resolved."""
    n, d = x.shape
    warnings: list[str] = []
    s_max = float(s[0])
    require(s_max > 0, "X is the zero matrix: G has no nonzero spectrum")
    tol = rank_tolerance(n, d, s_max)
    rank = int(np.count_nonzero(s > tol))
    r_full = min(n, d)
    s_r = float(s[rank - 1])
    p_max = max(max(powers), precision_power or 0)
    abs_err = tol  # backward-stable SVD: |ŝ_i - s_i| ≲ max(n, d)·eps·s_1
    rel_err = 2 * p_max * abs_err / s_r
    precision = "float64"
    vals: list = list(s[:r_full])
    if rel_err > TRUST_RTOL:
        work = n * d * r_full
        # an mpmath SVD at D digits has absolute error ~10^-D·s_1, so κ(G^p) = (s_1/s_r)^(2p)
        # has relative error ~2p·κ(X)·10^-D: D = log10(2p·κ(X)) + 20 leaves 1e-20. The size of
        # κ^p itself needs no digits (mpmath's exponent is unbounded).
        log10_need = math.log10(2 * p_max) + math.log10(max(s_max / s_r, 10.0))
        digits = max(30, int(math.ceil(log10_need + 20)))
        if allow_mpmath and work <= MPMATH_MAX_WORK:
            vals = mp_singular_values(x, digits)
            precision = f"mpmath-{digits}"
            rel_err = float(mpmath.mpf(10) ** (-(digits - log10_need)))
        else:
            warnings.append(
                f"float64 SVD of X only bounds the largest-power κ to relative error {rel_err:.1e}"
                f" (matrix too large for an mpmath SVD: n·d·min(n,d) = {work} > {MPMATH_MAX_WORK})"
            )
    # relative error of one singular value, from which each power's bound follows (2p times it)
    unit_err = abs_err / s_r if precision == "float64" else rel_err / (2 * p_max)
    out: dict = {
        "n": n,
        "d": d,
        "rank": rank,
        "rank_tolerance": tol,
        "s_max": float(vals[0]),
        "s_min_nonzero": float(vals[rank - 1]),
    }
    s_lo_full = vals[r_full - 1]
    for p in powers:
        suffix = "" if p == 1 else str(p)
        e = 2 * p
        pseudo = _power_ratio(vals[0], vals[rank - 1], e)
        kappa_d = _power_ratio(vals[0], s_lo_full, e) if rank == r_full else None
        kappa = kappa_d if (rank == n and n <= d) else None
        bound_p = 2 * p * unit_err
        if bound_p > 0.5:
            warnings.append(f"κ of G^{p} not reported: float64 error bound {bound_p:.1e} is too large")
            pseudo = kappa_d = kappa = None
        out[f"kappa_G{suffix}"] = number_out(kappa)
        out[f"pseudo_kappa_G{suffix}"] = number_out(pseudo)
        out[f"kappa_d{suffix}"] = number_out(kappa_d)
    if rank < n:
        warnings.append(f"G is singular (rank {rank} < n = {n}): κ(G) is infinite, reported as null")
    if rank < r_full:
        warnings.append(f"rank {rank} < min(n, d) = {r_full}: the rank-min(n,d) truncated κ_d is infinite (null)")
    out["precision"] = precision
    out["relative_error_bound"] = rel_err
    out["singular_value_relative_error"] = unit_err
    out["warnings"] = warnings
    out["singular_values"] = vals  # float64 array or list of mpf; callers drop it before JSON
    return out


def spectral_kappa(eigs, tol: float | None = None):
    """κ over |eigenvalues| (pseudo: only those above tol). Works on floats or mpf."""
    ab = [abs(v) for v in eigs]
    if tol is not None:
        ab = [v for v in ab if v > tol]
    if not ab:
        return None
    lo = min(ab)
    return None if lo == 0 else max(ab) / lo
