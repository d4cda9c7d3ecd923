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
"""

from __future__ import annotations

import numpy as np

from malleability.errors import require
from malleability.provenance import provenance
from malleability.validation import as_finite_matrix

PERTURBATIONS = ("query", "transductive")
VERTEX_ENUM_MAX_D = 8
BOUNDS = ("as-printed", "gram-column", "feature-gram", "exact-query")


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
    return kernel_entry(x, i, j, delta, reading) - kernel_entry(x, i, j, np.zeros(x.shape[1]), reading)


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


def _transductive_value_and_grad(c0, xi, xj, delta):
    """ΔK-part K(x_i+δ, x_j) and its exact gradient, with a = x_i + δ and C' = C0 + a aᵀ.

    grad = C'² x_j + (aᵀC'x_j) a + (aᵀa) C'x_j + (aᵀx_j) C'a + (aᵀC'a) x_j.
    """
    a = xi + delta

    def cmul(v):
        return c0 @ v + a * (a @ v)

    cxj = cmul(xj)
    c2xj = cmul(cxj)
    ca = cmul(a)
    value = float(a @ c2xj)
    grad = c2xj + (a @ cxj) * a + (a @ a) * cxj + (a @ xj) * ca + (a @ ca) * xj
    return value, grad


def max_change(x, i, j, eps, reading, *, restarts: int = 4, steps: int = 60, seed: int = 0) -> tuple[float, np.ndarray]:
    """Largest |ΔK| found over ‖δ‖∞ ≤ ε, and the δ attaining it.

    query: exact (the vertex ε·sign(C² x_j)). transductive: the best of the first-order
    vertices ±ε·sign(g) (all 2^d vertices when d <= VERTEX_ENUM_MAX_D), then projected sign-gradient ascent on +ΔK and on −ΔK (exact
    polynomial gradient) from those vertices, the origin and ``restarts`` random starts.
    A lower bound on the true maximum (a search, not a certificate).
    """
    d = x.shape[1]
    g0 = first_order_gradient(x, i, j, reading)
    sg = np.where(g0 >= 0, 1.0, -1.0)
    if reading == "query":
        delta = eps * sg
        return abs(change(x, i, j, delta, reading)), delta
    xi, xj = x[i], x[j]
    c0 = x.T @ x - np.outer(xi, xi)
    base, _ = _transductive_value_and_grad(c0, xi, xj, np.zeros(d))
    rng = np.random.default_rng(seed)
    starts = [eps * sg, -eps * sg, np.zeros(d)] + [rng.uniform(-eps, eps, d) for _ in range(restarts)]
    best, best_delta = -1.0, starts[0]
    if d <= VERTEX_ENUM_MAX_D:  # small d: every vertex of the box is tried as well
        for bits in range(2**d):
            v = eps * np.array([1.0 if (bits >> k) & 1 else -1.0 for k in range(d)])
            val, _ = _transductive_value_and_grad(c0, xi, xj, v)
            if abs(val - base) > best:
                best, best_delta = abs(val - base), v
    for start in starts:
        for sign in (1.0, -1.0):
            delta = start.copy()
            step = eps
            for _ in range(steps):
                val, gr = _transductive_value_and_grad(c0, xi, xj, delta)
                if abs(val - base) > best:
                    best, best_delta = abs(val - base), delta.copy()
                cand = np.clip(delta + step * sign * np.sign(gr), -eps, eps)
                cval, _ = _transductive_value_and_grad(c0, xi, xj, cand)
                if sign * (cval - val) <= 0:
                    step /= 2
                    if step < eps * 1e-6:
                        break
                    continue
                delta = cand
            val, _ = _transductive_value_and_grad(c0, xi, xj, delta)
            if abs(val - base) > best:
                best, best_delta = abs(val - base), delta.copy()
    return best, best_delta


def sensitivity(x, i: int, j: int, eps: float) -> dict:
    """Prop 4.5 on one matrix (the JSON of ``theory sensitivity``)."""
    x = as_finite_matrix(x)
    n, d = x.shape
    for name, v in (("i", i), ("j", j)):
        require(isinstance(v, (int, np.integer)) and 0 <= v < n, f"index {name}={v} out of range for n = {n} rows")
    require(isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0, f"eps must be a finite number > 0, got {eps}")
    eps = float(eps)
    mq, dq = max_change(x, i, j, eps, "query")
    mt, dt = max_change(x, i, j, eps, "transductive")
    bounds = bound_values(x, j, eps)
    readings = []
    tol = 1e-9
    for pert, mchange in (("query", mq), ("transductive", mt)):
        for b in BOUNDS:
            val = bounds[b]
            readings.append(
                {
                    "name": f"{pert}/{b}" if not (pert == "query" and b == "as-printed") else "as-stated",
                    "perturbation": pert,
                    "bound": b,
                    "bound_value": val,
                    "max_change": mchange,
                    "holds": None if val is None else bool(mchange <= val * (1 + tol) + tol),
                }
            )
    return {
        "n": n,
        "d": d,
        "i": int(i),
        "j": int(j),
        "eps": eps,
        "delta_norm": "linf",
        "max_change_query": mq,
        "max_change_transductive": mt,
        "bound_query_exact": bounds["exact-query"],
        "first_order_query": float(eps * np.abs(first_order_gradient(x, i, j, "query")).sum()),
        "first_order_transductive": float(eps * np.abs(first_order_gradient(x, i, j, "transductive")).sum()),
        "argmax_delta_query": dq.tolist(),
        "argmax_delta_transductive": dt.tolist(),
        "readings": readings,
        "precision": "float64",
        "provenance": provenance(),
    }
