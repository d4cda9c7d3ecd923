"""Prop 4.5: |K(x_i + δ, x_j) − K(x_i, x_j)| ≤ ‖G x_j‖₁ · ε, with ‖δ‖∞ ≤ ε.

Derivation. K = G³ = X Xᵀ X Xᵀ X Xᵀ = X C² Xᵀ with C = Xᵀ X (d × d), so
K(x_i, x_j) = x_iᵀ C² x_j.

* Reading ``query`` (x_i moves only as the query; G, i.e. C, fixed):
  ΔK = δᵀ C² x_j exactly (linear in δ), so max over ‖δ‖∞ ≤ ε is ε·‖C² x_j‖₁, attained
  at δ = ε·sign(C² x_j). This is ``bound_query_exact`` (tight). Note C² x_j = Xᵀ (G²)_{:, j}.
* Reading ``transductive`` (x_i also moves inside G, i.e. C' = C + x_iδᵀ + δx_iᵀ + δδᵀ;
  the second argument stays x_j as written, even when j = i): ΔK is a polynomial of
  degree 5 in δ. Its gradient at δ = 0 (the first-order sensitivity) is
  g = C² x_j + ‖x_i‖²·C x_j + (x_iᵀ C x_j)·x_i + (x_iᵀ C x_i)·x_j + (x_iᵀ x_j)·C x_i,
  first-order max change ε‖g‖₁. The largest change is searched adversarially
  (sign vertices, then projected sign-gradient ascent from several starts on the box).

Bounds (the printed one type-checks only when n = d):
  ``as-printed``    ε‖G x_j‖₁ (G is n×n, x_j ∈ R^d: ill-typed unless n = d)
  ``gram-column``   ε‖G e_j‖₁ (read "G x_j" as the j-th column of G)
  ``feature-gram``  ε‖(XᵀX) x_j‖₁ (read G as the d×d feature Gram)
  ``exact-query``   ε‖(XᵀX)² x_j‖₁ (the tight query-only bound)

Numerics. K is homogeneous of degree 6 in (X, δ) jointly, so X is divided by s = max|X|
first (and ε by s); every reported value is the scaled value times the right power of s,
formed in mpmath (a float when float64 can hold it, else a string like '1.2e+1500').
The query change is the linear form δᵀC²x_j itself and the transductive change is the
expansion ΔK = Δ(aᵀC₀²x_j) + Δ((aᵀC₀a)(aᵀx_j)) + Δ((aᵀa)(aᵀC₀x_j)) + Δ((aᵀa)²(aᵀx_j))
(a = x_i + δ, C₀ = C − x_i x_iᵀ), never the difference of two large kernel values, so a
tiny ε loses no digits. A bound "holds" when change ≤ bound + tol with tol relative to the
magnitudes of both sides (:func:`exceeds`), so the verdict does not depend on the scale of ε.
"""

from __future__ import annotations

import math
import sys

import mpmath
import numpy as np

from malleability.errors import require
from malleability.provenance import provenance
from malleability.theory.conditioning import number_out
from malleability.validation import as_finite_matrix

PERTURBATIONS = ("query", "transductive")
VERTEX_ENUM_MAX_D = 8
BOUNDS = ("as-printed", "gram-column", "feature-gram", "exact-query")
BOUND_DEGREE = {"as-printed": 4, "gram-column": 3, "feature-gram": 4, "exact-query": 6}  # in (X, ε) jointly
EPS64 = float(np.finfo(np.float64).eps)
MAX_SCALED_EPS = 1e50  # (ε/max|X|)^6 must stay inside float64 for the transductive polynomial


def rounding_tolerance(n: int, d: int, magnitude: float) -> float:
    """Rounding error allowed for a sum of products of this magnitude: 8·(n + d)·eps64·magnitude.

    An mpmath magnitude stays mpmath: beyond float64's range float() is inf, and every bound would hold."""
    if isinstance(magnitude, mpmath.mpf):
        return 8 * (n + d) * mpmath.mpf(EPS64) * magnitude
    return 8 * (n + d) * EPS64 * float(magnitude)


