"""k layers of linearised attention: X_{l+1} = Q Kᵀ V with each of Q, K, V ∈ {X, X_l}.

The paper does not define its k-layer model; every recursion is a named option:
a 3-letter code over {i, c} in Q, K, V order (i = the input X, c = the current layer
X_l), X_0 = X. ``ccc`` is stacked self-attention, ``iic`` applies the input's attention
map X Xᵀ to the current layer, ``cii`` lets the current layer attend over the input.
The suffix ``+res`` adds a residual connection: X_{l+1} = X_l + Q Kᵀ V.

Why a polynomial: if every X_l = P_l(G) X for a polynomial P_l, then
Q Kᵀ V = P_q(G) X Xᵀ P_k(G) P_v(G) X = t·P_q P_k P_v (G) X, so X_k = P_k(G) X and
Gram_k = X_k X_kᵀ = (t·P_k(t)²)(G). This module computes those polynomials (to explain
results), but the verdicts come from :func:`exact_layers` on generated integer matrices
and :func:`gram_power_exponent`, which compares Gram_k with G^p entry by entry.
"""

from __future__ import annotations

import itertools

import mpmath
import numpy as np

from malleability.errors import require
from malleability.theory import exact

CODES = tuple("".join(c) for c in itertools.product("ic", repeat=3))
RESIDUAL_CODES = ("ccc+res",)
MAX_LAYERS = 60  # ccc at K = 60 is G^(3^60) ≈ G^(4e28); beyond, the exponent arithmetic is pointless
ALL_RECURSIONS = CODES + RESIDUAL_CODES


def parse_recursion(code: str) -> tuple[str, bool]:
    """('ccc', False) for 'ccc'; ('ccc', True) for 'ccc+res'. Raises MalleabilityError otherwise."""
    base, plus, suffix = str(code).partition("+")
    require(
        len(base) == 3 and set(base) <= {"i", "c"} and (plus, suffix) in (("", ""), ("+", "res")),
        f"unknown recursion {code!r}: use a 3-letter code over {{i, c}} (Q, K, V order), optionally with '+res'",
    )
    return base, suffix == "res"


def exact_layers(x, code: str, k: int) -> list:
    """[X_1, ..., X_k] computed exactly (integer/rational lists) for the recursion code."""
    base, residual = parse_recursion(code)
    x0 = exact.to_exact(x) if not isinstance(x, list) else x
    cur = x0
    out = []
    for _ in range(k):
        q, kk, v = ((x0 if ch == "i" else cur) for ch in base)
        nxt = exact.matmul(exact.matmul(q, exact.transpose(kk)), v)
        if residual:
            nxt = exact.add(cur, nxt)
        cur = nxt
        out.append(cur)
    return out


def gram_power_exponent(gram_k, g, max_power: int) -> int | None:
    """The p ≤ max_power with gram_k == G^p exactly, or None (smallest such p)."""
    power = g
    for p in range(1, max_power + 1):
        if exact.equal(power, gram_k):
            return p
        power = exact.matmul(power, g)
    return None


def layer_polynomials(code: str, k: int) -> list[list[int]]:
    """Coefficients (lowest degree first) of P_l with X_l = P_l(G) X, l = 1..k."""
    base, residual = parse_recursion(code)
    one = [1]

    def mul(a, b):
        out = [0] * (len(a) + len(b) - 1)
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                out[i + j] += x * y
        return out

    def addp(a, b):
        m = max(len(a), len(b))
        return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(m)]

    cur = one
    polys = []
    for _ in range(k):
        q, kk, v = ((one if ch == "i" else cur) for ch in base)
        nxt = mul([0, 1], mul(mul(q, kk), v))
        if residual:
            nxt = addp(cur, nxt)
        cur = nxt
        polys.append(cur)
    return polys


