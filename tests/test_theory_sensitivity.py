"""Prop 4.5: the closed forms against brute force over the ℓ∞ box and exact rational arithmetic."""

import itertools
from fractions import Fraction

import numpy as np
import pytest

from malleability.errors import MalleabilityError
from malleability.theory.claims.prop4_5 import _exact_bound, _exact_change
from malleability.theory.sensitivity import change, first_order_gradient, max_change, sensitivity


def vertices(d, eps):
    for signs in itertools.product((-1.0, 1.0), repeat=d):
        yield eps * np.array(signs)


@pytest.mark.parametrize("seed", range(4))
def test_query_bound_is_tight_and_equals_vertex_brute_force(seed):
    x = np.random.default_rng(seed).standard_normal((5, 3))
    out = sensitivity(x, 1, 3, 0.2)
    brute = max(abs(change(x, 1, 3, v, "query")) for v in vertices(3, 0.2))
    assert out["max_change_query"] == pytest.approx(brute, rel=1e-12)
    assert out["bound_query_exact"] == pytest.approx(brute, rel=1e-12)
    c = x.T @ x
    assert out["bound_query_exact"] == pytest.approx(0.2 * np.abs(c @ c @ x[3]).sum(), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_transductive_search_beats_random_points(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 3))
    found, delta = max_change(x, 0, 2, 0.3, "transductive")
    assert np.abs(delta).max() <= 0.3 + 1e-15
    assert found == pytest.approx(abs(change(x, 0, 2, delta, "transductive")), rel=1e-12)
    samples = max(abs(change(x, 0, 2, rng.uniform(-0.3, 0.3, 3), "transductive")) for _ in range(300))
    assert found >= samples * (1 - 1e-12)


@pytest.mark.parametrize("reading", ["query", "transductive"])
def test_first_order_gradient_against_finite_differences(reading):
    x = np.random.default_rng(5).standard_normal((4, 3))
    g = first_order_gradient(x, 2, 1, reading)
    h = 1e-6
    fd = [(change(x, 2, 1, h * e, reading) - change(x, 2, 1, -h * e, reading)) / (2 * h) for e in np.eye(3)]
    assert np.allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_exact_change_matches_float_and_the_transductive_polynomial():
    x = np.array([[1, 2], [0, 1], [1, -1]])
    delta = [Fraction(1, 10), Fraction(-1, 10)]
    for reading in ("query", "transductive"):
        ex = _exact_change(x, 0, 1, delta, reading)
        assert float(ex) == pytest.approx(change(x.astype(float), 0, 1, np.array([0.1, -0.1]), reading), rel=1e-12)
    # 1×1: K(x+δ, x) transductive = (x+δ)^5 · x
    assert _exact_change(np.array([[1]]), 0, 0, [Fraction(1, 10)], "transductive") == Fraction(11, 10) ** 5 - 1


def test_printed_bound_only_typed_when_square():
    x = np.random.default_rng(1).standard_normal((4, 3))
    out = sensitivity(x, 0, 1, 0.1)
    printed = [r for r in out["readings"] if r["bound"] == "as-printed"]
    assert all(r["bound_value"] is None and r["holds"] is None for r in printed)
    xs = np.array([[1, 2], [3, 4]])
    g = xs @ xs.T
    assert _exact_bound(xs, 0, Fraction(1), "as-printed") == np.abs(g @ xs[0]).sum()


@pytest.mark.parametrize("kwargs", [dict(i=5, j=0, eps=0.1), dict(i=0, j=-1, eps=0.1), dict(i=0, j=0, eps=0.0),
                                    dict(i=0, j=0, eps=-1.0), dict(i=0, j=0, eps=float("nan"))])
def test_bad_arguments(kwargs):
    with pytest.raises(MalleabilityError):
        sensitivity(np.ones((3, 2)), **kwargs)


def test_query_verdict_invariant_to_the_scale_of_eps():
    x = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0], [2.0, 0.0, 1.0]])
    ratios, verdicts = [], []
    for eps in (1e-13, 1e-6, 0.1, 1e3):
        out = sensitivity(x, 0, 1, eps)
        r = next(r for r in out["readings"] if r["name"] == "as-stated")
        ratios.append(float(r["ratio"]))
        verdicts.append(r["holds"])
        # both sides exactly linear in ε: compare with the exact rational values
        c = x.T @ x
        assert float(r["max_change"]) == pytest.approx(eps * np.abs(c @ c @ x[1]).sum(), rel=1e-13)
    assert len(set(verdicts)) == 1 and verdicts[0] is False
    assert ratios == pytest.approx([ratios[0]] * 4, rel=1e-12)


def test_scaling_x_scales_the_query_ratio_by_t_squared():
    # change ∝ t⁵, printed bound ∝ t³: the ratio moves by t², so the verdict flips at t² = 1/ratio
    x = np.array([[1.0, 2.0], [0.5, -1.0]])
    base = next(r for r in sensitivity(x, 0, 1, 0.1)["readings"] if r["name"] == "as-stated")
    ratio = float(base["ratio"])
    for t in (0.01, 0.5, 2.0, 1e5):
        r = next(r for r in sensitivity(t * x, 0, 1, 0.1)["readings"] if r["name"] == "as-stated")
        assert float(r["ratio"]) == pytest.approx(ratio * t**2, rel=1e-12)
        assert r["holds"] == (ratio * t**2 <= 1)
    t_cross = 1 / np.sqrt(ratio)
    assert next(r for r in sensitivity(t_cross * 0.999 * x, 0, 1, 0.1)["readings"]
                if r["name"] == "as-stated")["holds"] is True
    assert next(r for r in sensitivity(t_cross * 1.001 * x, 0, 1, 0.1)["readings"]
                if r["name"] == "as-stated")["holds"] is False


@pytest.mark.parametrize("eps", [1e-13, 1e-7])
def test_tiny_eps_change_has_no_cancellation(eps):
    x = np.array([[1, 2], [3, -1], [1, 1]])
    delta = [Fraction(eps), Fraction(-eps)]
    for reading in ("query", "transductive"):
        ex = _exact_change(x, 0, 1, delta, reading)
        got = change(x.astype(float), 0, 1, np.array([eps, -eps]), reading)
        assert got == pytest.approx(float(ex), rel=1e-12)


def test_transductive_change_equals_exact_polynomial_at_large_eps():
    x = np.array([[1, 0, 2], [0, 1, -1]])
    delta = [Fraction(3), Fraction(-2), Fraction(5)]
    ex = _exact_change(x, 1, 0, delta, "transductive")
    assert change(x.astype(float), 1, 0, np.array([3.0, -2.0, 5.0]), "transductive") == pytest.approx(float(ex),
                                                                                                   rel=1e-12)


def test_a_bound_beyond_float64_range_is_still_judged():
    import mpmath

    from malleability.theory.sensitivity import exceeds

    # magnitudes past 1.8e308: a float tolerance would be inf and every bound would hold
    assert exceeds(mpmath.mpf("1e501"), mpmath.mpf("1e200"), mpmath.mpf("1e400"), 3, 3)
    assert not exceeds(mpmath.mpf("1e200"), mpmath.mpf("1e501"), mpmath.mpf("1e400"), 3, 3)