def exceeds(change, bound, magnitude, n: int, d: int) -> bool:
    """True when ``change`` is above ``bound`` by more than rounding (relative to ``magnitude``)."""
    return bool(change > bound + rounding_tolerance(n, d, magnitude))


def query_change(x: np.ndarray, j: int, delta: np.ndarray) -> float:
    """ΔK under the query reading: the linear form δᵀ C² x_j (exact, no difference taken)."""
    c = x.T @ x
    return float(delta @ (c @ (c @ x[j])))


def _transductive_terms(c0, xi, xj):
    """The values at δ = 0 needed by the expansion of ΔK."""
    c0xj = c0 @ xj
    return {"v1": c0 @ c0xj, "c0xj": c0xj, "c0xi": c0 @ xi, "L2": xi @ xj, "L3": xi @ c0xj,
            "Q1": xi @ (c0 @ xi), "Q2": xi @ xi}


def _transductive_delta(c0, xi, xj, delta, t=None):
    """ΔK = K(x_i + δ, x_j) − K(x_i, x_j) under the transductive reading, by the expansion."""
    t = t or _transductive_terms(c0, xi, xj)
    d_l1 = delta @ t["v1"]
    d_l2 = delta @ xj
    d_l3 = delta @ t["c0xj"]
    d_q1 = 2 * (delta @ t["c0xi"]) + delta @ (c0 @ delta)
    d_q2 = 2 * (delta @ xi) + delta @ delta
    q2, l2 = t["Q2"], t["L2"]

    def dprod(a, da, b, db):
        return da * b + a * db + da * db

    d_q2sq = d_q2 * (2 * q2 + d_q2)
    return float(d_l1 + dprod(t["Q1"], d_q1, l2, d_l2) + dprod(q2, d_q2, t["L3"], d_l3)
                 + dprod(q2 * q2, d_q2sq, l2, d_l2))


def kernel_entry(x: np.ndarray, i: int, j: int, delta: np.ndarray, reading: str) -> float:
    """K(x_i + δ, x_j) under the given perturbation reading (float64)."""
    xi = x[i] + delta
    if reading == "query":
        c = x.T @ x
    else:
        xp = x.copy()
        xp[i] = xi
        c = xp.T @ xp
    return float(xi @ (c @ (c @ x[j])))


def change(x, i, j, delta, reading) -> float:
    """ΔK for the perturbation δ of row i (without cancellation: see the module docstring)."""
    x = np.asarray(x, dtype=float)
    delta = np.asarray(delta, dtype=float)
    if reading == "query":
        return query_change(x, j, delta)
    c0 = x.T @ x - np.outer(x[i], x[i])
    return _transductive_delta(c0, x[i], x[j], delta)


def first_order_gradient(x: np.ndarray, i: int, j: int, reading: str) -> np.ndarray:
    """∂K(x_i+δ, x_j)/∂δ at δ = 0 (closed form, see module docstring)."""
    c = x.T @ x
    xi, xj = x[i], x[j]
    g = c @ (c @ xj)
    if reading == "transductive":
        cxj = c @ xj
        g = g + (xi @ xi) * cxj + (xi @ cxj) * xi + (xi @ (c @ xi)) * xj + (xi @ xj) * (c @ xi)
    return g


def bound_values(x: np.ndarray, j: int, eps: float) -> dict:
    """Each bound reading's value (None where ill-typed)."""
    n, d = x.shape
    g = x @ x.T
    c = x.T @ x
    return {
        "as-printed": float(eps * np.abs(g @ x[j]).sum()) if n == d else None,
        "gram-column": float(eps * np.abs(g[:, j]).sum()),
        "feature-gram": float(eps * np.abs(c @ x[j]).sum()),
        "exact-query": float(eps * np.abs(c @ (c @ x[j])).sum()),
    }


