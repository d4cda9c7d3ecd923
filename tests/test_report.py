"""The report: rendered from results.json alone, byte for byte reproducible, escaped, and honest about learning."""

from __future__ import annotations

import copy
import json
import re

import pytest
from click.testing import CliRunner

from malleability.reports.audit import get_scale, run_audit
from malleability.reports.cli import main
from malleability.reports.report import build_markdown, render_report


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("report")
    results = run_audit(get_scale("tiny"), tmp / "out", cache_dir=tmp / "cache", workers=1, data_root=str(data_root),
                        progress=None)
    return tmp / "out", results


def test_report_files_and_sections(tiny):
    out, results = tiny
    md = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("## Verdicts", "## Table 1", "## Tables 2 and 3", "## Table 4", "## κ of the data",
                    "## Missing cells", "## Scale and reproducibility"):
        assert heading in md
    assert md.index("## Verdicts") < md.index("## Table 1")
    for v in results["verdicts"]:  # every verdict row is shown, with its label and meaning
        assert v["verdict_label"] in md and v["meaning"].split(";")[0][:40] in md
    assert "measured wall time" in md and "estimate" in md
    assert (out / "ntk_distance.png").stat().st_size > 0 and (out / "flip_rates.png").stat().st_size > 0


def test_rerender_is_byte_for_byte(tiny, tmp_path):
    out, results = tiny
    md = (out / "report.md").read_bytes()
    res = CliRunner().invoke(main, ["report", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "report.md").read_bytes() == md
    loaded = json.loads((out / "results.json").read_text())
    assert build_markdown(loaded, {}) == build_markdown(results, {})
    render_report(loaded, tmp_path)
    assert (tmp_path / "report.md").read_bytes() == md
    assert (tmp_path / "report.html").read_bytes() == (out / "report.html").read_bytes()


def test_html_has_no_raw_markdown(tiny):
    out, _ = tiny
    html = (out / "report.html").read_text(encoding="utf-8")
    text = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", html, flags=re.S)
    text = re.sub(r"<[^>]+>", "", text)
    assert "**" not in text and "`" not in text and "| --- |" not in text and "|---|" not in text
    assert "<table>" in html and "data:image/png;base64," in html


def test_crafted_names_are_escaped_in_markdown_and_html(tiny):
    _, results = tiny
    crafted = copy.deepcopy(results)
    crafted["options"]["data_root"] = "<script>alert(1)</script>"
    crafted["scale"]["description"] = "**bold** <img src=x onerror=alert(1)>"
    md = build_markdown(crafted, {})
    assert "<script>" not in md and "<img" not in md
    from malleability.reports.report.html import to_html

    html = to_html(md, __import__("pathlib").Path("."), "t")
    assert "<script>alert" not in html and "<img src=x" not in html


def test_a_network_that_did_not_learn_is_named(tiny):
    _, results = tiny
    md = build_markdown(results, {})
    flips = [c for s in results["summary"]["flip"].values() for c in s["cells"]]
    if any(not c["accuracy"]["learned"] for c in flips):
        assert "(did not learn)" in md
    forced = copy.deepcopy(results)
    for s in forced["summary"]["flip"].values():
        for c in s["cells"]:
            c["accuracy"]["learned"] = False
    assert "(did not learn)" in build_markdown(forced, {})


def test_paper_in_interval_column_needs_three_seeds(tiny):
    _, results = tiny
    md = build_markdown(results, {})  # tiny has one seed: the column is never filled
    rows = [line for line in md.splitlines() if line.startswith("| MLP-Attn") and "%" in line]
    assert rows and all(line.rstrip(" |").endswith("—") for line in rows)


def test_intervals_printed_are_the_results(tiny):
    _, results = tiny
    md = build_markdown(results, {})
    cell = next(c for s in results["summary"]["flip"].values() for c in s["cells"] if c["flip_rate"]["ci95"])
    lo, hi = cell["flip_rate"]["ci95"]
    assert f"[{100 * lo:.1f}%, {100 * hi:.1f}%]" in md
