"""`malleability k-layer` through click's CliRunner: the JSON document, the table, every bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from malleability.empirics.experiments import k_layer
from malleability.errors import MalleabilityError
from malleability.reports.cli import main
from malleability.theory import layers

SMALL = ["--datasets", "mnist", "--n", "8", "--ks", "1,2", "--measure-max-n", "8"]


def run(*args):
    return CliRunner().invoke(main, ["k-layer", *map(str, args)])


@pytest.fixture(scope="module")
def small_json(data_root):
    res = run(*SMALL, "--data-root", data_root, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), res.stderr


def test_json_has_the_rows_the_summary_and_where_they_came_from(small_json, data_root):
    doc, stderr = small_json
    assert set(doc) == {"config", "rows", "summary", "provenance"}
    assert doc["config"]["datasets"] == ["mnist"] and doc["config"]["n"] == [8] and doc["config"]["ks"] == [1, 2]
    assert len(doc["rows"]) == len(layers.CODES) * 2
    for r in doc["rows"]:  # n = 8 <= measure_max_n: every row measured by the mpmath recursion
        assert r["dataset"] == "mnist" and r["n"] == 8
        assert r["exponent_measured"] == pytest.approx(r["exact_exponent"], rel=1e-6)
    assert doc["summary"] == k_layer.summarise(doc["rows"])
    assert doc["summary"]["follows"]["iic"] == ["2k+1"] and doc["summary"]["follows"]["ccc"] == ["3^k"]
    assert doc["provenance"]["versions"]["malleability"]
    assert "[1/1] done k-layer mnist n=8 (mpmath recursion)" in stderr  # progress on stderr, never in the JSON


def test_table_names_the_law_of_each_code(data_root):
    res = run(*SMALL, "--codes", "iic,ccc", "--data-root", data_root)
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "iic follows 2k+1" in out and "ccc follows 3^k" in out
    assert not any(line.startswith(("cii", "iii")) for line in out.splitlines())  # only the codes asked for
    iic2 = next(line.split() for line in out.splitlines() if line.startswith("iic") and line.split()[1] == "2")
    assert iic2[2] == "5" and iic2[3] == "5" and iic2[4] == "2k+1"  # k, exponent, exact, law


@pytest.mark.parametrize("args, match", [
    (["--codes", "iic,xyz"], "unknown recursion 'xyz'"),
    (["--n", "1"], "--n values must be >= 2"),
    (["--n", "8,ten"], "--n must be a comma list of integers"),
    (["--ks", "0"], "--ks values must be >= 1"),
    (["--ks", "1.5"], "--ks must be a comma list of integers"),
    (["--datasets", "imagenet"], "unknown dataset 'imagenet'"),
    (["--measure-max-n", "-1"], "--measure-max-n must be >= 0"),
    (["--measure-max-n", "many"], "'many' is not a valid integer"),
    (["--dps-margin", "5"], "--dps-margin must be in 10..200"),
    (["--dps-margin", "100000"], "--dps-margin must be in 10..200"),
    (["--seed", "4294967296"], "--seed must be in 0..4294967295"),
    (["--seed", "-1"], "--seed must be in 0..4294967295"),
])
def test_bad_input_is_one_line_and_exit_2(args, match, data_root):
    res = run("--n", "8", "--ks", "1", "--data-root", data_root, *args)
    assert res.exit_code == 2, res.output
    assert match in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output and res.stdout == ""


def test_missing_data_set_folder_is_one_line_before_any_work(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    for root, match in ((empty, "not found"), (tmp_path / "absent", "does not exist")):
        res = run("--datasets", "mnist", "--n", "8", "--data-root", root)
        assert res.exit_code == 2, res.output
        assert match in res.stderr and len(res.stderr.strip().splitlines()) == 1  # no progress line: nothing ran


def test_a_repeated_size_is_refused_like_every_repeated_list_value():
    from malleability.reports.cli_k_layer import parse_ints

    assert parse_ints("50,20", "--n", minimum=2) == (50, 20)
    with pytest.raises(MalleabilityError, match="--n repeats 50"):
        parse_ints("50,20,050", "--n", minimum=2)


def test_sixty_layers_finish_and_the_table_says_which_rows_the_digit_cap_left_to_theory(data_root, tmp_path):
    res = run(*SMALL[:4], "--ks", "1,60", "--codes", "iic,ccc", "--measure-max-n", "8", "--data-root", data_root,
              "--cache-dir", tmp_path)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    ccc60 = next(line.split() for line in lines if line.startswith("ccc") and line.split()[1] == "60")
    assert ccc60[2] == ccc60[3] == "4.239e+28" and ccc60[4] == "3^k"  # 3^60, in the column's width
    note = next(line for line in lines if line.startswith("not measured"))
    assert note.endswith(f"more than {k_layer.MAX_MEASURE_DIGITS} mpmath digits), so the exponent is the Gram "
                         "polynomial's: ccc k=60")  # iic at k = 60 (G^121) is within the cap, ccc at k = 1 too
    assert "stack k <= 4 layers; measured to k = 60" in res.stderr  # the estimate says it may be low
    shallow = run(*SMALL[:4], "--ks", "1,4", "--codes", "ccc", "--measure-max-n", "8", "--data-root", data_root,
                  "--cache-dir", tmp_path)
    assert shallow.exit_code == 0 and "not measured" not in shallow.stdout and "measured to k" not in shallow.stderr


def test_the_estimate_caveat_names_only_deep_measured_cells():
    from types import SimpleNamespace

    from malleability.reports.audit.cost_model import outside_fit

    def cell(ks, n, measure_max_n=50):
        return SimpleNamespace(kind="k-layer", config=k_layer.KLayerConfig(datasets=("mnist",), n=(n,), ks=ks,
                                                                            measure_max_n=measure_max_n))

    assert outside_fit([cell((1, 2, 3, 4), 50), cell((9,), 100)]) == []  # fitted depth; deep but unmeasured
    (line,) = outside_fit([cell((1, 5), 50), cell((7,), 20), cell((9,), 100)])
    assert "measured to k = 7" in line