def bound_magnitudes(x: np.ndarray, j: int, eps: float) -> dict:
    """The same sums with |entries|: the scale of each bound's rounding error."""
    a = np.abs(x)
    n, d = x.shape
    g = a @ a.T
    c = a.T @ a
    return {
        "as-printed": float(eps * (g @ a[j]).sum()) if n == d else None,
        "gram-column": float(eps * g[:, j].sum()),
        "feature-gram": float(eps * (c @ a[j]).sum()),
        "exact-query": float(eps * (c @ (c @ a[j])).sum()),
    }


def _transductive_value_and_grad(c0, xi, xj, delta, terms=None):
    """ΔK at δ (by the expansion) and its exact gradient, with a = x_i + δ and C' = C0 + a aᵀ.

    grad = C'² x_j + (aᵀC'x_j) a + (aᵀa) C'x_j + (aᵀx_j) C'a + (aᵀC'a) x_j.
    """
    a = xi + delta

    def cmul(v):
        return c0 @ v + a * (a @ v)

    cxj = cmul(xj)
    c2xj = cmul(cxj)
    ca = cmul(a)
    grad = c2xj + (a @ cxj) * a + (a @ a) * cxj + (a @ xj) * ca + (a @ ca) * xj
    return _transductive_delta(c0, xi, xj, delta, terms), grad


def max_change(x, i, j, eps, reading, *, restarts: int = 4, steps: int = 60, seed: int = 0) -> tuple[float, np.ndarray]:
    """Largest |ΔK| found over ‖δ‖∞ ≤ ε, and the δ attaining it.

    query: exact (the vertex ε·sign(C² x_j)). transductive: the best of the first-order
    vertices ±ε·sign(g) (all 2^d vertices when d <= VERTEX_ENUM_MAX_D), then projected sign-gradient ascent on +ΔK and on −ΔK (exact
    polynomial gradient) from those vertices, the origin and ``restarts`` random starts.
    A lower bound on the true maximum (a search, not a certificate).
    """
    x = np.asarray(x, dtype=float)
    d = x.shape[1]
    g0 = first_order_gradient(x, i, j, reading)
    sg = np.where(g0 >= 0, 1.0, -1.0)
    if reading == "query":
        delta = eps * sg
        return abs(query_change(x, j, delta)), delta
    xi, xj = x[i], x[j]
    c0 = x.T @ x - np.outer(xi, xi)
    terms = _transductive_terms(c0, xi, xj)
    rng = np.random.default_rng(seed)
    starts = [eps * sg, -eps * sg, np.zeros(d)] + [rng.uniform(-eps, eps, d) for _ in range(restarts)]
    best, best_delta = -1.0, starts[0]
    if d <= VERTEX_ENUM_MAX_D:  # small d: every vertex of the box is tried as well
        for bits in range(2**d):
            v = eps * np.array([1.0 if (bits >> k) & 1 else -1.0 for k in range(d)])
            val = _transductive_delta(c0, xi, xj, v, terms)
            if abs(val) > best:
                best, best_delta = abs(val), v
    for start in starts:
        for sign in (1.0, -1.0):
            delta = start.copy()
            step = eps
            for _ in range(steps):
                val, gr = _transductive_value_and_grad(c0, xi, xj, delta, terms)
                if abs(val) > best:
                    best, best_delta = abs(val), delta.copy()
                cand = np.clip(delta + step * sign * np.sign(gr), -eps, eps)
                cval = _transductive_delta(c0, xi, xj, cand, terms)
                if sign * (cval - val) <= 0:
                    step /= 2
                    if step < eps * 1e-6:
                        break
                    continue
                delta = cand
            val = _transductive_delta(c0, xi, xj, delta, terms)
            if abs(val) > best:
                best, best_delta = abs(val), delta.copy()
    return best, best_delta


def _scaled(value, scale, power):
    """value · scale^power in mpmath (no overflow), or None."""
    if value is None:
        return None
    return mpmath.mpf(value) * mpmath.mpf(scale) ** power


