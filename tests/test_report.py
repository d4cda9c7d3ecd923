"""The report from a real tiny audit: every section, `malleability report DIR` byte for byte (see test_render.py too)."""

from __future__ import annotations

import copy
import json

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
                    "## k layers of attention on real data", "## Missing cells", "## Scale and reproducibility"):
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


def test_a_flip_set_edge_tied_within_rounding_is_shown_beside_the_floor(tiny):
    _, results = tiny
    md = build_markdown(results, {})
    cells = [c for s in results["summary"]["flip"].values() for c in s["cells"]]
    assert all(c["edge_by_rounding"]["recorded"] == len(c["seeds"]) for c in cells)
    assert "rounding alone can swap them" in md
    if not any(c["edge_by_rounding"]["seeds"] for c in cells):
        assert "; edge tied in" not in md
    forced = copy.deepcopy(results)
    target = next(iter(forced["summary"]["flip"].values()))["cells"][0]
    target["edge_by_rounding"]["seeds"] = target["seeds"][:1]
    assert f"; edge tied in 1/{len(target['seeds'])}" in build_markdown(forced, {})
    older = copy.deepcopy(results)  # an audit from before the edge was recorded: no column text, no caption
    for s in older["summary"]["flip"].values():
        for c in s["cells"]:
            c["edge_by_rounding"] = None
    md_old = build_markdown(older, {})
    assert "; edge tied in" not in md_old and "rounding alone can swap them" not in md_old


def test_model_labels_drop_unset_options_and_keep_the_rest():
    from malleability.reports.report.lookup import model_label, model_text

    results = {"labels": {"models": {"patch-attn": "Patch-Attn", "mlp-attn": "MLP-Attn"}}}
    key = "patch-attn[attention=linear,attention_input=center,image_shape=None,patch_size=None]"
    assert model_text(results, key) == "Patch-Attn (attention=linear, attention_input=center)"
    assert model_label(results, key) == "Patch-Attn (attention=linear, attention\\_input=center)"
    assert model_text(results, "mlp-attn") == "MLP-Attn"
    assert model_text(results, "patch-attn[image_shape=None]") == "Patch-Attn"
    assert model_text(results, "truncated-attn[rank=10]") == "truncated-attn (rank=10)"  # no label: the key's name


def _first_readings(summary):
    """(holder, key) of the first 'readings' entry of the flip summary (a 'space=...;recompute=...' string)."""
    stack = [summary["flip"]]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            if isinstance(node.get("readings"), str):
                return node, "readings"
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise AssertionError("no flip summary with readings")


def test_an_edited_summary_is_one_line_and_a_renderer_bug_is_not_hidden(tiny, tmp_path, monkeypatch):
    out, _ = tiny
    doc = json.loads((out / "results.json").read_text())
    holder, key = _first_readings(doc["summary"])
    holder[key] = 10**30  # an edit of the wrong type: the renderer cannot read it
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "results.json").write_text(json.dumps(doc))
    res = CliRunner().invoke(main, ["report", str(edited)])
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: {edited}/results.json: its summary or verdicts were edited") and "--resummarise" in line
    fixed = CliRunner().invoke(main, ["report", "--resummarise", str(edited)])
    assert fixed.exit_code == 0, fixed.output  # recomputed from the cells, the report renders
    # the same failure on a file as the audit wrote it is a bug of the renderer: it is not called bad input
    import malleability.reports.report as report

    def broken(results, out_dir):
        raise KeyError("a field the renderer forgot")

    monkeypatch.setattr(report, "render_report", broken)
    res = CliRunner().invoke(main, ["report", str(out)])
    assert res.exit_code == 1 and "internal error" in res.output, res.output


def test_a_folder_where_a_report_file_goes_is_one_line_and_is_kept(tiny, tmp_path):
    out, _ = tiny
    target = tmp_path / "audit"
    target.mkdir()
    (target / "results.json").write_bytes((out / "results.json").read_bytes())
    (target / "kappa.png").mkdir()
    (target / "kappa.png" / "mine.txt").write_text("kept")
    res = CliRunner().invoke(main, ["report", str(target)])
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert "kappa.png is a folder" in line
    assert (target / "kappa.png" / "mine.txt").read_text() == "kept"
    assert sorted(p.name for p in target.iterdir()) == ["kappa.png", "results.json"]  # nothing half-written, no temp
