"""flip-rate and ntk-distance run their sweeps as audit cells: cached, resumable after Ctrl-C, shared with the audit."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from malleability.reports.audit import cells as audit_cells
from malleability.reports.cli import EXIT_INTERRUPTED, main


def _flip_args(data_root, cache, *extra):
    return ["flip-rate", "--dataset", "mnist", "--n", "40", "--n-test", "10", "--attack", "pgd", "--eps", "0.3",
            "--seeds", "2", "--epochs", "1", "--width", "8", "--data-root", str(data_root), "--device", "cpu",
            "--cache-dir", str(cache), "--json", *extra]


def _rows(res) -> list[dict]:
    assert res.exit_code == 0, res.output
    return [{k: v for k, v in r.items() if k != "timing_s"} for r in json.loads(res.stdout)["rows"]]


def test_a_rerun_reads_the_cache_and_fresh_recomputes_the_same_rows(data_root, tmp_path):
    first = CliRunner().invoke(main, _flip_args(data_root, tmp_path / "c"))
    assert "4 in all, 0 cached, 4 to run" in first.stderr and "estimate" in first.stderr
    again = CliRunner().invoke(main, _flip_args(data_root, tmp_path / "c"))
    assert "4 in all, 4 cached, 0 to run" in again.stderr
    fresh = CliRunner().invoke(main, _flip_args(data_root, tmp_path / "c", "--fresh"))
    assert "4 in all, 0 cached, 4 to run" in fresh.stderr
    assert _rows(first) == _rows(again) == _rows(fresh)
    assert json.loads(first.stdout)["summary"] == json.loads(again.stdout)["summary"]


def test_ctrl_c_keeps_the_finished_cells_and_a_rerun_resumes(data_root, tmp_path, monkeypatch):
    real = audit_cells.RUNNERS["flip-rate"]
    calls = []

    def interrupted_on_the_third(cfg):
        calls.append(cfg)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(cfg)

    monkeypatch.setitem(audit_cells.RUNNERS, "flip-rate", interrupted_on_the_third)
    res = CliRunner().invoke(main, _flip_args(data_root, tmp_path / "c"))
    assert res.exit_code == EXIT_INTERRUPTED
    assert "kept 2 cell(s)" in res.stderr and "rerun the same command to resume" in res.stderr
    monkeypatch.setitem(audit_cells.RUNNERS, "flip-rate", real)
    resumed = CliRunner().invoke(main, _flip_args(data_root, tmp_path / "c"))
    assert "4 in all, 2 cached, 2 to run" in resumed.stderr
    whole = CliRunner().invoke(main, _flip_args(data_root, tmp_path / "other"))
    assert _rows(resumed) == _rows(whole)


def test_a_failing_cell_is_one_error_line_and_exit_2(data_root, tmp_path, monkeypatch):
    from malleability.errors import MalleabilityError

    def refuse(cfg):
        raise MalleabilityError("this cell cannot run")

    monkeypatch.setitem(audit_cells.RUNNERS, "ntk-distance", refuse)
    res = CliRunner().invoke(main, ["ntk-distance", "--dataset", "mnist", "--n", "30", "--n-test", "10",
                                    "--widths", "8", "--seeds", "1", "--epochs", "1", "--models", "relu",
                                    "--data-root", str(data_root), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines()[-1] == "error: this cell cannot run"


@pytest.mark.parametrize("workers", ["0", "100000"])
@pytest.mark.parametrize("command", ["flip-rate", "ntk-distance"])
def test_workers_outside_one_to_four_per_core_are_refused(data_root, command, workers):
    extra = ["--attack", "pgd"] if command == "flip-rate" else []
    res = CliRunner().invoke(main, [command, "--dataset", "mnist", "--n", "30", "--data-root", str(data_root),
                                    "--workers", workers, *extra])
    from malleability.reports.audit.executor import default_workers

    cap = 4 * default_workers()
    assert res.exit_code == 2 and f"--workers must be in 1..{cap} (4 per core of this machine), got {workers}" in res.output


@pytest.mark.parametrize("command", ["flip-rate", "ntk-distance"])
def test_no_test_points_is_refused_before_any_cell_runs(data_root, tmp_path, command):
    # without test points no accuracy gate can judge a model, and flip-rate has no test loss to attack
    extra = ["--attack", "pgd"] if command == "flip-rate" else ["--widths", "8"]
    res = CliRunner().invoke(main, [command, "--dataset", "mnist", "--n", "30", "--n-test", "0", "--epochs", "1",
                                    "--data-root", str(data_root), "--cache-dir", str(tmp_path / "c"), *extra])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines() == [
        "error: --n-test must be >= 1, got 0: without test points no model can be judged learned"]
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.json"))


def test_k_layer_cells_are_cached_per_data_set_and_n(data_root, tmp_path):
    args = ["k-layer", "--datasets", "mnist", "--n", "20,30", "--codes", "iic", "--ks", "1,2", "--measure-max-n", "0",
            "--data-root", str(data_root), "--cache-dir", str(tmp_path / "c"), "--json"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "2 in all, 0 cached, 2 to run" in first.stderr
    bigger = CliRunner().invoke(main, [*args[:4], "20,30,40", *args[5:]])
    assert bigger.exit_code == 0, bigger.output
    assert "3 in all, 2 cached, 1 to run" in bigger.stderr
    rows, more = json.loads(first.stdout)["rows"], json.loads(bigger.stdout)["rows"]
    assert [r for r in more if r["n"] in (20, 30)] == rows


def test_the_same_rows_under_another_spelling_of_the_root_are_the_cached_cell(data_root, tmp_path, monkeypatch):
    args = ["k-layer", "--datasets", "mnist", "--n", "8", "--codes", "iic", "--ks", "1", "--measure-max-n", "0",
            "--cache-dir", str(tmp_path / "c"), "--json"]
    first = CliRunner().invoke(main, [*args, "--data-root", str(data_root)])
    assert first.exit_code == 0 and "1 in all, 0 cached, 1 to run" in first.stderr, first.output
    monkeypatch.setenv("MALLEABILITY_DATA", str(data_root) + "/")
    again = CliRunner().invoke(main, args)  # the root from the environment, with a trailing slash
    assert again.exit_code == 0 and "1 in all, 1 cached, 0 to run" in again.stderr, again.output
    assert json.loads(again.stdout)["rows"] == json.loads(first.stdout)["rows"]


def test_ctrl_c_in_a_command_without_cells_says_nothing_was_kept(monkeypatch):
    import malleability.theory as theory

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(theory, "check_claims", interrupted)
    res = CliRunner().invoke(main, ["theory", "check", "thm4.1"])
    assert res.exit_code == EXIT_INTERRUPTED
    assert res.stderr.strip() == "interrupted: this command keeps no partial result"


@pytest.mark.parametrize("command, option, value, named", [
    ("ntk-distance", "--widths", "4,8,4", "4"),
    ("ntk-distance", "--seeds", "0,1,0", "0"),
    ("ntk-distance", "--models", "relu,mlp-attn,relu", "'relu'"),
    ("flip-rate", "--eps", "0.1,0.10", "0.1"),
    ("flip-rate", "--attack", "fgsm,FGSM", "'fgsm'"),
    ("k-layer", "--n", "50,050", "50"),
])
def test_every_list_option_refuses_a_repeated_value_on_one_line(data_root, tmp_path, command, option, value, named):
    # one rule for every list: a repeat would weigh a seed or width twice, or is a typo; none is dropped silently
    base = {"ntk-distance": ["--dataset", "mnist", "--n", "8"],
            "flip-rate": ["--dataset", "mnist", "--n", "8", "--attack", "pgd", "--eps", "0.1"],
            "k-layer": ["--datasets", "mnist"]}[command]
    args = [command, *base, option, value, "--data-root", str(data_root), "--cache-dir", str(tmp_path / "c")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err == f"error: {option} repeats {named} in {value!r}: give each value once", err
    assert not (tmp_path / "c").exists()  # refused before any work


def test_a_sweep_refuses_a_cache_it_cannot_write(data_root, tmp_path, monkeypatch):
    # a sweep has no results.json: with no writable cache an interrupt would lose every finished cell
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = ["k-layer", "--datasets", "mnist", "--n", "10", "--ks", "1", "--data-root", str(data_root)]
    monkeypatch.setenv("MALLEABILITY_CACHE_DIR", str(blocker))
    for extra, cache in (([], blocker), (["--cache-dir", str(blocker / "sub")], blocker / "sub")):
        res = CliRunner().invoke(main, [*args, *extra])
        assert res.exit_code == 2, res.output
        (line,) = res.stderr.strip().splitlines()
        assert line.startswith(f"error: cache {cache}") and "give a writable --cache-dir" in line
