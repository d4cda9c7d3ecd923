"""k-layer attention on real data: the recursion against the exact theory, exponents, the summary."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from malleability.empirics.experiments.k_layer import (
    KLayerConfig,
    candidate_exponents,
    coefficient_layers,
    exponent,
    float64_features,
    k_layer_rows,
    mp_gram_kappas,
    nearest_candidate,
    run,
    summarise,
    theory_exponent,
)
from malleability.errors import MalleabilityError
from malleability.theory import exact, layers

X_INT = [[1, 0, 2], [0, 1, 1], [1, 1, 0], [2, -1, 1]]
ALL = layers.CODES + layers.RESIDUAL_CODES


def unit_rows(n, d, seed):
    x = np.random.default_rng(seed).random((n, d)) + 0.2
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("code", ALL)
def test_coefficient_recursion_is_the_layer_recursion_exactly(code):
    g = exact.matmul(X_INT, exact.transpose(X_INT))
    eye = [[int(i == j) for j in range(4)] for i in range(4)]
    A = coefficient_layers(g, code, 3, mul=exact.matmul, transpose=exact.transpose, add=exact.add, identity=eye)
    direct = layers.exact_layers(X_INT, code, 3)
    for a_l, x_l in zip(A, direct):
        assert exact.equal(exact.matmul(a_l, X_INT), x_l)
    # small integers: the float64 recursion is exact too
    for f_l, x_l in zip(float64_features(np.array(X_INT, dtype=float), code, 3), direct):
        assert np.array_equal(f_l, np.array(x_l, dtype=float))


def test_mpmath_gram_kappa_is_kappa_of_the_exact_gram_power():
    x = unit_rows(4, 6, seed=1)
    got = mp_gram_kappas(x, ("iic", "ccc"), (1, 2), dps=80)
    g = exact.matmul(exact.to_exact(x), exact.transpose(exact.to_exact(x)))
    for code, k in got:
        p = theory_exponent(code, k)
        with mpmath.workdps(80):
            gp = exact.matpow(g, p)
            w = mpmath.eigsy(mpmath.matrix([[mpmath.mpf(v.numerator) / v.denominator for v in r] for r in gp]),
                             eigvals_only=True)
            want = max(abs(v) for v in w) / min(abs(v) for v in w)
        assert abs(got[(code, k)] / want - 1) < mpmath.mpf(10) ** -30


def test_every_plain_code_has_a_monomial_gram_and_the_three_laws_occur():
    assert theory_exponent("iic", 3) == 7 and theory_exponent("icc", 3) == 15 and theory_exponent("ccc", 3) == 27
    assert theory_exponent("iii", 4) == 3 and theory_exponent("ccc+res", 2) is None
    assert candidate_exponents(3) == {"2k+1": 7, "2^(k+1)-1": 15, "3^k": 27}
    assert nearest_candidate(14.2, 3) == "2^(k+1)-1" and nearest_candidate(None, 3) is None
    assert exponent(6.0, 2.0) == 3.0 and exponent(6.0, 0.0) is None and exponent(None, 2.0) is None


def test_measured_and_theory_exponents_equal_the_exact_degree():
    x = unit_rows(5, 8, seed=2)
    rows = k_layer_rows(x, ks=(1, 2, 3, 4))
    assert len(rows) == 8 * 4
    for r in rows:
        assert r["exact_exponent"] is not None
        assert r["exponent_measured"] == pytest.approx(r["exact_exponent"], rel=1e-9)
        assert r["exponent_theory"] == pytest.approx(r["exact_exponent"], rel=1e-9)
    # float64 features cannot hold κ(G)^81: the row says it is not to be trusted, never a wrong number silently
    deep = next(r for r in rows if r["code"] == "ccc" and r["k"] == 4)
    assert deep["float64"] is None or not deep["float64"]["trusted"]
    s = summarise(rows)
    assert s["follows"]["iic"] == ["2k+1"] and s["follows"]["icc"] == ["2^(k+1)-1"] and s["follows"]["ccc"] == ["3^k"]
    assert s["follows"]["iii"] == []  # G^3 at every depth: no law in k
    assert next(c for c in s["cells"] if c["code"] == "cii" and c["k"] == 2)["paper_2k_plus_1_fits"]


def test_summary_on_hand_made_rows_can_reject_every_law():
    rows = [{"code": "ccc", "k": k, "exact_exponent": None, "exponent_measured": 1.0, "exponent_theory": None}
            for k in (1, 2)]
    s = summarise(rows)
    assert s["follows"]["ccc"] == [] and all(not c["paper_2k_plus_1_fits"] for c in s["cells"])


@pytest.mark.parametrize("kwargs, match", [(dict(codes=("xyz",)), "unknown recursion"), (dict(ks=(0,)), "ks"),
                                           (dict(ks=(61,)), r"1\.\.60"), (dict(n=(1,)), "n must be")])
def test_bad_config_is_a_one_line_error(kwargs, match):
    with pytest.raises(MalleabilityError, match=match):
        KLayerConfig(**kwargs)


def test_residual_code_theory_matches_the_measured_recursion():
    # a non-monomial Gram polynomial: κ depends on X's scale, so theory and measurement must use the same X
    x = 3.0 * unit_rows(4, 6, seed=3)
    for r in k_layer_rows(x, codes=("ccc+res",), ks=(1, 2)):
        assert r["exact_exponent"] is None
        assert r["log10_kappa_theory"] == pytest.approx(r["log10_kappa_measured"], rel=1e-9)


def test_k_layer_rows_reject_bad_input():
    with pytest.raises(MalleabilityError, match="unknown recursion"):
        k_layer_rows(unit_rows(3, 4, 0), codes=("ab",))
    with pytest.raises(MalleabilityError, match="n >= 2"):
        k_layer_rows(unit_rows(1, 4, 0))


def test_runs_on_real_mnist_and_cifar(data_root):
    cfg = KLayerConfig(datasets=("mnist", "cifar10"), n=(8,), codes=("iic", "icc"), ks=(1, 2), data_root=str(data_root),
                       measure_max_n=8)
    rows = run(cfg)
    assert {r["dataset"] for r in rows} == {"mnist", "cifar10"} and len(rows) == 8
    for r in rows:
        assert r["log10_kappa_G"] > 0
        assert r["exponent_measured"] == pytest.approx(r["exact_exponent"], rel=1e-6)
