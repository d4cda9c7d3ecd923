"""Rendering: the report from a results dict, the `report` command, and its errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from malleability.reports import paper_numbers as P
from malleability.reports.audit import SCHEMA, CRITERIA, Scale, summarise
from malleability.reports.cli import main
from malleability.reports.render import Doc, render_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ntk(task, model, width, seed, dist):
    return {"kind": "ntk", "label": f"ntk {task} {model} {width} {seed}", "status": "computed",
            "tags": {"task": task, "model": model, "width": width, "seed": seed},
            "config": {"data": {"dataset": task, "n": 10, "n_test": 5, "classes": None},
                       "train": {"protocol": "paper", "epochs": 1, "dtype": "float32", "device": "cpu"},
                       "model": model, "width": width},
            "result": {"distance": {"after_vs_init_absolute": dist, "init_vs_infinite_relative": dist / 100}}}


def _flip(table, task, attack, adv, model, seed, rate):
    return {"kind": "flip", "label": f"flip {task} {model} {attack}", "status": "computed",
            "tags": {"table": table, "task": task, "attack": attack, "adv_train": adv, "model": model, "seed": seed},
            "config": {"data": {"dataset": task, "n": 10, "n_test": 5, "classes": None},
                       "train": {"protocol": "paper", "epochs": 1, "dtype": "float32", "device": "cpu"},
                       "model": model, "attack": attack, "eps": 0.3},
            "result": {"flip_rate": rate, "spearman": 0.5, "topk_overlap": 0.7}}


def synthetic_results() -> dict:
    cells = []
    for seed, jitter in ((0, 1.0), (1, 1.1)):
        for m in (16, 64, 256):
            cells.append(_ntk("mnist", "relu", m, seed, 40.0 * jitter * (m / 16) ** -0.5))
            cells.append(_ntk("mnist", "mlp-attn", m, seed, 10.0 * jitter * (m / 16) ** 0.3))
        for attack in ("fgsm", "pgd", "mim"):
            cells.append(_flip("table2", "mnist", attack, False, "relu", seed, 0.04 * jitter))
            cells.append(_flip("table2", "mnist", attack, False, "mlp-attn", seed, 0.30 * jitter))
        # the noise control: below every attack (relu 0.03, mlp-attn 0.10 -> ratio 3.33)
        cells.append(_flip("table2", "mnist", "noise", False, "relu", seed, 0.03 * jitter))
        cells.append(_flip("table2", "mnist", "noise", False, "mlp-attn", seed, 0.10 * jitter))
    cells.append(_flip("table2", "fashion-mnist", "pgd", False, "relu", 0, 0.123))  # no paper number
    missing = [{"kind": "flip", "label": "flip cifar10 relu fgsm seed=0", "why": "not in this scale"}]
    summary, verdicts = summarise(cells, missing)
    return {"schema": SCHEMA, "scale": {"name": "synthetic", "description": "test", "flip_eps": 0.3},
            "scale_help": {}, "options": {"device": "cpu", "workers": 1},
            "provenance": {"git_commit": "abc", "versions": {"torch": "x"}}, "counts": {"cells": len(cells),
            "computed": len(cells), "cached": 0, "failed": 0, "missing": 1}, "wall_time_s": 1.0,
            "verdicts": verdicts, "summary": summary, "criteria": CRITERIA, "missing": missing, "cells": cells,
            "cache_refusals": []}


def test_doc_markdown_escapes_pipes_and_html_escapes(tmp_path):
    doc = Doc()
    doc.h(2, "T")
    doc.table(["a|b", "c"], [["<x>", "1"]])
    md = doc.markdown()
    assert "| a\\|b | c |" in md and "|---|---|" in md
    assert "&lt;x&gt;" in doc.html(tmp_path)


def test_render_report_contents(tmp_path):
    results = synthetic_results()
    plots = render_report(results, tmp_path)
    assert all(plots.values()), results.get("render_warnings")
    for name in plots:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    md = (tmp_path / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Verdicts"  # the verdict table comes first
    # every claim and table has a verdict row
    for claim in ("thm4.1", "thm4.7", "prop4.5", "ntk-trend", "table2", "table3", "table4", "headline-6-9x"):
        assert f"| {claim} |" in md
    # synthetic data: relu shrinks, attention grows -> the paper's trend; ratio 7.5 -> headline in [6, 9]
    verdict = {v["claim"]: v["verdict"] for v in results["verdicts"]}
    # (only MNIST was measured: the verdicts say they rest on part of the paper's cells)
    assert verdict["ntk-trend"] == "reproduced (partial: 2 of 4 cells measured)"
    assert verdict["headline-6-9x"] == "reproduced (partial: 3 of 6 cells measured)"
    # MNIST ratios 7.5 vs the paper's 8.4, 8.8, 6.4: all within a factor 2
    assert verdict["table2"] == "reproduced (partial: 3 of 6 cells measured)"
    assert verdict["table4"] == "not run"
    assert "34.6%" in md and "45.1" in md  # the paper's numbers stand beside ours
    assert "| Fashion-MNIST | 2L-ReLU | PGD | — | 12.3%" in md  # cells without a paper number are kept
    assert "missing" in md and "not in this scale" in md
    # the noise control: a row per model right after the paper's attacks, no paper number, no verdict change
    assert "| MNIST | 2L-ReLU | noise control | — | 3.1%" in md and "| MNIST | MLP-Attn | noise control | — | 10.5%" in md
    assert md.index("| MNIST | 2L-ReLU | MIM |") < md.index("| MNIST | 2L-ReLU | noise control |")
    assert "| MNIST | noise control | — | 3.33" in md  # its MLP-Attn/ReLU ratio, beside the attacks'
    noise = results["summary"]["flip"]["noise_control"]
    assert noise == [{"table": "table2", "task": "mnist", "noise": {"relu": pytest.approx(0.0315),
                      "mlp-attn": pytest.approx(0.105)}, "excess": {
                          "relu": {a: pytest.approx(0.042 - 0.0315) for a in ("fgsm", "pgd", "mim")},
                          "mlp-attn": {a: pytest.approx(0.315 - 0.105) for a in ("fgsm", "pgd", "mim")}},
                      "noise_ratio": pytest.approx(0.105 / 0.0315)}]
    # one sentence under the verdict table, one under Table 2, both computed from the numbers
    verdict_part = md[md.index("## Verdicts"):md.index("## Table 1")]
    assert ("MNIST: MLP-Attn/ReLU ratio for noise 3.33, PGD flip rate exceeds noise by +21.0 points (MLP-Attn) "
            "and +1.1 points (2L-ReLU)") in verdict_part
    table2_part = md[md.index("## Table 2"):md.index("## Table 3")]
    assert "Noise control (random signs" in table2_part and "MLP-Attn FGSM +21.0, PGD +21.0, MIM +21.0" in table2_part
    assert "Noise control" not in md[md.index("## Table 3"):md.index("## Table 4")]  # no binary noise cells here
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4


def test_report_command_rerenders_without_recomputing(tmp_path):
    results = synthetic_results()
    (tmp_path / "results.json").write_text(json.dumps(results))
    before = (tmp_path / "results.json").read_bytes()
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "report.md").is_file() and (tmp_path / "ntk_distance.png").is_file()
    assert (tmp_path / "results.json").read_bytes() == before
    # --resummarise recomputes verdicts from the stored cells (here: the same ones) and stores them
    stale = {**results, "verdicts": [{**results["verdicts"][0], "verdict": "stale"}]}
    (tmp_path / "results.json").write_text(json.dumps(stale))
    r = CliRunner().invoke(main, ["report", str(tmp_path), "--resummarise"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "results.json").read_text())["verdicts"] == results["verdicts"]
    assert "stale" not in (tmp_path / "report.md").read_text()


def test_report_command_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["report", str(tmp_path / "nope")])
    assert r.exit_code == 2 and r.output.strip().startswith("error: not an audit folder")
    r = runner.invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "no results.json" in r.output
    (tmp_path / "results.json").write_text("{not json")
    r = runner.invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "not valid JSON" in r.output and len(r.output.strip().splitlines()) == 1
    (tmp_path / "results.json").write_text(json.dumps({"schema": "other"}))
    r = runner.invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "not an audit results file" in r.output


def test_paper_numbers_cover_every_table():
    rows = P.all_numbers()
    assert sum(r["quantity"] == "ntk_distance" for r in rows) == 12
    assert sum(r["quantity"] == "flip_rate" for r in rows) == 24 + 8
    assert {r["dataset"] for r in rows if r["quantity"] == "kappa_G"} == {"mnist", "cifar10"}
    assert P.paper_ntk_distance("mlp-attn", "cifar10", 4096) == 12.6 and P.paper_ntk_distance("relu", "mnist", 64) is None
    assert Scale.__dataclass_fields__["ntk_widths"].metadata["help"]


def test_noise_control_changes_no_verdict_and_old_results_still_render(tmp_path):
    """The control is information: verdicts with and without the noise cells are the same; a results.json
    written before the control existed (no noise_control key) still renders."""
    results = synthetic_results()
    without = [c for c in results["cells"] if c["tags"].get("attack") != "noise"]
    _summary, verdicts = summarise(without, results["missing"])
    assert verdicts == results["verdicts"]
    old = {**results, "summary": {**results["summary"], "flip": {"rows": results["summary"]["flip"]["rows"]}}}
    render_report(old, tmp_path)
    assert "ratio for noise 3.33" in (tmp_path / "report.md").read_text()


def _sweep_cell(task, attack, model, seed, eps, rate):
    c = _flip("eps-sweep", task, attack, False, model, seed, rate)
    c["tags"]["eps"] = eps
    c["config"]["eps"] = eps
    return c


def test_eps_sweep_section_changes_no_verdict_and_old_results_still_render(tmp_path):
    """The ε sweep: per ε the mean ± spread per model and attack, the MLP-Attn/ReLU ratio and PGD's excess over
    noise; the ε = 0.3 points come from Table 2's cells; verdicts are the same with and without it."""
    base = synthetic_results()
    cells = list(base["cells"])
    for seed, jitter in ((0, 1.0), (1, 1.1)):
        for eps in (0.1, 0.5):
            cells.append(_sweep_cell("mnist", "pgd", "relu", seed, eps, 0.1 * eps * jitter))
            cells.append(_sweep_cell("mnist", "pgd", "mlp-attn", seed, eps, 0.5 * eps * jitter))
            cells.append(_sweep_cell("mnist", "noise", "relu", seed, eps, 0.05 * eps * jitter))
            cells.append(_sweep_cell("mnist", "noise", "mlp-attn", seed, eps, 0.2 * eps * jitter))
    summary, verdicts = summarise(cells, base["missing"])
    assert verdicts == base["verdicts"]  # information only
    assert summary["flip"] == base["summary"]["flip"]  # the sweep does not leak into Tables 2-4
    sweep = summary["eps_sweep"]
    assert sweep["eps"] == [0.1, 0.3, 0.5]
    row = next(r for r in sweep["rows"] if (r["task"], r["attack"], r["model"], r["eps"]) == ("mnist", "pgd", "relu", 0.3))
    assert row["flip_rate"]["mean"] == pytest.approx(0.042)  # Table 2's cells
    ratios = {(r["attack"], r["eps"]): r["ratio"] for r in sweep["ratios"]}
    assert ratios[("pgd", 0.1)] == pytest.approx(5.0) and ratios[("pgd", 0.3)] == pytest.approx(7.5)
    assert ratios[("noise", 0.5)] == pytest.approx(4.0)
    excess = {(r["model"], r["eps"]): r["excess"] for r in sweep["excess_over_noise"]}
    assert excess[("mlp-attn", 0.5)] == pytest.approx(0.3 * 0.5 * 1.05) and excess[("relu", 0.3)] == pytest.approx(0.042 - 0.0315)
    assert {r["attack"] for r in sweep["excess_over_noise"]} == {"pgd"}  # not the fgsm/mim of Table 2 (not swept)

    results = {**base, "cells": cells, "summary": summary, "verdicts": verdicts}
    plots = render_report(results, tmp_path)
    assert plots["eps_sweep.png"] and (tmp_path / "eps_sweep.png").read_bytes()[:8] == PNG_MAGIC
    md = (tmp_path / "report.md").read_text()
    part = md[md.index("## ε sweep (no paper numbers)"):md.index("## What the numbers depend on")]
    assert "| data | attack | model | ε = 0.1 | ε = 0.3 | ε = 0.5 |" in part
    assert "| MNIST | PGD | MLP-Attn | 5.3% ± 0.4% [2.1%, 8.4%] (s=2) | 31.5% ± 2.1%" in part
    assert "| MNIST | PGD | 5 [" in part and "| 7.5 [" in part  # ratio per ε with its bootstrap interval
    assert "| MNIST | PGD | MLP-Attn | +3.1 | +21.0 | +15.8 |" in part  # excess over noise per ε, in points
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 5

    # results.json from before the sweep: no summary key, no sweep cells -> still renders, section says not run
    old = {**base, "summary": {k: v for k, v in base["summary"].items() if k != "eps_sweep"}}
    plots = render_report(old, tmp_path / "old")
    assert "eps_sweep.png" not in plots and all(plots.values())
    assert "Not run: this results.json holds no ε-sweep cells" in (tmp_path / "old" / "report.md").read_text()
    # an old summary but new cells (e.g. `report` without --resummarise): recomputed from the cells
    stale = {**results, "summary": {k: v for k, v in summary.items() if k != "eps_sweep"}}
    render_report(stale, tmp_path / "stale")
    assert "| MNIST | PGD | MLP-Attn | +3.1 | +21.0 | +15.8 |" in (tmp_path / "stale" / "report.md").read_text()