def sensitivity(x, i: int, j: int, eps: float) -> dict:
    """Prop 4.5 on one matrix (the JSON of ``theory sensitivity``)."""
    x = as_finite_matrix(x)
    n, d = x.shape
    for name, v in (("i", i), ("j", j)):
        require(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < n,
                f"index {name}={v} out of range for n = {n} rows")
    require(isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps) and eps > 0,
            f"eps must be a finite number > 0, got {eps}")
    # below float64's normal range the bounds (multiples of eps) are subnormal and keep only a few digits
    require(eps >= sys.float_info.min, f"eps = {eps:.3g} is below float64's normal range ({sys.float_info.min:.3g}): "
                                       "rescale X and eps together instead")
    eps = float(eps)
    s = float(np.abs(x).max())
    require(s > 0, "X is the zero matrix: every change and every bound is 0")
    y = x / s
    e = eps / s  # may be inf for ε ≫ max|X| beyond float64: then only the query reading is computed
    warnings = []
    with mpmath.workdps(30):
        out_vals = {}
        # query: ΔK = δᵀC²x_j exactly linear, computed in units of ε (no overflow for any ε)
        mq1, dq1 = max_change(y, i, j, 1.0, "query")
        mq = mpmath.mpf(mq1) * mpmath.mpf(eps) * mpmath.mpf(s) ** 5
        mag_q = bound_magnitudes(y, j, 1.0)["exact-query"] * mpmath.mpf(eps) * mpmath.mpf(s) ** 5
        if math.isfinite(e) and e <= MAX_SCALED_EPS:
            mt1, dt1 = max_change(y, i, j, e, "transductive")
            mt = _scaled(mt1, s, 6)
            dt = dt1 * s
        else:
            mt, dt = None, None
            warnings.append(f"ε/max|X| = {eps / s:.3g} is above {MAX_SCALED_EPS:g}: the transductive change "
                            "(a degree-6 polynomial) is beyond float64 and is not computed (null)")
        bvals = bound_values(y, j, 1.0)
        bmags = bound_magnitudes(y, j, 1.0)
        bounds = {b: (None if bvals[b] is None else mpmath.mpf(bvals[b]) * eps * mpmath.mpf(s) ** (BOUND_DEGREE[b] - 1))
                  for b in BOUNDS}
        mags = {b: (None if bmags[b] is None else mpmath.mpf(bmags[b]) * eps * mpmath.mpf(s) ** (BOUND_DEGREE[b] - 1))
                for b in BOUNDS}
        readings = []
        for pert, mchange, mag_c in (("query", mq, mag_q), ("transductive", mt, mt)):
            for b in BOUNDS:
                val = bounds[b]
                holds = None
                if val is not None and mchange is not None:
                    holds = not exceeds(mchange, val, mag_c + mags[b], n, d)
                readings.append({
                    "name": f"{pert}/{b}" if not (pert == "query" and b == "as-printed") else "as-stated",
                    "perturbation": pert, "bound": b, "bound_value": number_out(val),
                    "max_change": number_out(mchange), "holds": holds,
                    "ratio": number_out(mchange / val) if (val is not None and mchange is not None and val > 0)
                    else None,
                })
        fo_q = mpmath.mpf(float(np.abs(first_order_gradient(y, i, j, "query")).sum())) * eps * mpmath.mpf(s) ** 5
        fo_t = mpmath.mpf(float(np.abs(first_order_gradient(y, i, j, "transductive")).sum())) * eps * mpmath.mpf(s) ** 5
        out_vals = {"max_change_query": number_out(mq), "max_change_transductive": number_out(mt),
                    "bound_query_exact": number_out(bounds["exact-query"]),
                    "first_order_query": number_out(fo_q), "first_order_transductive": number_out(fo_t)}
    return {
        "n": n,
        "d": d,
        "i": int(i),
        "j": int(j),
        "eps": eps,
        "delta_norm": "linf",
        **out_vals,
        "argmax_delta_query": (eps * np.sign(dq1)).tolist(),
        "argmax_delta_transductive": None if dt is None else dt.tolist(),
        "readings": readings,
        "scale": s,
        "precision": "float64 (X scaled by max|X|; powers of the scale in mpmath)",
        "warnings": warnings,
        "provenance": provenance(),
    }
