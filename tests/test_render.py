"""The report rendered from a results document alone: sections, determinism, escaping, HTML."""

from __future__ import annotations

import copy
import json
import re

import pytest

from malleability.reports.report import build_markdown, render_report
from malleability.reports.report.markdown import esc, pow10


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from malleability.reports.audit import get_scale, run_audit

    out = tmp_path_factory.mktemp("tiny")
    run_audit(get_scale("tiny"), out, cache_dir=out / "cache", workers=1, render=False)
    return json.loads((out / "results.json").read_text())


def _render(results, out):
    plots = render_report(results, out)
    return plots, (out / "report.md").read_text(), (out / "report.html").read_text()


def test_every_section_renders(tiny, tmp_path):
    plots, md, html = _render(tiny, tmp_path)
    for title in ("## Verdicts", "## Table 1", "## Tables 2 and 3", "## Table 4", "## κ of the data",
                  "## k layers of attention on real data", "## Missing cells", "## Scale and reproducibility"):
        assert title in md
    expected = {name: ok for name, ok in plots.items() if name != "truncation.png"}  # tiny runs no truncated-attn
    assert all(expected.values()) and all((tmp_path / name).stat().st_size > 1000 for name in expected)
    for v in tiny["verdicts"]:  # rendered generically, one row per verdict
        assert f"| {esc(v['claim'])} |" in md and v["verdict_label"] in md


def test_new_claim_shows_without_code_changes(tiny):
    doc = copy.deepcopy(tiny)
    doc["verdicts"].append(dict(doc["verdicts"][0], claim="brand-new-claim", statement="a new statement"))
    md = build_markdown(doc, {})
    assert "| brand-new-claim | a new statement |" in md


def test_rerender_is_byte_identical_and_loaded_equals_in_memory(tiny, tmp_path):
    _, md1, html1 = _render(tiny, tmp_path / "a")
    _, md2, html2 = _render(json.loads(json.dumps(tiny)), tmp_path / "b")
    assert md1 == md2 and html1 == html2
    assert not list((tmp_path / "a").glob("*.tmp*"))  # atomic writes leave no temp file


def test_html_has_no_raw_markdown(tiny, tmp_path):
    _, md, html = _render(tiny, tmp_path)
    assert "**" in md and "`" in md  # the Markdown uses both, so the check below can fail
    assert "**" not in html and "`" not in html
    assert "<table>" in html and 'src="data:image/png;base64,' in html


def test_user_text_is_escaped_in_markdown_and_html(tiny, tmp_path):
    doc = copy.deepcopy(tiny)
    evil = "/data/<script>alert(1)</script>**bold**|`x`"
    doc["options"]["data_root"] = evil
    doc["labels"]["datasets"]["mnist"] = "<img src=x onerror=alert(1)>"
    _, md, html = _render(doc, tmp_path)
    assert "<script>" not in md and "<img src=x" not in md
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_did_not_learn_cell_is_named(tiny):
    md = build_markdown(tiny, {})
    cell = tiny["summary"]["ntk"]["mnist"]["cells"][0]
    assert cell["learned_seeds"] < cell["seeds"]  # the tiny scale does not learn in 1 epoch
    assert f"{cell['learned_seeds']}/{cell['seeds']} (did not learn)" in md


def test_paper_in_interval_column_only_with_three_seeds(tiny):
    assert "paper in 95%" not in build_markdown(tiny, {})
    doc = copy.deepcopy(tiny)
    cell = next(c for c in doc["summary"]["flip"]["mnist"]["cells"] if c["attack"] == "fgsm"
                and c["model"] == "mlp-attn")
    cell["flip_rate"].update(n=3, ci95=[0.1, 0.5])  # the paper's 34.6% inside
    md = build_markdown(doc, {})
    assert "paper in 95% (≥ 3 seeds)" in md
    row = next(line for line in md.splitlines() if "| MLP-Attn | paper | fgsm |" in line)
    assert row.endswith("| yes |") and "[10.0%, 50.0%]" in row


def test_printed_intervals_are_those_of_results(tiny):
    doc = copy.deepcopy(tiny)
    cell = next(c for c in doc["summary"]["ntk"]["mnist"]["cells"] if c["distance"] == "after_vs_init_absolute")
    cell["ci95"] = [1.23456, 7.654321]
    slope = doc["summary"]["ntk"]["mnist"]["slopes"][0]
    slope["ci95"] = [-0.111, 0.222]
    md = build_markdown(doc, {})
    assert "[1.23, 7.65]" in md and "[-0.111, 0.222]" in md
    for c in tiny["summary"]["flip"]["mnist"]["cells"]:
        lo, hi = c["flip_rate"]["ci95"]
        assert f"[{100 * lo:.1f}%, {100 * hi:.1f}%]" in md


def test_widths_as_powers_of_ten(tiny):
    md = build_markdown(tiny, {})
    for w in tiny["summary"]["widths"]["rows"]:
        assert pow10(w["log10_v1"]) in md
    assert not re.search(r"\d{20,}", md)
    assert pow10(400.04) == "10^400.0"


def test_missing_cells_listed(tiny):
    doc = copy.deepcopy(tiny)
    doc["missing"] = [{"kind": "flip-rate", "label": "flip mnist relu", "why": "failed: out of memory"}]
    assert "| flip-rate | flip mnist relu | failed: out of memory |" in build_markdown(doc, {})
