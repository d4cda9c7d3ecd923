"""scripts/gpu_slice_report.py: slices merge cell by cell, a cell two slices disagree on is refused, and the
merged summaries are the experiments' own over the merged rows."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from malleability.empirics.experiments import ntk_distance

ROOT = Path(__file__).resolve().parents[1]
SLICE = ROOT / "reports" / "gpu-h200"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_slice_report", ROOT / "scripts" / "gpu_slice_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def committed():
    return json.loads((SLICE / "ntk-mnist-paper.json").read_text())


def _same_to_last_digits(a, b, rel=1e-12) -> bool:
    """Equal structure and strings, floats equal to ``rel``: the committed summary was computed on another host,
    whose vectorised log (AVX-512 against AVX2) can differ in the last ulp, and a slope's last digit with it."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_to_last_digits(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_to_last_digits(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=rel,
                                                                                               abs_tol=rel)
    return a == b


def test_the_last_digit_comparison_still_tells_a_changed_summary(committed):
    moved = json.loads(json.dumps(committed["summary"]))
    assert _same_to_last_digits(moved, committed["summary"])
    moved["slopes"][0]["slope"] *= 1 + 1e-9
    assert not _same_to_last_digits(moved, committed["summary"])
    moved = json.loads(json.dumps(committed["summary"]))
    moved["cells"][0]["learned_seeds"] += 1
    assert not _same_to_last_digits(moved, committed["summary"])


def test_two_overlapping_slices_merge_to_the_rows_of_both(committed):
    mod = _module()
    rows = committed["rows"]
    a = {"rows": [r for r in rows if r["seed"] in (0, 1, 2)], "provenance": {"git_commit": "a"}}
    b = {"rows": [r for r in rows if r["seed"] in (2, 3, 4)], "provenance": {"git_commit": "b"}}
    merged, provs = mod.merge([a, b], mod.NTK_KEY)
    assert len(merged) == len(rows) and provs == [{"git_commit": "a"}, {"git_commit": "b"}]
    assert _same_to_last_digits(ntk_distance.summarise(merged), committed["summary"])


def test_a_cell_that_two_slices_disagree_on_is_refused(committed):
    mod = _module()
    row = committed["rows"][0]
    other = json.loads(json.dumps(row))
    other["distance"]["after_vs_init_absolute"] *= 1.5
    with pytest.raises(SystemExit, match="differs between two slices"):
        mod.merge([{"rows": [row], "provenance": {}}, {"rows": [other], "provenance": {}}], mod.NTK_KEY)
    timing_only = json.loads(json.dumps(row))
    timing_only["timing_s"] = {"total": 99.0}
    merged, _ = mod.merge([{"rows": [row], "provenance": {}}, {"rows": [timing_only], "provenance": {}}], mod.NTK_KEY)
    assert merged == [row]


def test_the_committed_slice_states_its_card_seeds_and_accuracies():
    text = (SLICE / "README.md").read_text()
    assert "NVIDIA H200" in text and "seeds 0, 1, 2, 3, 4" in text and "train acc" in text and "test acc" in text
    for name in ("ntk-mnist-paper.json", "ntk-mnist-lazy.json", "flip-mnist.json"):
        doc = json.loads((SLICE / name).read_text())
        assert all(p.get("device_name") == "NVIDIA H200" for p in doc["provenance"])
        assert all(r["accuracy"]["train"] is not None and r["accuracy"]["test"] is not None for r in doc["rows"])


def test_the_report_says_whether_the_committed_cuda_cost_model_is_the_fit_of_its_cells(tmp_path, capsys):
    mod = _module()
    assert mod.main([str(tmp_path / "same"), str(SLICE)]) == 0
    text = (tmp_path / "same" / "README.md").read_text()
    assert "is the fit (`calibrate.fit_device`) of exactly these cells" in text and "paper plan" in text
    slower = tmp_path / "slower"
    slower.mkdir()
    for name in ("ntk-mnist-paper.json", "ntk-mnist-lazy.json", "flip-mnist.json"):
        doc = json.loads((SLICE / name).read_text())
        for r in doc["rows"]:
            r["timing_s"] = {k: 3 * v for k, v in r["timing_s"].items()}
        (slower / name).write_text(json.dumps(doc))
    assert mod.main([str(tmp_path / "other"), str(slower)]) == 0
    assert "not the fit of exactly these cells" in (tmp_path / "other" / "README.md").read_text()
    assert "fit_device of these cells" in capsys.readouterr().out


@pytest.mark.parametrize("content, said", [
    ("{not json", "not a readable JSON file"),
    ('{"rows": 3}', 'list of row objects under "rows"'),
    ('[1, 2]', 'list of row objects under "rows"'),
    ('{"rows": [{"model": "relu", "width": 4}]}', "row 0 lacks seed"),
])
def test_a_malformed_slice_file_is_one_line_and_exit_2(tmp_path, capsys, content, said):
    mod = _module()
    slice_dir = tmp_path / "slice"
    slice_dir.mkdir()
    (slice_dir / "ntk-mnist-paper.json").write_text(content)
    assert mod.main([str(tmp_path / "out"), str(slice_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and said in err and len(err.splitlines()) == 1


def test_a_missing_slice_folder_is_named(tmp_path, capsys):
    assert _module().main([str(tmp_path / "out"), str(tmp_path / "nowhere")]) == 2
    assert "not a slice folder" in capsys.readouterr().err


def test_the_committed_slice_folder_still_merges(tmp_path, capsys):
    out = tmp_path / "out"
    assert _module().main([str(out), str(SLICE)]) == 0
    assert (out / "README.md").is_file() and (out / "ntk-mnist-paper.json").is_file()