def gram_polynomial(code: str, k: int) -> list[int]:
    """Coefficients of t·P_k(t)², the polynomial with Gram_k = poly(G)."""
    p = layer_polynomials(code, k)[-1]
    sq = [0] * (2 * len(p) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(p):
            sq[i + j] += a * b
    return [0] + sq


def monomial_degree(coeffs: list[int]) -> int | None:
    nz = [i for i, c in enumerate(coeffs) if c != 0]
    return nz[0] if len(nz) == 1 and coeffs[nz[0]] == 1 else None


def layer_degrees(code: str, k: int) -> list[int]:
    """deg P_l for l = 1..k, from deg P_{l+1} = 1 + Σ over the Q, K, V slots (deg P_l for 'c', 0 for 'i').

    No polynomial is formed, so k can be large (ccc at k = 12 has degree (3^12 − 1)/2)."""
    base, _ = parse_recursion(code)
    require(isinstance(k, (int, np.integer)) and k >= 1, "k must be a positive integer")
    cur, out = 0, []
    for _ in range(int(k)):
        cur = 1 + sum(cur for ch in base if ch == "c")  # the residual adds P_l, whose degree is lower
        out.append(cur)
    return out


def gram_degree(code: str, k: int) -> int:
    """Degree of the Gram polynomial t·P_k(t)²: 2·deg P_k + 1."""
    return 2 * layer_degrees(code, k)[-1] + 1


def gram_exponent(code: str, k: int) -> int | None:
    """p with Gram_k = G^p when the recursion has no residual (P_k is then a monomial), else None."""
    _, residual = parse_recursion(code)
    return None if residual else gram_degree(code, k)


def gram_eigenvalue(code: str, k: int, lam):
    """μ = λ·P_k(λ)², the eigenvalue of Gram_k for the eigenvalue λ of G, by the layer recursion
    P_{l+1}(λ) = [P_l(λ) if residual] + λ·P_q(λ)P_k(λ)P_v(λ) (mpmath or float, O(k) operations)."""
    base, residual = parse_recursion(code)
    cur = lam * 0 + 1
    for _ in range(int(k)):
        q, kk, v = ((1 if ch == "i" else cur) for ch in base)
        nxt = lam * q * kk * v
        cur = cur + nxt if residual else nxt
    return lam * cur * cur


GRAM_POLYNOMIAL_MAX_DEGREE = 64  # beyond, the coefficient list is not formed (it is only an explanation)


def gram_kappas_from_singular_values(svals, rank: int, n: int, code: str, k: int, dps: int = 40,
                                     scale: float = 1.0) -> dict:
    """κ₂ and pseudo-κ₂ of Gram_k from X's singular values: eigenvalues μ = λ·P_k(λ)², λ = s².

    Evaluated in mpmath by the layer recursion (O(k) per singular value, any exponent range),
    so large powers neither overflow nor lose digits; the accuracy is that of the singular
    values passed in. For a monomial recursion κ(Gram_k) = (s_1/s_r)^(2p) exactly; a residual
    recursion is not scale-free, so singular values of a rescaled X are multiplied back by
    ``scale`` (in mpmath) first.
    """
    degree = gram_degree(code, k)
    p = gram_exponent(code, k)
    with mpmath.workdps(dps):
        if p is not None:
            pseudo = (mpmath.mpf(svals[0]) / mpmath.mpf(svals[rank - 1])) ** (2 * p)
        else:
            mus = [abs(gram_eigenvalue(code, k, (mpmath.mpf(s) * scale) ** 2)) for s in svals[:rank]]
            pseudo = max(mus) / min(mus)
        kappa = pseudo if rank == n else None
    coeffs = gram_polynomial(code, k) if degree <= GRAM_POLYNOMIAL_MAX_DEGREE else None
    return {"kappa": kappa, "pseudo_kappa": pseudo, "gram_polynomial": coeffs, "degree": degree, "exponent": p}


def claimed_exponent(k: int) -> int:
    """The paper's exponent for k layers: G^(2k+1)."""
    require(isinstance(k, (int, np.integer)) and k >= 1, "k must be a positive integer")
    return 2 * int(k) + 1
