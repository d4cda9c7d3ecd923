"""The statistics module against closed forms: exact binomial tails, Fisher's z, the exact bootstrap
distribution of a mean, and least squares on the points that remain after skipping."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats

from malleability.stats import (
    above_chance,
    correlation_interval,
    loglog_slope,
    mean_interval,
    paired_ratio,
)


def _binomial_upper_tail(correct: int, total: int, chance: Fraction) -> Fraction:
    return sum(math.comb(total, i) * chance**i * (1 - chance) ** (total - i) for i in range(correct, total + 1))


@pytest.mark.parametrize("correct, total, chance", [(7, 20, Fraction(1, 10)), (16, 20, Fraction(1, 2)),
                                                    (15, 20, Fraction(1, 2)), (30, 200, Fraction(1, 10))])
def test_gate_p_value_is_the_exact_one_sided_binomial_tail(correct, total, chance):
    out = above_chance(correct, total, float(chance))
    exact = float(_binomial_upper_tail(correct, total, chance))
    assert out["p_value"] == pytest.approx(exact, rel=1e-9)
    assert out["learned"] == (exact < 0.01)


def test_gate_is_one_sided_and_at_the_one_percent_level():
    # 16 of 20 at chance 1/2: one-sided p = 0.0059 (learned); two-sided 0.0118 would not be
    assert above_chance(16, 20, 0.5)["learned"] is True
    # 15 of 20: p = 0.0207 is below 5% but not below 1%
    out = above_chance(15, 20, 0.5)
    assert 0.01 < out["p_value"] < 0.05 and out["learned"] is False
    assert above_chance(3, 20, 0.5)["learned"] is False  # far below chance is not "learned" either way
    assert above_chance(0, 0, 0.5)["learned"] is None


def test_correlation_interval_is_fishers_z_interval_mapped_back():
    rho = [0.2, 0.5, 0.7, 0.9]
    z = np.arctanh(rho)
    half = scipy.stats.t.ppf(0.975, len(rho) - 1) * z.std(ddof=1) / math.sqrt(len(rho))
    out = correlation_interval(rho)
    assert out["ci95"] == pytest.approx([math.tanh(z.mean() - half), math.tanh(z.mean() + half)], rel=1e-12)
    assert out["mean"] == pytest.approx(np.mean(rho)) and -1 < out["ci95"][0] < out["ci95"][1] < 1


def test_mean_interval_is_the_student_t_interval_and_skips_booleans_and_non_finite():
    v = [0.1, 0.4, 0.35, 0.8]
    half = scipy.stats.t.ppf(0.975, 3) * np.std(v, ddof=1) / 2
    out = mean_interval([*v, True, None, float("nan"), "x"])  # a bool is not a measurement
    assert out["n"] == 4 and out["values"] == v
    assert out["ci95"] == pytest.approx([np.mean(v) - half, np.mean(v) + half], rel=1e-12)


def test_paired_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    """Numerators 0..9 over ten seeds, denominators 1: a resampled ratio is the mean of ten draws with
    replacement, whose exact law is the ten-fold convolution of the uniform law on 0..9."""
    num = {s: float(s) for s in range(10)}
    den = {s: 1.0 for s in range(10)}
    law = np.ones(1)
    for _ in range(10):
        law = np.convolve(law, np.ones(10) / 10)
    cdf = np.cumsum(law)

    def quantile(q):  # of the resampled mean = sum / 10
        return float(np.searchsorted(cdf, q)) / 10

    out = paired_ratio(num, den)
    assert out["ratio"] == pytest.approx(4.5)
    lo, hi = out["ci95"]
    # 2000 resamples: the empirical 2.5% and 97.5% points sit within about 0.15 of the exact ones,
    # and apart from the exact 5% / 95% points (3.0 and 6.0 against 2.7 and 6.3)
    assert lo == pytest.approx(quantile(0.025), abs=0.15) and hi == pytest.approx(quantile(0.975), abs=0.15)
    assert abs(lo - quantile(0.05)) > 0.1 or abs(hi - quantile(0.95)) > 0.1


def test_loglog_slope_skips_non_positive_points_and_fits_the_rest_exactly():
    x = [4, 16, 64, 64, 256]
    y = [1.0, 0.5, 0.0, 0.25, -3.0]  # y <= 0 has no logarithm: skipped and counted
    out = loglog_slope(x, y)
    assert out["skipped"] == 2 and out["n_points"] == 3
    assert out["slope"] == pytest.approx(-0.5, rel=1e-12)  # y = 2 x^-1/2 on the three kept points
    assert out["intercept"] == pytest.approx(math.log(2), rel=1e-12)


def test_a_two_point_slope_has_no_interval_and_no_class():
    # two points always have a sign: a class read from them could never be "flat", so none is given
    from malleability.stats import slope_class

    two = loglog_slope([4, 16], [1.0, 0.5])
    assert two["slope"] == pytest.approx(-0.5) and two["ci95"] is None and "without an interval" in two["reason"]
    assert slope_class(two) is None
    three = loglog_slope([4, 16, 64], [1.0, 0.52, 0.24])
    assert three["ci95"] is not None and slope_class(three) == "falls"
    noisy = loglog_slope([4, 16, 64], [1.0, 0.3, 1.1])
    assert slope_class(noisy) == "flat"  # the interval holds 0: the check that could fail does
