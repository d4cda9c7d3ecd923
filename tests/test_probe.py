"""Probe: every bad input a demanding user tried, through the CLI: exit 2, one `error:` line, no traceback."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from malleability.reports.cli import main


def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(res, *, needle: str | None = None):
    err = res.stderr.strip()
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "Traceback" not in res.output and "Usage:" not in err
    if needle:
        assert needle in err, err


def _npy(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array, allow_pickle=True)
    return path


def _npz(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _rows(n=8, d=6, seed=0):
    return np.random.default_rng(seed).random((n, d)) + 0.1


@pytest.fixture
def matrices(tmp_path):
    zero = _rows()
    zero[2] = 0
    return {
        "zero-row": _npy(tmp_path, "zero.npy", zero),
        "timedelta": _npy(tmp_path, "td.npy", np.array([[1, 2], [3, 4]], dtype="timedelta64[s]")),
        "garbage": (lambda p: (p.write_bytes(os.urandom(300)), p)[1])(tmp_path / "garbage.npy"),
        "text": (lambda p: (p.write_text("not a matrix\n"), p)[1])(tmp_path / "text.npy"),
        "nan": _npy(tmp_path, "nan.npy", np.array([[1.0, np.nan], [0.5, 1.0]])),
        "1-d": _npy(tmp_path, "vec.npy", np.ones(4)),
    }


@pytest.mark.parametrize("case", ["zero-row", "timedelta", "garbage", "text", "nan", "1-d"])
def test_theory_inspect_bad_matrices(matrices, case):
    _one_line_error(_run(["theory", "inspect", matrices[case]]))


def test_a_pickled_payload_is_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npy"
    np.save(path, np.array([Payload()], dtype=object), allow_pickle=True)
    npz = tmp_path / "evil.npz"
    with open(npz, "wb") as fh:
        np.savez(fh, x=np.array([Payload()], dtype=object), y=np.array([0]))
    _one_line_error(_run(["theory", "inspect", path]))
    _one_line_error(_run(["widths", "--dataset", npz, "--n", "1"]))
    assert not marker.exists()
    assert pickle  # the payload class above is what pickle would have run


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_theory_on_extreme_magnitudes_computes_or_says_why(tmp_path, scale):
    path = _npy(tmp_path, "x.npy", _rows() * scale)
    for args in (["theory", "inspect", path], ["theory", "sensitivity", path, "--i", "0", "--j", "1", "--eps", "0.1"]):
        res = _run(args)
        assert res.exit_code in (0, 2), res.output
        assert "internal error" not in res.output and "Traceback" not in res.output
        if res.exit_code == 0:
            assert "NaN" not in res.stdout and "Infinity" not in res.stdout
    res = _run(["theory", "sensitivity", _npy(tmp_path, "y.npy", _rows()), "--i", "0", "--j", "1", "--eps", "1e300"])
    assert res.exit_code in (0, 2) and "internal error" not in res.output


def test_theory_inspect_many_layers_and_bad_layers(tmp_path):
    path = _npy(tmp_path, "x.npy", np.eye(3) + 0.1)
    assert _run(["theory", "inspect", path, "--layers", "10"]).exit_code == 0
    _one_line_error(_run(["theory", "inspect", path, "--layers", "abc"]))
    _one_line_error(_run(["theory", "inspect", path, "--layers", "0"]))


@pytest.mark.parametrize("command", ["ntk-distance", "widths"])
def test_infinite_eps_is_refused(data_root, command):
    _one_line_error(_run([command, "--dataset", "mnist", "--data-root", data_root, "--eps", "inf"]), needle="--eps")


def _bad_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 6))
    return {
        "one-class": _npz(tmp_path, "one.npz", x=x, y=np.zeros(40, dtype=int)),
        "unknown-test-label": _npz(tmp_path, "lab.npz", x=x, y=np.arange(40) % 2, x_test=x[:5],
                                   y_test=np.array([0, 1, 5, 0, 1])),
        "empty-x": _npz(tmp_path, "empty.npz", x=np.zeros((0, 6)), y=np.zeros(0, dtype=int)),
        "length-mismatch": _npz(tmp_path, "len.npz", x=x, y=np.arange(39) % 2),
        "huge": _npz(tmp_path, "huge.npz", x=x * 1e300, y=np.arange(40) % 2),
    }


@pytest.mark.parametrize("case", ["one-class", "unknown-test-label", "empty-x", "length-mismatch"])
def test_bad_npz_data_sets(tmp_path, case):
    path = _bad_npz(tmp_path)[case]
    _one_line_error(_run(["ntk-distance", "--dataset", path, "--n", "30", "--n-test", "5", "--widths", "8",
                          "--epochs", "1"]))
    _one_line_error(_run(["flip-rate", "--dataset", path, "--n", "30", "--n-test", "5", "--attack", "fgsm",
                          "--seeds", "1", "--epochs", "1", "--width", "8"]))


@pytest.mark.parametrize("command", ["ntk-distance", "flip-rate", "widths", "k-layer"])
def test_a_subset_seed_on_an_npz_is_refused_not_ignored(tmp_path, command):
    # an .npz is read in order: a seed of the subset draw would label a result with a draw that never happened
    rng = np.random.default_rng(0)
    path = _npz(tmp_path, "ordered.npz", x=rng.random((40, 6)), y=np.arange(40) % 2)
    flag = "--seed" if command == "k-layer" else "--data-seed"
    extra = {"ntk-distance": ["--widths", "8", "--epochs", "1", "--n-test", "5"],
             "flip-rate": ["--attack", "fgsm", "--seeds", "1", "--epochs", "1", "--width", "8", "--n-test", "5"],
             "widths": [], "k-layer": ["--ks", "1"]}[command]
    size = ["--datasets", path, "--n", "8"] if command == "k-layer" else ["--dataset", path, "--n", "20"]
    _one_line_error(_run([command, *size, *extra, flag, "3"]), needle=f"{flag} 3 has no effect on {path}")
    res = _run([command, *size, *extra, flag, "0"])
    assert res.exit_code == 0, res.output  # seed 0, the default, reads the same rows: accepted


def test_huge_entries_give_finite_numbers_or_a_reason(tmp_path):
    path = _bad_npz(tmp_path)["huge"]
    res = _run(["ntk-distance", "--dataset", path, "--n", "30", "--n-test", "5", "--widths", "8", "--epochs", "1",
                "--json"])
    assert res.exit_code in (0, 2) and "internal error" not in res.output
    if res.exit_code == 0:
        assert "NaN" not in res.stdout


def test_a_class_with_no_rows(tmp_path):
    rng = np.random.default_rng(0)
    path = _npz(tmp_path, "c.npz", x=rng.random((40, 6)), y=np.arange(40) % 3)
    _one_line_error(_run(["ntk-distance", "--dataset", path, "--classes", "0,7", "--n", "20", "--widths", "8"]))


@pytest.mark.parametrize("args", [
    ["ntk-distance", "--dataset", "mnist", "--dtype", "junk"],
    ["flip-rate", "--dataset", "mnist"],
    ["flip-rate", "--dataset", "mnist", "--attack", "pgd", "--n", "many"],
    ["theory", "check", "--profile", "huge"],
    ["bench", "influence", "--n", "0"],
    ["bench", "influence", "--repeats", "-5"],
    ["audit", "--nosuch"],
])
def test_usage_errors_are_one_line(args):
    res = _run(args)
    _one_line_error(res)
    assert "timing" not in res.output


def test_audit_out_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_error(_run(["audit", "--scale", "tiny", "--out", f, "--cache-dir", tmp_path / "c"]))


def test_widths_rows_garbage(tmp_path, data_root):
    g = tmp_path / "rows.npy"
    g.write_bytes(os.urandom(200))
    _one_line_error(_run(["widths", "--dataset", "mnist", "--data-root", data_root, "--n", "20", "--rows", g]))


def test_huge_width_is_refused_with_an_estimate(data_root):
    _one_line_error(_run(["ntk-distance", "--dataset", "mnist", "--data-root", data_root, "--widths", "99999999999"]),
                    needle="GiB")
