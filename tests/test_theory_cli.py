"""The theory CLI through click's CliRunner: exit codes, JSON keys and values, every bad input."""

import json

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
    assert set(claim) == {"id", "statement", "verdict", "counterexample", "readings"}


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


def test_inspect_singular_and_zero_row(npy):
    x = np.random.default_rng(1).standard_normal((6, 3))
    x[2] = 0
    res = run("theory", "inspect", npy(x), "--recursion", "iic", "--layers", "1", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kappa_G"] is None and doc["pseudo_kappa_G"] is not None
    assert doc["kappa_K_norm"] is None and doc["pseudo_kappa_K_norm"] is None
    assert any("zero" in w for w in doc["warnings"])
    assert [r["recursion"] for r in doc["layers"]] == ["iic"]


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
    return [
        ("theory", "inspect", npy(nan, "nan.npy")),
        ("theory", "inspect", npy(inf, "inf.npy")),
        ("theory", "inspect", npy(np.ones(3), "vec.npy")),
        ("theory", "inspect", npy(np.ones((0, 3)), "empty.npy")),
        ("theory", "inspect", str(junk)),
        ("theory", "inspect", str(tmp_path / "missing.npy")),
        ("theory", "inspect", good, "--layers", "0"),
        ("theory", "inspect", good, "--layers", "7"),
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


def test_library_inspect_matches_cli_and_validates():
    x = np.random.default_rng(3).standard_normal((3, 5))
    out = inspect_matrix(x, layers=1, recursion="ccc")
    assert out["layers"][0]["exponent"] == pytest.approx(3)
    from malleability.errors import MalleabilityError

    with pytest.raises(MalleabilityError):
        inspect_matrix(x, layers=0)
