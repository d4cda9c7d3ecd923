"""k-layer recursions: exact integer matrices against the polynomial derivation and hand-derived exponents."""

import mpmath
import numpy as np
import pytest

from malleability.errors import MalleabilityError
from malleability.properties import generators as gen
from malleability.theory import exact
from malleability.theory import layers as L
from malleability.theory.conditioning import condition_numbers

X = np.array([[1, 2, 0], [0, 1, -1], [2, 0, 1]])

# derived by hand: X_l = G^{a_l} X with a_{l+1} = (sum of the a's of the 'c' slots) + ... + 1
HAND = {
    "ccc": lambda k: 3**k,            # a -> 3a + 1
    "iic": lambda k: 2 * k + 1,       # a -> a + 1
    "ici": lambda k: 2 * k + 1,
    "cii": lambda k: 2 * k + 1,
    "cci": lambda k: 2 ** (k + 1) - 1,  # a -> 2a + 1
    "cic": lambda k: 2 ** (k + 1) - 1,
    "icc": lambda k: 2 ** (k + 1) - 1,
    "iii": lambda k: 3,
}


@pytest.mark.parametrize("code", sorted(HAND))
def test_exact_gram_exponents(code):
    xe = exact.to_exact(X)
    g = exact.gram(xe)
    for k, xk in enumerate(L.exact_layers(xe, code, 3), start=1):
        assert L.gram_power_exponent(exact.gram(xk), g, 30) == HAND[code](k)
        assert L.monomial_degree(L.gram_polynomial(code, k)) == HAND[code](k)


def test_residual_is_polynomial_not_power():
    xe = exact.to_exact(X)
    g = exact.gram(xe)
    (x1,) = L.exact_layers(xe, "ccc+res", 1)
    assert L.gram_power_exponent(exact.gram(x1), g, 30) is None
    coeffs = L.gram_polynomial("ccc+res", 1)  # X_1 = (I + G) X ⇒ Gram = G (I + G)² = G + 2G² + G³
    assert coeffs == [0, 1, 2, 1]
    poly = exact.add(exact.add(g, [[2 * v for v in r] for r in exact.matpow(g, 2)]), exact.matpow(g, 3))
    assert exact.equal(exact.gram(x1), poly)


@pytest.mark.parametrize("code", ["ccc", "cci", "iic", "ccc+res"])
def test_polynomial_matches_exact_layers(code):
    xe = exact.to_exact(X)
    g = exact.gram(xe)
    for k, xk in enumerate(L.exact_layers(xe, code, 2), start=1):
        coeffs = L.layer_polynomials(code, k)[-1]
        acc = [[0] * 3 for _ in range(3)]
        for deg, c in enumerate(coeffs):
            acc = exact.add(acc, [[c * v for v in r] for r in exact.matpow(g, deg)])
        assert exact.equal(xk, exact.matmul(acc, xe))


def test_gram_kappa_from_singular_values_against_mpmath():
    x = gen.conditioned_matrix(np.random.default_rng(0), n=3, d=4, kappa_x=3.0)
    c = condition_numbers(x, keep_singular_values=True)
    s = c["singular_values"]
    out = L.gram_kappas_from_singular_values(s, c["rank"], 3, "ccc+res", 2)
    with mpmath.workdps(60):
        xm = mpmath.matrix(x.tolist())
        cur = xm
        for _ in range(2):
            cur = cur + cur * cur.T * cur
        w = mpmath.eigsy(cur * cur.T, eigvals_only=True)
        ref = max(abs(w[i]) for i in range(3)) / min(abs(w[i]) for i in range(3))
    assert abs(out["kappa"] - ref) / ref < 1e-8


def test_bad_recursion_codes():
    for bad in ("cc", "abc", "ccc+foo", "cccc"):
        with pytest.raises(MalleabilityError):
            L.parse_recursion(bad)
    with pytest.raises(MalleabilityError):
        L.claimed_exponent(0)
