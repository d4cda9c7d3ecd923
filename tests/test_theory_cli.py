"""The theory CLI through click's CliRunner: exit codes, JSON keys and values, every bad input."""

import json
import math
import os
import pickle
import re

import numpy as np
import pytest
from click.testing import CliRunner

from malleability.reports.cli import main
from malleability.theory import inspect_matrix, sensitivity

INSPECT_KEYS = {"n", "d", "rank", "kappa_G", "pseudo_kappa_G", "kappa_G3", "pseudo_kappa_G3", "kappa_K_norm",
                "pseudo_kappa_K_norm", "kappa_ntk_inf", "precision", "warnings", "layers"}


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


@pytest.fixture()
def npy(tmp_path):
    def save(arr, name="x.npy"):
        p = tmp_path / name
        np.save(p, np.asarray(arr))
        return str(p)
    return save


def test_check_json_one_claim():
    res = run("theory", "check", "k-layer", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    (claim,) = doc["claims"]
    assert claim["id"] == "k-layer" and claim["verdict"] == "depends"
    assert {"id", "statement", "as_stated", "verdict", "verdict_label", "meaning", "counterexample", "readings",
            "readings_holding", "readings_failing"} <= set(claim)
    assert claim["readings_holding"] == ["iic", "ici", "cii"] and "as-stated" in claim["readings_failing"]


def test_check_says_what_each_claim_should_take_and_what_it_took():
    from malleability.theory.claims import EXPECTED_SECONDS

    res = run("theory", "check", "k-layer", "thm4.1")
    assert res.exit_code == 0, res.output
    lines = res.stderr.strip().splitlines()
    quick = EXPECTED_SECONDS["quick"]
    assert lines[0] == (f"checking k-layer (quick; about {quick['k-layer']:.0f} s on the reference CPU, "
                        f"{quick['k-layer'] + quick['thm4.1']:.0f} s left in all)")
    assert re.fullmatch(r"checked k-layer in \d+ s", lines[1]) and lines[2].startswith("checking thm4.1 (quick; about")
    assert len(lines) == 4 and lines[3].startswith("checked thm4.1 in ")
    # thorough's table covers every claim, so the paper scale's estimate prices its theory cells
    from malleability.theory import CLAIM_IDS

    assert set(EXPECTED_SECONDS["thorough"]) == set(EXPECTED_SECONDS["quick"]) == set(CLAIM_IDS)
    assert sum(EXPECTED_SECONDS["thorough"].values()) > 10 * sum(quick.values())


def test_check_table_and_unknown_id():
    res = run("theory", "check", "k-layer")
    assert res.exit_code == 0 and "k-layer" in res.stdout and "depends" in res.stdout
    bad = run("theory", "check", "thm9.9")
    assert bad.exit_code == 2 and bad.stderr.startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
    assert run("theory", "check", "--profile", "fast").exit_code == 2


def test_inspect_json(npy):
    x = np.random.default_rng(0).standard_normal((4, 6))
    res = run("theory", "inspect", npy(x), "--layers", "2", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert INSPECT_KEYS <= set(doc)
    assert doc["n"] == 4 and doc["d"] == 6 and doc["rank"] == 4 and doc["precision"] == "float64"
    g = x @ x.T
    assert doc["kappa_G"] == pytest.approx(np.linalg.cond(g), rel=1e-9)
    assert doc["kappa_G3"] == pytest.approx(doc["kappa_G"] ** 3, rel=1e-9)
    assert len(doc["layers"]) == 2 * 9
    for row in doc["layers"]:
        assert set(row) >= {"k", "recursion", "exponent", "claimed_exponent", "kappa"}
    ccc2 = next(r for r in doc["layers"] if r["k"] == 2 and r["recursion"] == "ccc")
    assert ccc2["exponent"] == pytest.approx(9) and ccc2["claimed_exponent"] == 5


def test_inspect_singular(npy):
    x = np.random.default_rng(1).standard_normal((6, 3))
    res = run("theory", "inspect", npy(x), "--recursion", "iic", "--layers", "1", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kappa_G"] is None and doc["pseudo_kappa_G"] is not None
    assert doc["kappa_K_norm"] is None and doc["pseudo_kappa_K_norm"] is not None
    assert [r["recursion"] for r in doc["layers"]] == ["iic"]


def test_equal_rows_name_the_pseudo_kappa_that_is_one(npy):
    # rank 1: κ(G) is infinite (null), the pseudo-κ is 1; the warning must not say κ(G) = 1
    res = run("theory", "inspect", npy(np.ones((5, 3))), "--layers", "1", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kappa_G"] is None and doc["pseudo_kappa_G"] == pytest.approx(1.0)
    assert not any(w.startswith("κ(G) = 1") for w in doc["warnings"])
    assert any(w.startswith("pseudo-κ(G) = 1") for w in doc["warnings"])
    # an orthogonal basis: κ(G) itself is 1
    doc = json.loads(run("theory", "inspect", npy(np.eye(3)), "--layers", "1", "--json").stdout)
    assert doc["kappa_G"] == pytest.approx(1.0) and any(w.startswith("κ(G) = 1") for w in doc["warnings"])


def test_a_zero_row_is_refused_by_inspect_and_answered_by_sensitivity(npy):
    # inspect reports the normalised kernel, undefined at a zero row; Prop 4.5 is about K = G³, which is not
    x = np.random.default_rng(3).standard_normal((4, 3))
    x[0] = 0.0
    path = npy(x)
    refused = run("theory", "inspect", path)
    assert refused.exit_code == 2 and "zero row" in refused.output and "Traceback" not in refused.output
    res = run("theory", "sensitivity", path, "--i", 0, "--j", 2, "--eps", 0.1, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    c = x.T @ x
    closed_form = 0.1 * np.abs(c @ c @ x[2]).sum()  # max of δᵀC²x_j over the box: ε‖C²x_j‖₁
    assert doc["max_change_query"] == pytest.approx(closed_form, rel=1e-12)
    assert doc["bound_query_exact"] == pytest.approx(closed_form, rel=1e-12)
    assert all(math.isfinite(doc[k]) for k in ("max_change_query", "max_change_transductive"))


def test_sensitivity_json(npy):
    x = np.random.default_rng(2).standard_normal((3, 3))
    res = run("theory", "sensitivity", npy(x), "--i", 0, "--j", 2, "--eps", 0.05, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    ref = sensitivity(x, 0, 2, 0.05)
    for key in ("max_change_query", "max_change_transductive", "bound_query_exact"):
        assert doc[key] == pytest.approx(ref[key])
    names = {r["name"] for r in doc["readings"]}
    assert "as-stated" in names
    for r in doc["readings"]:
        assert set(r) >= {"name", "bound_value", "holds"}
        assert r["bound_value"] is not None  # n = d: every bound type-checks


def bad_cases(npy, tmp_path):
    good = npy(np.ones((3, 2)) + np.eye(3, 2))
    nan = np.ones((3, 2))
    nan[0, 0] = np.nan
    inf = np.ones((3, 2))
    inf[1, 1] = np.inf
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not a numpy file")
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(bytes(range(256)) * 4)  # not UTF-8, not .npy
    zero_row = np.ones((3, 3)) + np.eye(3)
    zero_row[1] = 0
    return [
        ("theory", "inspect", npy(nan, "nan.npy")),
        ("theory", "inspect", npy(inf, "inf.npy")),
        ("theory", "inspect", npy(np.ones(3), "vec.npy")),
        ("theory", "inspect", npy(np.ones((0, 3)), "empty.npy")),
        ("theory", "inspect", str(junk)),
        ("theory", "inspect", str(tmp_path / "missing.npy")),
        ("theory", "inspect", good, "--layers", "0"),
        ("theory", "inspect", good, "--layers", "abc"),
        ("theory", "inspect", good, "--layers", "61"),
        ("theory", "inspect", good, "--layers", "2.5"),
        ("theory", "inspect", npy(zero_row, "zero_row.npy")),
        ("theory", "inspect", npy(np.array([[1, 2], [3, 4]], dtype="timedelta64[s]"), "td.npy")),
        ("theory", "inspect", npy(np.array([["2020-01-01", "2021-01-01"]], dtype="datetime64[D]"), "dt.npy")),
        ("theory", "inspect", npy(np.array([["a", "b"]]), "str.npy")),
        ("theory", "inspect", str(garbage)),
        ("theory", "sensitivity", good, "--i", "x", "--j", "0", "--eps", "0.1"),
        ("theory", "sensitivity", good, "--i", "0", "--j", "0", "--eps", "abc"),
        ("theory", "sensitivity", good, "--i", "0", "--j", "0", "--eps", "inf"),
        ("theory", "inspect", good, "--recursion", "xyz"),
        ("theory", "sensitivity", good, "--i", "3", "--j", "0", "--eps", "0.1"),
        ("theory", "sensitivity", good, "--i", "0", "--j", "-1", "--eps", "0.1"),
        ("theory", "sensitivity", good, "--i", "0", "--j", "0", "--eps", "0"),
        ("theory", "sensitivity", good, "--i", "0", "--j", "0", "--eps", "-0.5"),
        ("theory", "sensitivity", npy(nan, "nan2.npy"), "--i", "0", "--j", "0", "--eps", "0.1"),
        ("theory", "sensitivity", str(tmp_path / "missing.npy"), "--i", "0", "--j", "0", "--eps", "0.1"),
    ]


def test_bad_inputs_exit_2_one_line(npy, tmp_path):
    for args in bad_cases(npy, tmp_path):
        res = run(*args)
        assert res.exit_code == 2, (args, res.output)
        assert "Traceback" not in res.output
        err = res.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), (args, res.stderr)
        assert not re.search(r"\b[A-Z][a-zA-Z]*(Error|Exception)\b", err[0]), err[0]


def test_library_inspect_matches_cli_and_validates():
    x = np.random.default_rng(3).standard_normal((3, 5))
    out = inspect_matrix(x, layers=1, recursion="ccc")
    assert out["layers"][0]["exponent"] == pytest.approx(3)
    from malleability.errors import MalleabilityError

    with pytest.raises(MalleabilityError):
        inspect_matrix(x, layers=0)


class _CreatesFile:
    """Unpickling this object would create a file: the loader must refuse before that."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_object_array_is_refused_without_loading(tmp_path):
    target = tmp_path / "created_by_unpickling"
    arr = np.empty((1, 1), dtype=object)
    arr[0, 0] = _CreatesFile(str(target))
    path = tmp_path / "evil.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array(fh, arr, allow_pickle=True)
    assert b"created_by_unpickling" in path.read_bytes() and pickle  # the payload is really there
    for args in (("theory", "inspect", str(path)), ("theory", "sensitivity", str(path), "--i", 0, "--j", 0,
                                                    "--eps", 0.1)):
        res = run(*args)
        assert res.exit_code == 2 and res.stderr.startswith("error:") and "objects" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert not os.path.exists(target)


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_extreme_scales_give_the_scale_free_kappa(npy, scale):
    x = np.random.default_rng(4).standard_normal((4, 5))
    ref = json.loads(run("theory", "inspect", npy(x, "ref.npy"), "--layers", 2, "--json").stdout)
    res = run("theory", "inspect", npy(x * scale, "big.npy"), "--layers", 2, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    for key in ("kappa_G", "kappa_G3", "kappa_K_norm", "kappa_ntk_inf"):
        assert doc[key] == pytest.approx(ref[key], rel=1e-9)
    mono = [(r, r0) for r, r0 in zip(doc["layers"], ref["layers"]) if "+res" not in r["recursion"]]
    assert [r["kappa"] for r, _ in mono] == pytest.approx([r0["kappa"] for _, r0 in mono], rel=1e-9)
    # X + X XᵀX is not scale-free: at 1e300 the cubic term dominates (κ of ccc), at 1e-300 the identity (κ(G))
    by = {(r["k"], r["recursion"]): r["kappa"] for r in doc["layers"]}
    for k in (1, 2):
        limit = by[(k, "ccc")] if scale > 1 else doc["kappa_G"]
        assert by[(k, "ccc+res")] == pytest.approx(limit, rel=1e-9)


def test_rows_of_scales_beyond_float64_range_take_mpmath_or_a_one_line_error(npy):
    """Row scales 1 and 2^-700: X XᵀX's small row underflows in float64 (its norm is 2^-2100), so
    only mpmath can normalise it. K_norm is then exactly the identity, and so is Θ up to 1/2."""
    x = np.diag([1.0, 2.0**-700])
    out = inspect_matrix(x, layers=1, recursion="iii")
    assert out["precision"].startswith("mpmath-")
    assert out["kappa_ntk_inf"] == 1 and out["pseudo_kappa_K_norm"] == 1
    assert out["rank"] == 1  # by the documented tolerance on X's singular values, 2^-700 is no direction
    # 1e300 beside 1e-300: no float64 scale holds both rows; scaling would make row 1 zero
    res = run("theory", "inspect", npy(np.diag([1e300, 1e-300]), "span.npy"))
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines() == [
        "error: X's rows span more than float64's range: row 1 (max |x| = 1.0e-300) underflows to zero beside "
        "max |X| = 1.0e+300: no float64 scale holds both"]


def test_sensitivity_extreme_scales_strict_json(npy):
    x = np.random.default_rng(5).standard_normal((3, 3))
    for arr, eps in ((x * 1e300, 0.1), (x, 1e300), (x * 1e-300, 1e-300)):
        res = run("theory", "sensitivity", npy(arr, "s.npy"), "--i", 0, "--j", 1, "--eps", eps, "--json")
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)  # strict: the CLI dumps with allow_nan=False
        ref = sensitivity(x, 0, 1, 0.1)
        for r, r0 in zip(doc["readings"], ref["readings"]):
            if r["perturbation"] == "query" and r["ratio"] is not None:
                # query reading: change ∝ t⁵ε, bound ∝ t^(deg-1)ε; with (t, ε) = (1e300, 0.1) etc the ratio
                # is scaled by a known power of t only
                t = float(np.abs(arr).max() / np.abs(x).max())
                deg = {"as-printed": 4, "gram-column": 3, "feature-gram": 4, "exact-query": 6}[r["bound"]]
                expected = float(r0["ratio"]) * t ** (6 - deg) if abs(math.log10(t)) * (6 - deg) < 300 else None
                if expected is not None:
                    assert float(r["ratio"]) == pytest.approx(expected, rel=1e-9)


def test_layers_up_to_12_with_bounds(npy):
    x = np.random.default_rng(6).standard_normal((3, 4))
    res = run("theory", "inspect", npy(x), "--layers", 12, "--recursion", "ccc", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    row = doc["layers"][-1]
    assert row["k"] == 12 and row["exponent"] == pytest.approx(3**12, rel=1e-9)
    import mpmath

    with mpmath.workdps(50):
        s = mpmath.svd_r(mpmath.matrix(x.tolist()), compute_uv=False)
        ref = (max(s) / min(s)) ** (2 * 3**12)
        assert abs(mpmath.mpf(row["kappa"]) / ref - 1) < 1e-6
    assert row["rel_error_bound"] is not None and row["rel_error_bound"] < 1e-6
