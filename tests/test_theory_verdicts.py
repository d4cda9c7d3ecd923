"""The claim-verdict rule on hand-made reading lists, and the width judges on hand-made tables."""

import math

import pytest

from malleability.theory.claims.base import ClaimResult, Reading
from malleability.theory.claims.verdicts import VERDICTS, claim_verdict
from malleability.theory.claims.width import judge_constant, judge_necessary, judge_sufficient, judge_width


@pytest.mark.parametrize("as_stated, readings, expected", [
    ("holds", {"as-stated": "holds", "b": "fails"}, "holds"),
    ("holds", {"as-stated": "holds"}, "holds"),
    ("fails", {"as-stated": "fails", "b": "holds", "c": "fails"}, "depends"),
    ("not-testable", {"as-stated": "not-testable", "b": "holds"}, "depends"),
    ("fails", {"as-stated": "fails", "b": "fails"}, "fails"),
    ("not-testable", {"as-stated": "not-testable", "b": "fails"}, "fails"),
    ("not-testable", {"as-stated": "not-testable", "b": "not-testable"}, "not-testable"),
    (None, [], "not-testable"),
    ("fails", ["fails", "not-testable"], "fails"),
])
def test_claim_verdict_rules(as_stated, readings, expected):
    assert claim_verdict(as_stated, readings) == expected
    assert set(VERDICTS) == {"holds", "depends", "fails", "not-testable"}


def test_unknown_reading_verdict_is_refused():
    with pytest.raises(ValueError):
        claim_verdict("undetermined", [])


def test_claim_result_ignores_informational_readings():
    rs = [Reading("as-stated", "fails", {"x": 1}, {}), Reading("c", "holds", None, {}, informational=True)]
    res = ClaimResult("t", "s", rs)
    d = res.to_dict()
    assert d["verdict"] == "fails" and d["verdict_label"] == "fails under every decided reading"
    assert d["readings_holding"] == [] and d["counterexample"] == {"reading": "as-stated", "x": 1}


def row(n, kappa, width, *, v2=None):
    return {"n": n, "kappa_G": kappa, "kappa_d": kappa, "width_w": width, "predicted_v1": kappa**6 / 0.01,
            "predicted_v2": v2 if v2 is not None else kappa**6 * n * math.log(n)}


def test_sufficient_fails_with_smallest_counterexample():
    rows = [row(4, 10.0, 2**10), row(4, 1.0, 512), row(8, 1.0, 64)]  # 512 > κ⁶/ε² = 100 at κ = 1, n = 4
    verdict, ce, ev = judge_sufficient(rows, "width_w", "predicted_v1", cap=2**20)
    assert verdict == "fails" and ce["n"] == 4 and ce["kappa_G"] == 1.0 and ce["measured_width"] == 512
    assert ce["predicted_width"] == pytest.approx(100) and ev["matrices_failing"] == 1


def test_sufficient_holds_and_censoring():
    rows = [row(4, 1.0, 64), row(4, 10.0, 2**10), row(4, 100.0, None)]  # censored, predicted 1e14 > cap
    verdict, ce, ev = judge_sufficient(rows, "width_w", "predicted_v1", cap=2**20)
    assert verdict == "holds" and ce is None and ev["matrices_decided"] == 2
    # a censored width whose prediction is below the cap exceeds the prediction: fails
    verdict, ce, _ = judge_sufficient([row(4, 2.0, None)], "width_w", "predicted_v1", cap=2**20)
    assert verdict == "fails" and ce["measured_width"] is None
    assert judge_sufficient([row(4, 100.0, None)], "width_w", "predicted_v1", cap=2**20)[0] == "not-testable"


def test_necessary_slope_rule():
    grows = [row(4, k, max(1, int(k**6))) for k in (1.0, 3.0, 10.0)]  # slope 6: holds
    assert judge_necessary(grows, "width_w", "kappa_G", "predicted_v1", cap=2**60)[0] == "holds"
    flat = [row(4, k, 512) for k in (1.0, 10.0, 100.0)]
    verdict, ce, ev = judge_necessary(flat, "width_w", "kappa_G", "predicted_v1", cap=2**60)
    assert verdict == "fails" and ce["kappa_G"] == 100.0 and ev["per_n"][4]["slope"] == pytest.approx(0)
    # censored at the largest κ: the slope is a lower bound; too small to decide
    cens = [row(4, 1.0, 512), row(4, 10.0, 1024), row(4, 100.0, None)]
    assert judge_necessary(cens, "width_w", "kappa_G", "predicted_v1", cap=2**12)[0] == "not-testable"


def test_smallest_constant():
    rows = [row(4, 1.0, 1000), row(4, 10.0, 2**10)]
    verdict, _, ev = judge_constant(rows, "width_w", cap=2**20)
    assert verdict == "holds" and ev["smallest_constant"] == pytest.approx(10.0)
    assert judge_constant(rows + [row(4, 3.0, None)], "width_w", cap=2**20)[0] == "not-testable"


def test_judge_width_names():
    rows = [{**row(4, k, 512), **{f"width_{e}": 512 for e in ("rel-lambda-min", "rel-lambda-max", "rms-frobenius")}}
            for k in (1.0, 10.0)]
    names = [r.name for r in judge_width(rows, cap=2**20)]
    assert names[:5] == ["as-stated", "v1-sufficient", "v2-necessary", "v2-sufficient", "smallest-constant"]
    assert "as-stated/rel-lambda-max" in names and "v1-sufficient/rms-frobenius" in names


def test_width_measurement_exact_on_the_identity():
    import numpy as np

    from malleability.theory.claims.width import error_curve, ntk_inf, rms_frobenius_width

    z = np.eye(8)
    theta = ntk_inf(z)
    assert np.array_equal(theta, np.eye(8) / 2)
    # Σ u² p(1-p) = 8 · 1/4 = 2; 2/(0.1 · 0.5)² = 800 -> 1024
    assert rms_frobenius_width(z, 0.5, 0.1) == 1024
    # width 1: Θ_1 = diag(b), b ∈ {0,1}: the error is exactly 1/2
    errs = error_curve(z, theta, 3, np.random.default_rng(0))
    assert errs[0] == 0.5 and errs.shape == (4,)
