"""check_claims: verdict structure, and every reported counterexample re-verified independently."""

import json
from fractions import Fraction

import numpy as np
import pytest

from malleability.errors import MalleabilityError
from malleability.theory import CLAIM_IDS, check_claims
from malleability.theory import exact


@pytest.fixture(scope="module")
def results():
    return {r.id: r for r in check_claims(profile="quick")}


def reading(res, name):
    return next(r for r in res.readings if r.name == name)


def test_structure(results):
    assert list(results) == list(CLAIM_IDS)
    for r in results.values():
        d = json.loads(json.dumps(r.to_dict()))
        assert set(d) == {"id", "statement", "verdict", "counterexample", "readings"}
        assert d["verdict"] in {"holds", "fails", "depends", "undetermined"}
        assert any(rd["name"] == "as-stated" for rd in d["readings"])
        for rd in d["readings"]:
            assert set(rd) == {"name", "verdict", "counterexample", "evidence"}
            assert rd["verdict"] in {"holds", "fails", "undetermined"}
            assert (rd["counterexample"] is not None) == (rd["verdict"] == "fails")


def test_thm41(results):
    r = results["thm4.1"]
    assert reading(r, "as-stated").verdict == "holds"
    assert reading(r, "symbolic").verdict == "holds"
    ce = reading(r, "normalised-features").counterexample
    x = np.array(ce["X"], dtype=float)
    g = x @ x.T
    g3 = g @ g @ g
    dinv = 1 / np.sqrt(np.diag(g3))
    assert not np.allclose(dinv[:, None] * g3 * dinv[None, :], g3)
    assert reading(r, "ntk-inf").verdict == "fails"
    assert r.verdict == "depends"


def kappa_exact(a, norm):
    a = [[Fraction(v) for v in row] for row in a]
    inv = exact.inverse(a)
    f = {"1": exact.norm1, "inf": exact.norm_inf}[norm]
    return f(a) * f(inv)


def test_thm47(results):
    r = results["thm4.7"]
    assert reading(r, "as-stated").verdict == "holds"
    assert reading(r, "pseudo-2-norm").verdict == "holds"
    for norm in ("1", "inf"):
        ce = reading(r, f"{norm}-norm").counterexample
        x = np.array(ce["X"], dtype=np.int64)
        g = (x @ x.T).tolist()
        g3 = np.linalg.matrix_power(x @ x.T, 3).tolist()
        assert kappa_exact(g3, norm) != kappa_exact(g, norm) ** 3
        assert np.asarray(ce["X"]).size <= 4  # smallest: a 2×2 exists (1×1 cannot fail)
    ce = reading(r, "normalised-kernel").counterexample
    x = np.array(ce["X"], dtype=float)
    kg = np.linalg.cond(x @ x.T)
    z = x @ x.T @ x
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    assert abs(np.linalg.cond(z @ z.T) - kg**3) > 1e-3 * kg**3
    assert r.verdict == "depends"


def test_k_layer(results):
    r = results["k-layer"]
    assert reading(r, "as-stated").verdict == "fails"  # ccc: Gram_2 = G^9, not G^5
    assert reading(r, "as-stated").counterexample["exponent"] == 9
    for code in ("iic", "ici", "cii"):
        assert reading(r, code).verdict == "holds"
    assert reading(r, "ccc+res").counterexample["exponent"] is None


def test_prop45(results):
    r = results["prop4.5"]
    assert reading(r, "query/exact-query").verdict == "holds"
    ce = reading(r, "as-stated").counterexample
    x = np.array(ce["X"], dtype=np.int64)
    n, d = x.shape
    assert n == d
    eps = Fraction(ce["eps"])
    i, j = ce["i"], ce["j"]
    c = x.T @ x
    change = eps * int(np.abs(c @ c @ x[j]).sum())
    bound = eps * int(np.abs((x @ x.T) @ x[j]).sum())
    assert change > bound and str(change) == ce["change"]
    assert reading(r, "transductive/exact-query").verdict == "fails"


def test_width(results):
    r = results["thm4.7-width"]
    ev = reading(r, "as-stated").evidence
    assert len(ev["rows"]) >= 3
    for row in ev["rows"]:
        assert row["predicted_v1"] == pytest.approx(row["kappa_G"] ** 6 / ev["eps"] ** 2)


def test_unknown_id_and_profile():
    with pytest.raises(MalleabilityError):
        check_claims(["thm9.9"])
    with pytest.raises(MalleabilityError):
        check_claims(profile="slowest")
