"""k-layer attention on real data: the recursion against the exact theory, exponents, the summary."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from malleability.empirics.experiments import k_layer
from malleability.empirics.experiments.k_layer import (
    KLayerConfig,
    candidate_exponents,
    coefficient_layers,
    exponent,
    float64_features,
    k_layer_rows,
    measure_digits,
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


def test_a_gram_above_the_digit_cap_keeps_its_theory_exponent_and_says_why(monkeypatch):
    x = unit_rows(4, 6, seed=4)
    both = k_layer_rows(x, codes=("iic", "ccc"), ks=(1, 3))
    assert all(r["measured_digits"] and r["unmeasured_reason"] is None for r in both)
    need = measure_digits(next(r for r in both if r["code"] == "ccc" and r["k"] == 3)["log10_kappa_theory"], 30)
    # a cap just below ccc k = 3's digits: that row alone loses its measurement; each code has its own digits
    monkeypatch.setattr(k_layer, "MAX_MEASURE_DIGITS", need - 1)
    capped = k_layer_rows(x, codes=("iic", "ccc"), ks=(1, 3))
    for a, b in zip(both, capped):
        if (b["code"], b["k"]) == ("ccc", 3):
            assert b["log10_kappa_measured"] is None and b["measured_digits"] is None
            assert b["unmeasured_reason"] == f"needs {need} digits, above the cap of {need - 1}"
            assert b["exponent_theory"] == a["exponent_theory"] and b["nearest"] == "3^k"
        else:
            assert b["unmeasured_reason"] is None and b["exponent_measured"] == pytest.approx(a["exponent_measured"],
                                                                                          rel=1e-12)
    full = {(r["code"], r["k"]): r["measured_digits"] for r in both}
    assert full[("iic", 1)] == full[("iic", 3)] < full[("ccc", 1)] == need  # iic is not measured at ccc's digits
    assert next(r for r in capped if (r["code"], r["k"]) == ("ccc", 1))["measured_digits"] < need
    unmeasured = k_layer_rows(x, codes=("iic",), ks=(1,), measure=False)[0]
    assert unmeasured["measured_digits"] is None and unmeasured["unmeasured_reason"] == "n above measure_max_n"


def test_sixty_layers_of_every_code_finish_from_the_layer_degrees():
    # ccc at k = 60 is G^(3^60): its polynomial is never formed and its ~10^28 digits are never asked of mpmath
    assert theory_exponent("ccc", 60) == 3 ** 60 and theory_exponent("iic", 60) == 121
    assert theory_exponent("ccc+res", 60) is None
    rows = k_layer_rows(unit_rows(4, 6, seed=5), codes=ALL, ks=(60,))
    deep = next(r for r in rows if r["code"] == "ccc")
    assert deep["log10_kappa_measured"] is None and "above the cap" in deep["unmeasured_reason"]
    assert deep["exponent_theory"] == pytest.approx(3 ** 60, rel=1e-9) and deep["nearest"] == "3^k"
    iic = next(r for r in rows if r["code"] == "iic")
    assert iic["exponent_measured"] == pytest.approx(121, rel=1e-9)  # within the cap: still measured
    assert measure_digits(float("inf"), 30) > k_layer.MAX_MEASURE_DIGITS and measure_digits(None, 30) == 40
