"""The kernels of Thm 4.1 / 4.2: G³, the ℓ2-row-normalised attention kernel, and the infinite-width ReLU NTK.

* ``F = X Xᵀ X = G X`` (linearised attention features), ``F Fᵀ = G³`` (Thm 4.1).
* ``Z`` = the rows of F scaled to unit ℓ2 norm (what MLP-Attn sees):
  ``K_norm = Z Zᵀ = D^-1/2 G³ D^-1/2`` with ``D = diag(G³)``.
* Thm 4.2, first-layer ReLU NTK at infinite width with w ~ N(0, I):
  ``Θ(z, z') = E_w[σ'(wᵀz) σ'(wᵀz')] · <z, z'> = u (π − arccos u) / (2π)``, u = <z, z'>
  for unit z, z'. It is not K_norm (diagonal 1/2, and not proportional off the diagonal).

The condition numbers here are computed from the SVD of X (X = U S Vᵀ ⇒
K_norm = D^-1/2 U S⁶ Uᵀ D^-1/2), in float64 when the error bound allows, else mpmath.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

from malleability.errors import MalleabilityError, require
from malleability.theory.conditioning import EPS64, MPMATH_MAX_WORK, TRUST_RTOL, rank_tolerance, spectral_kappa
from malleability.theory.conditioning import singular_values as sv_float64


def normalised_features(x: np.ndarray) -> np.ndarray:
    """Z: rows of X Xᵀ X scaled to unit ℓ2 norm (float64). A zero row of X cannot be normalised."""
    f = x @ (x.T @ x)
    norms = np.linalg.norm(f, axis=1)
    if np.any(norms == 0):
        raise MalleabilityError("a row of X is zero: its attention feature cannot be normalised")
    return f / norms[:, None]


def ntk_inf_from_cosines(u):
    """Θ = u (π − arccos u)/(2π) elementwise (float64 array)."""
    u = np.clip(u, -1.0, 1.0)
    return u * (np.pi - np.arccos(u)) / (2 * np.pi)


def ntk_kappa_error_bound(x: np.ndarray, cos: np.ndarray, theta: np.ndarray, eigvals: np.ndarray) -> float:
    """Relative error bound of κ₂(Θ∞) computed in float64 from X (``cos`` = Z Zᵀ with unit
    diagonal, ``theta`` = Θ∞ with diagonal exactly 1/2, ``eigvals`` its float64 eigenvalues).

    Error of the cosines: forming F = X(XᵀX) costs at most (n + d)·eps·(|X|(|X|ᵀ|X|))_i per
    row, so row i of Z is off by about 2ρ_i, ρ_i = that over ‖f_i‖, and u_ij by δ_ij =
    Δz_i + Δz_j + (d + 2)·eps (0 on the diagonal, set exactly). Θ = u(π − arccos u)/(2π):
    |ΔΘ_ij| ≤ δ(π − arccos u)/(2π) + |u|·Δacos/(2π) + 4·eps·|Θ_ij|, where Δacos, the error of
    arccos near |u| = 1, is at most min(π√(δ/2), δ/√(1 − (|u| + δ)²)) plus one rounding of
    π. Then ‖ΔΘ‖₂ ≤ ‖(|ΔΘ_ij|)‖_F, eigvalsh adds n·eps·λ_max, and κ = λ_max/λ_min moves by
    at most e/λ_min + e/λ_max relative (first order, with the 1/(1 − e/λ_min) factor).
    """
    n, d = x.shape
    a = np.abs(x)
    f = x @ (x.T @ x)
    fabs = a @ (a.T @ a)
    rho = (n + d + 2) * EPS64 * np.linalg.norm(fabs, axis=1) / np.linalg.norm(f, axis=1)
    dz = 2 * rho + 4 * EPS64
    du = dz[:, None] + dz[None, :] + (d + 2) * EPS64
    np.fill_diagonal(du, 0.0)
    u = np.abs(np.clip(cos, -1.0, 1.0))
    top = u + du
    with np.errstate(divide="ignore", invalid="ignore"):
        mvt = np.where(top < 1, du / np.sqrt(np.maximum(1 - top * top, 0.0)), np.inf)
    dacos = np.minimum(np.pi * np.sqrt(du / 2), mvt) + 2 * EPS64 * np.pi
    np.fill_diagonal(dacos, 0.0)
    entry = du * (np.pi - np.arccos(np.clip(cos, -1, 1))) / (2 * np.pi) + u * dacos / (2 * np.pi) \
        + 4 * EPS64 * np.abs(theta)
    np.fill_diagonal(entry, 0.0)
    lam_max, lam_min = float(np.max(np.abs(eigvals))), float(np.min(np.abs(eigvals)))
    e = float(np.linalg.norm(entry)) + n * EPS64 * lam_max
    if lam_min <= 0 or e >= lam_min / 2:
        return math.inf
    return (e / lam_min + e / lam_max) / (1 - e / lam_min)


def mp_ntk_inf_entry(u):
    u = max(min(u, mpmath.mpf(1)), mpmath.mpf(-1))
    return u * (mpmath.pi - mpmath.acos(u)) / (2 * mpmath.pi)


def _mp_ntk_kappa(km):
    """κ₂ of the infinite-width NTK of the mpmath normalised kernel ``km``, at the working precision."""
    n = km.rows
    tm = mpmath.matrix(n, n)
    for i in range(n):
        for j in range(n):
            tm[i, j] = mp_ntk_inf_entry(km[i, j])
    et = mpmath.eigsy(tm, eigvals_only=True)
    return spectral_kappa([et[i] for i in range(n)])


def mp_normalised_kernel(x: np.ndarray, dps: int):
    """K_norm as an mpmath matrix, computed from X exactly (entries taken as exact binaries)."""
    with mpmath.workdps(dps):
        xm = mpmath.matrix(x.tolist())
        f = (xm * xm.T) * xm if xm.rows <= xm.cols else xm * (xm.T * xm)
        n = f.rows
        rows = []
        for i in range(n):
            nrm = mpmath.sqrt(sum(f[i, j] ** 2 for j in range(f.cols)))
            rows.append([f[i, j] / nrm for j in range(f.cols)])
        z = mpmath.matrix(rows)
        return z * z.T


def kernel_kappas(x: np.ndarray, rank_tol_eig: float | None = None, allow_mpmath: bool = True,
                  singular_values: np.ndarray | None = None) -> dict:
    """κ₂ and pseudo-κ₂ of K_norm and κ₂ of the infinite-width NTK Θ, with the precision used.

    The pseudo-κ of K_norm is over its top rank(X) eigenvalues (rank by the documented
    tolerance on X's singular values); ``rank_tol_eig`` is unused and kept for API stability.
    """
    n, d = x.shape
    s_x = sv_float64(x) if singular_values is None else np.asarray(singular_values, float)
    rank = int(np.count_nonzero(s_x > rank_tolerance(n, d, s_x[0])))
    kx = s_x[0] / s_x[rank - 1]
    out = {"precision": "float64", "warnings": []}
    with np.errstate(over="ignore", under="ignore"):
        f = x @ (x.T @ x)
        row_norms = np.linalg.norm(f, axis=1)
    # A non-zero x_i makes row i of F = X XᵀX non-zero (f_i·x_i = ‖X x_i‖² > 0), so a zero or
    # infinite row norm is float64's exponent range (rows of very different scales), not the matrix:
    # only the mpmath path, whose exponents are unbounded, can take such an X.
    in_range = bool(np.isfinite(row_norms).all() and (row_norms > 0).all())
    if in_range:
        z = f / row_norms[:, None]
        k = z @ z.T
        k = (k + k.T) / 2
        np.fill_diagonal(k, 1.0)  # unit rows: the cosines on the diagonal are exactly 1
        theta = ntk_inf_from_cosines(k)
        wt = np.linalg.eigvalsh(theta)
        # K_norm = Z Zᵀ: its eigenvalues are σ(Z)², and the SVD of Z resolves them far better than
        # eigvalsh of the formed Z Zᵀ. K_norm has the rank of X: its nonzero spectrum is the top `rank`.
        sz = sv_float64(z)
        kept = sz[:rank] ** 2
        lam_max = float(kept[0])
        lo_k = float(kept[-1]) if kept.size else 0.0
        # error bound on σ_r(Z): forming F = X XᵀX costs ~max(n,d)·eps·s_1³ per row (divided by the
        # smallest row norm after normalising), and the SVD of Z costs max(n,d)·eps·σ_1(Z).
        sr = math.sqrt(lo_k) if lo_k > 0 else 0.0
        abs_err_z = max(n, d) * EPS64 * (s_x[0] ** 3 / float(row_norms.min()) + float(sz[0]))
        err_k = 2 * abs_err_z / sr if sr > 0 else math.inf
        lo_t = float(np.min(np.abs(wt)))
        err_t = ntk_kappa_error_bound(x, k, theta, wt)
        full_rank = kept.size == n
        kappa_k = float(lam_max / lo_k) if full_rank else None
        pseudo_k = float(lam_max / lo_k) if kept.size else None
        kappa_t = float(np.max(np.abs(wt)) / lo_t) if lo_t > 0 else None
    else:
        kept = np.ones(rank)
        err_k = err_t = math.inf
        kappa_k = pseudo_k = kappa_t = None
    if max(err_k if kept.size else 0, err_t) > TRUST_RTOL:
        if allow_mpmath and n * n * max(n, d) <= MPMATH_MAX_WORK:
            log_est = max(math.log10(kappa_t or 1e16), math.log10(pseudo_k or 1.0),
                          (math.log10(kx ** 6) if kx < 1e50 else 6 * math.log10(kx)) if math.isfinite(kx)
                          else 16.0)  # in logs: kx⁶ overflows a float beyond kx = 1e51
            dps = max(30, int(math.ceil(max(log_est, 1.0) + 20)))
            with mpmath.workdps(dps):
                km = mp_normalised_kernel(x, dps)
                ew = mpmath.eigsy(km, eigvals_only=True)
                ew = [abs(ew[i]) for i in range(n)]
                big = max(ew)
                kept_m = sorted(ew, reverse=True)[:rank]
                pseudo_k = spectral_kappa(kept_m)
                kappa_k = pseudo_k if len(kept_m) == n else None
                kappa_t = _mp_ntk_kappa(km)
                _ = big
            if kappa_t is not None and kappa_t >= mpmath.mpf(10) ** (dps - 20):
                # beyond what dps digits resolve: an NTK with an exactly zero eigenvalue (two equal rows)
                # shows one at the rounding level, ~10^dps. Redo with more digits: a true κ stays, that one grows.
                dps_more = dps + 40
                with mpmath.workdps(dps_more):
                    kappa_more = _mp_ntk_kappa(mp_normalised_kernel(x, dps_more))
                if kappa_more is None or kappa_more > kappa_t * mpmath.mpf(10) ** 20:
                    out["warnings"].append(f"the infinite-width NTK is singular: its smallest eigenvalue falls with "
                                           f"the precision (κ {mpmath.nstr(kappa_t, 3)} at {dps} digits, "
                                           f"{mpmath.nstr(kappa_more, 3) if kappa_more else 'inf'} at {dps_more})")
                    kappa_t = None
                else:
                    kappa_t, dps = kappa_more, dps_more
            out["precision"] = f"mpmath-{dps}"
        else:
            require(in_range, f"X XᵀX under- or overflows float64 (its rows' scales differ by about "
                              f"10^{math.log10(kx):.0f}) and the matrix is too large for mpmath: rescale the rows")
            out["warnings"].append(
                f"float64 κ of the normalised kernel / NTK has relative error bound {max(err_k, err_t):.1e};"
                " matrix too large for mpmath"
            )
            if err_k > 0.5:
                kappa_k = pseudo_k = None
            if err_t > 0.5:
                kappa_t = None
    if out["precision"] != "float64":
        # exact inputs, a backward-stable eigensolve at dps ≥ log10(κ) + 20 digits: λ_min to n·κ·10^-dps
        err_k = err_t = n * 1e-19
    out["kappa_K_norm_rel_error_bound"] = err_k if kappa_k is not None or pseudo_k is not None else None
    out["kappa_ntk_inf_rel_error_bound"] = err_t if kappa_t is not None else None
    out["kappa_K_norm"] = kappa_k
    out["pseudo_kappa_K_norm"] = pseudo_k
    out["kappa_ntk_inf"] = kappa_t
    return out
