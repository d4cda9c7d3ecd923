"""`malleability compare`: cells matched across runs, what moved and by how much, verdict changes."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from malleability.reports.audit.compare import compare_results, format_comparison
from malleability.reports.audit.results import SCHEMA
from malleability.reports.audit.scales import SCALES
from malleability.reports.cli import main


def _flip(label, rate, test, root=None, spearman=0.5):
    return {"kind": "flip-rate", "key": f"k-{label}", "label": label, "status": "computed",
            "config": {"eps": 0.3, "data": {"dataset": "mnist", "n": 60, "data_root": root}},
            "result": {"flip_rate": rate, "accuracy": {"test": test}, "spearman": spearman, "timing_s": 1.0}}


def _results(cells, verdicts, cpu):
    return {"schema": SCHEMA, "scale": dataclasses.asdict(SCALES["tiny"]), "cells": cells, "verdicts": verdicts,
            "provenance": {"machine": {"cpu": cpu}}}


A = _results([_flip("f1", 0.25, 0.8, root="/a"), _flip("f2", 0.10, 0.5), _flip("only-a", 0.5, 0.5),
              {"kind": "theory", "key": "k-t", "label": "t", "status": "computed", "config": {"claim": "x"}, "result": {"v": 1}}],
             [{"claim": "c1", "verdict": "fails", "readings": {"r1": "fails", "r2": "holds"}},
              {"claim": "c2", "verdict": "holds", "readings": {"r": "holds"}}], "cpu A")
B = _results([_flip("f1", 0.25, 0.8, root="/b", spearman=0.6), _flip("f2", 0.05, 0.53),
              {"kind": "theory", "key": "k-t", "label": "t", "status": "computed", "config": {"claim": "x"}, "result": {"v": 1}},
              _flip("failed", None, None) | {"status": "failed"}],
             [{"claim": "c1", "verdict": "depends", "readings": {"r1": "holds", "r2": "holds"}},
              {"claim": "c2", "verdict": "holds", "readings": {"r": "holds"}}], "cpu B")


def test_cells_match_across_data_roots_and_what_moved_is_counted():
    cmp = compare_results(A, B)
    assert cmp["cells"] == {"a": 4, "b": 3, "common": 3, "only_a": 1, "only_b": 0}
    # f1 differs only in its Spearman (the timing is ignored), f2 in its rate and accuracy
    assert cmp["per_kind"] == {"flip-rate": {"identical": 0, "differ": 2}, "theory": {"identical": 1, "differ": 0}}
    assert cmp["flip_rate"] == {"cells": 2, "changed": 1, "changed_share": 0.5,
                                "mean_abs_change_of_changed": pytest.approx(0.05), "max_abs_change": pytest.approx(0.05)}
    assert cmp["test_accuracy"]["changed"] == 1 and cmp["test_accuracy"]["max_abs_change"] == pytest.approx(0.03)
    assert cmp["verdicts_changed"] == [{"claim": "c1", "verdict": ["fails", "depends"], "readings": {"r1": ["fails", "holds"]}}]
    assert cmp["machines"] == ["cpu A", "cpu B"]
    lines = format_comparison(cmp)
    assert lines[0].startswith("cells: 3 in common (1 only in A, 0 only in B)")
    assert "verdict c1: fails -> depends (r1 fails -> holds)" in lines


def test_a_run_against_itself_has_nothing_moved():
    cmp = compare_results(A, A)
    assert cmp["flip_rate"]["changed"] == 0 and cmp["verdicts_changed"] == []
    assert all(row["differ"] == 0 for row in cmp["per_kind"].values())
    assert "verdicts: all the same" in format_comparison(cmp)


def _write(tmp_path, name, doc):
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps(doc))
    return str(d)


def test_cli_compare_text_json_and_bad_input(tmp_path):
    a, b = _write(tmp_path, "a", A), _write(tmp_path, "b", B)
    r = CliRunner().invoke(main, ["compare", a, b])
    assert r.exit_code == 0, r.output
    assert "flip rate: 1 of 2 flip cells changed (50%)" in r.output
    r = CliRunner().invoke(main, ["compare", a, b, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["cells"]["common"] == 3
    assert "scales differ" not in r.output
    bigger = json.loads(json.dumps(B))
    bigger["scale"] = dataclasses.asdict(SCALES["quick"])
    bigger["verdicts"].append({"claim": "c3", "verdict": "holds", "readings": {"r": "holds"}})
    r = CliRunner().invoke(main, ["compare", a, _write(tmp_path, "quick", bigger)])
    assert r.exit_code == 0, r.output
    assert "scales differ: A tiny, B quick" in r.output
    assert "verdict c3: absent -> holds (r absent -> holds)" in r.output  # never 'None'
    other = _write(tmp_path, "c", _results([_flip("elsewhere", 0.1, 0.1)], [], "cpu C"))
    for args in ([a, other], [a, str(tmp_path / "missing")]):
        r = CliRunner().invoke(main, ["compare", *args])
        assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["cells"][0]["result"].__setitem__("flip_rate", 7), "cells[0].result.flip_rate = 7 is not a share"),
    (lambda d: d["cells"][1]["result"]["accuracy"].__setitem__("test", -0.5),
     "cells[1].result.accuracy.test = -0.5 is not a share"),
    (lambda d: d["cells"][0]["result"].__setitem__("flip_rate", "0.2"), "flip_rate = '0.2' is not a share"),
    (lambda d: d["cells"][0]["result"].__setitem__("flip_rate", True), "flip_rate = True is not a share"),
    (lambda d: d["cells"].__setitem__(2, "a cell"), "cells[2] is not an object"),
    (lambda d: d["cells"][0].__setitem__("kind", "flip-rates"), "cells[0].kind is 'flip-rates', not a cell kind"),
    (lambda d: d["cells"][0].__setitem__("status", "bogus"), "cells[0].status is 'bogus', not one of cached"),
    (lambda d: d["cells"][1].__setitem__("key", None), "cells[1].key is not a string"),
    (lambda d: d.__setitem__("counts", {"computed": -1}), "counts.computed = -1 is not a count"),
    (lambda d: d.pop("scale"), "has no 'scale' field"),
    (lambda d: d.__setitem__("scale", {"name": "nosuch"}), "scale has no 'description' field"),
    (lambda d: d["scale"]["flip"].pop("eps"), "scale.flip has no 'eps' field"),
    (lambda d: d.__setitem__("scale", {"name": ""}), "scale.name is '', not a name"),
    (lambda d: d["cells"][0]["config"].__setitem__("width", 10**400),
     "cells[0].config.width is an integer beyond float64's range"),
    (lambda d: d["cells"][3].pop("kind"), "cells[3] has no kind string"),
    (lambda d: d["cells"][3].__setitem__("result", [1]), "cells[3].result is not an object"),
    (lambda d: d["verdicts"].__setitem__(0, "fails"), "verdicts[0] is not an object with a claim"),
    (lambda d: d["verdicts"][1].__setitem__("readings", ["holds"]), "verdicts[1].readings is not an object"),
    (lambda d: d["verdicts"][1]["readings"].__setitem__("r", "maybe"), "verdicts[1].readings is not an object"),
    (lambda d: d["verdicts"][0].__setitem__("verdict", "bogus"), "verdicts[0].verdict is 'bogus', not one of"),
    (lambda d: d.__setitem__("options", None), "options is null, not an object"),
    (lambda d: d.__setitem__("provenance", None), "provenance is null, not an object"),
    (lambda d: d.__setitem__("verdicts", {}), "verdicts is dict, not a list"),
    (lambda d: d.__setitem__("cells", []), "has no cells"),
    (lambda d: [c.__setitem__("key", "k") for c in d["cells"][:2]], "cells[1] repeats the key of cells[0]"),
    # scalars a summary reads, edited out of the range a run produces (a width of -5 would leave a slope's fit)
    (lambda d: d["cells"][0]["result"].__setitem__("width", -5), "cells[0].result.width = -5 is not an integer >= 1"),
    (lambda d: d["cells"][0]["result"].__setitem__("seed", 1.5), "cells[0].result.seed = 1.5 is not an integer >= 0"),
    (lambda d: d["cells"][0]["result"].__setitem__("spearman", 1.5), "spearman = 1.5 is not a correlation in [-1, 1]"),
    (lambda d: d["cells"][0]["result"].__setitem__("eps", -0.3), "cells[0].result.eps = -0.3 is not a finite number"),
    (lambda d: d["cells"][0]["result"].__setitem__("topk_overlap", 2), "topk_overlap = 2 is not a share"),
    (lambda d: d["cells"][0].__setitem__("result", None), "cells[0] is computed but has no result"),
])
def test_an_edited_cell_or_verdict_is_one_line_and_exit_2(tmp_path, edit, message):
    doc = json.loads(json.dumps(A))
    edit(doc)
    a, b = _write(tmp_path, "a", A), _write(tmp_path, "b", doc)
    for args in ([a, b], [b, a]):
        r = CliRunner().invoke(main, ["compare", *args])
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: ") and message in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(main, ["report", b])  # report reads the same document the same way
    assert r.exit_code == 2 and message in r.output, r.output


def test_deep_nesting_and_missing_verdicts_are_one_line_and_exit_2(tmp_path):
    a = _write(tmp_path, "a", A)
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "results.json").write_text('{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}")
    unjudged = _write(tmp_path, "unjudged", {k: v for k, v in A.items() if k != "verdicts"})
    for other, message in ((str(deep), "nests too deeply"), (unjudged, "has no verdicts")):
        r = CliRunner().invoke(main, ["compare", a, other])
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: ") and message in r.output and len(r.output.strip().splitlines()) == 1


def test_shares_at_their_bounds_are_read():
    from malleability.reports.audit.results import check_document

    doc = json.loads(json.dumps(A))
    doc["cells"][0]["result"].update(flip_rate=0, accuracy={"test": 1, "train": 1.0, "chance": 0.5, "krr_test": None})
    check_document(doc, "results.json")


def test_a_config_edited_after_the_run_no_longer_matches_its_key(tmp_path):
    from malleability.reports.audit.cache import cell_key

    code = {"package": "0", "source_sha256": "x", "cell_protocol": 1}
    doc = json.loads(json.dumps(A)) | {"code_version": code}
    for cell in doc["cells"]:
        cell["config"]["n_test"] = len(cell["label"])  # A's fixture repeats one config; a run never does
        cell["key"] = cell_key(cell["kind"], cell["config"], code, cell.get("data_fingerprint"))
    a = _write(tmp_path, "a", doc)
    assert CliRunner().invoke(main, ["compare", a, _write(tmp_path, "a2", doc)]).exit_code == 0
    doc["cells"][1]["config"]["eps"] = 0.5  # the numbers stay those of eps = 0.3
    r = CliRunner().invoke(main, ["compare", a, _write(tmp_path, "b", doc)])
    assert r.exit_code == 2 and "cells[1].config does not match the cell's key" in r.output, r.output


def test_k_layer_and_widths_cells_match_across_data_roots():
    # k-layer keeps its root at the top of its config; a widths report echoes its config, root included
    def cells(root):
        return [{"kind": "k-layer", "key": f"kl-{root}", "label": "k-layer mnist n=8", "status": "computed",
                 "config": {"data_root": root, "n": [8]}, "result": {"rows": [{"kappa": 2.0}]}},
                {"kind": "widths", "key": f"w-{root}", "label": "widths mnist", "status": "computed",
                 "config": {"data": {"dataset": "mnist", "data_root": root}},
                 "result": {"report": {"config": {"data_root": root}, "kappa": 3.0}}}]

    cmp = compare_results(_results(cells("/a"), [], "cpu A"), _results(cells(None), [], "cpu B"))
    assert cmp["cells"]["common"] == 2
    assert cmp["per_kind"] == {"k-layer": {"identical": 1, "differ": 0}, "widths": {"identical": 1, "differ": 0}}
    moved = cells(None)
    moved[0]["result"]["rows"][0]["kappa"] = 2.5  # what was computed still counts
    cmp = compare_results(_results(cells("/a"), [], "cpu A"), _results(moved, [], "cpu B"))
    assert cmp["per_kind"]["k-layer"] == {"identical": 0, "differ": 1}


def test_a_k_layer_row_key_added_since_an_older_audit_is_no_difference():
    def cells(**extra):
        return [{"kind": "k-layer", "key": "kl", "label": "k-layer mnist n=8", "status": "computed",
                 "config": {"n": [8]}, "result": {"rows": [{"kappa": 2.0, **extra}]}}]

    older, newer = cells(), cells(measured_digits=40, unmeasured_reason=None)
    cmp = compare_results(_results(older, [], "cpu A"), _results(newer, [], "cpu B"))
    assert cmp["per_kind"]["k-layer"] == {"identical": 1, "differ": 0}  # the older audit did not record them
    other = cells(measured_digits=60, unmeasured_reason=None)  # both record it: compared as usual
    cmp = compare_results(_results(newer, [], "cpu A"), _results(other, [], "cpu B"))
    assert cmp["per_kind"]["k-layer"] == {"identical": 0, "differ": 1}


def test_documents_keyed_before_the_root_left_the_key_are_still_read(tmp_path):
    from malleability.reports.audit.cache import cell_key

    code = {"package": "0", "source_sha256": "x", "cell_protocol": 1}
    doc = json.loads(json.dumps(A)) | {"code_version": code}
    for cell in doc["cells"]:
        cell["config"]["n_test"] = len(cell["label"])
        cell["data_fingerprint"], cell["config"]["data_root"] = "fp", "/old/root"
        cell["key"] = cell_key(cell["kind"], cell["config"], code, "fp", legacy=True)  # the root was hashed too
        assert cell["key"] != cell_key(cell["kind"], cell["config"], code, "fp")
    a = _write(tmp_path, "a", doc)
    assert CliRunner().invoke(main, ["compare", a, _write(tmp_path, "a2", doc)]).exit_code == 0
    doc["cells"][1]["config"]["n_test"] += 1  # an edit still shows under either key
    r = CliRunner().invoke(main, ["compare", a, _write(tmp_path, "b", doc)])
    assert r.exit_code == 2 and "cells[1].config does not match the cell's key" in r.output, r.output
