"""The k-layer experiment in the audit: its cells in the plan, the cell runner, the summary, the verdict, the report."""

from __future__ import annotations

import numpy as np
import pytest

from malleability.empirics.data import load_dataset
from malleability.empirics.experiments import k_layer
from malleability.reports.audit import analyse, get_scale, plan_cells
from malleability.reports.audit.cells import RUNNERS, data_of, jsonable, run_k_layer_cell
from malleability.reports.audit.k_layer_verdict import AS_STATED, CLAIM, k_layer_real_data
from malleability.reports.audit.summary import summarise
from malleability.reports.report import sections
from malleability.reports.report.markdown import Doc
from malleability.theory.claims.verdicts import FAILS, HOLDS

SCALE = {"attention_inputs": ["raw"], "baseline": "relu", "widths": {"eps": 0.1},
         "k_layer": {"datasets": ["mnist"], "n": [5, 6], "ks": [1, 2], "measure_max_n": 5}}


def _unit_rows(n, d, seed):
    x = np.random.default_rng(seed).random((n, d)) + 0.2
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cell(rows, n, status="computed"):
    return {"kind": "k-layer", "status": status, "label": f"k-layer mnist n={n}",
            "tags": {"table": "k-layer", "task": "mnist", "n": n}, "result": {"rows": rows}}


@pytest.fixture(scope="module")
def cells():
    """Two hand-made cells from real recursions on small rows: n = 5 measured by mpmath, n = 6 from theory only."""
    return [_cell(jsonable(k_layer.k_layer_rows(_unit_rows(5, 8, 1), ks=(1, 2), dataset="mnist")), 5),
            _cell(jsonable(k_layer.k_layer_rows(_unit_rows(6, 8, 2), ks=(1, 2), measure=False, dataset="mnist")), 6)]


def test_tiny_plan_has_one_k_layer_cell_per_dataset_and_n():
    scale = get_scale("tiny")
    kl = [c for c in plan_cells(scale, data_root="/data").cells if c.kind == "k-layer"]
    assert [c.label for c in kl] == ["k-layer mnist n=8", "k-layer mnist n=30"]
    for c, n in zip(kl, (8, 30)):
        assert c.tags == {"table": "k-layer", "task": "mnist", "n": n} and c.fn is RUNNERS["k-layer"]
        cfg = c.config
        assert cfg.datasets == ("mnist",) and cfg.n == (n,) and cfg.ks == (1, 2) and cfg.seed == 0
        assert cfg.measure_max_n == 8 and cfg.data_root == "/data" and cfg.codes == k_layer.KLayerConfig().codes
    none = get_scale("tiny", ["k_layer.datasets="])
    assert not [c for c in plan_cells(none).cells if c.kind == "k-layer"]


def test_the_cell_runner_gives_the_experiments_rows_from_the_data_it_fingerprints(data_root):
    cfg = k_layer.KLayerConfig(datasets=("mnist",), n=(8,), ks=(1, 2), measure_max_n=8, data_root=str(data_root))
    got = run_k_layer_cell(cfg)
    assert got == {"rows": jsonable(k_layer.run(cfg))} and len(got["rows"]) == 16
    # the cache key's data fingerprint is of the very rows the cell computes on
    rows = k_layer.k_layer_rows(load_dataset(data_of(cfg)).x_train, ks=(1, 2), dataset="mnist", n_label=8)
    assert jsonable(rows) == got["rows"]


def test_a_cell_is_one_data_set_at_one_n():
    from malleability.errors import MalleabilityError

    with pytest.raises(MalleabilityError, match="one data set at one n"):
        run_k_layer_cell(k_layer.KLayerConfig(datasets=("mnist", "cifar10"), n=(8,)))


def test_summary_is_the_experiments_over_every_ok_cell(cells):
    rows = cells[0]["result"]["rows"] + cells[1]["result"]["rows"]
    broken = _cell(None, 7, status="failed")
    assert summarise(cells + [broken])["k_layer"] == k_layer.summarise(rows)
    assert summarise([])["k_layer"] is None


def _verdict(follows):
    summary = {"k_layer": {"follows": follows, "tolerance": 0.05, "reading": "r", "cells": []}}
    (v,) = k_layer_real_data({"scale": SCALE, "cells": []}, summary)
    return v


def test_a_code_holds_when_it_follows_2k_plus_1_and_fails_otherwise():
    v = _verdict({"ccc": ["3^k"], "iic": ["2k+1"], "iii": []})
    assert v["claim"] == CLAIM and v["as_stated"] == AS_STATED == "ccc"
    assert v["readings"] == {"ccc": FAILS, "iic": HOLDS, "iii": FAILS}
    assert v["verdict"] == "depends"  # as stated (ccc) it fails; under iic it holds
    assert "iic follows 2k+1" in v["detail"] and "iii follows no law" in v["detail"]
    assert _verdict({"ccc": ["2k+1"], "iic": ["2k+1"]})["verdict"] == "holds"
    assert _verdict({"ccc": ["3^k"], "icc": ["2^(k+1)-1"]})["verdict"] == "fails"


def test_no_cells_is_not_run():
    (v,) = k_layer_real_data({"scale": SCALE, "cells": []}, {"k_layer": None})
    assert v["verdict"] == "not-run" and v["readings"] == {}
    (v,) = k_layer_real_data({"scale": SCALE, "cells": []}, {})  # a summary from before the k-layer cells
    assert v["verdict"] == "not-run"


def test_as_stated_is_the_theory_claims_as_stated_recursion():
    from malleability.theory import check_claims

    (res,) = check_claims(["k-layer"], profile="quick")
    as_stated = next(r for r in res.readings if r.name == res.as_stated)
    assert as_stated.evidence["recursion"] == AS_STATED


def test_analyse_judges_real_rows_and_lists_the_criterion(cells):
    out = analyse({"scale": SCALE, "cells": cells})
    v = next(v for v in out["verdicts"] if v["claim"] == CLAIM)
    assert v["readings"]["iic"] == HOLDS and v["readings"]["ccc"] == FAILS and v["verdict"] == "depends"
    assert CLAIM in out["criteria"]


def test_report_section_from_a_results_document(cells):
    doc = {"scale": SCALE, "cells": cells, "summary": summarise(cells)}
    d = Doc()
    sections.k_layer(d, doc)
    md = d.text()
    assert md.startswith("## k layers of attention on real data")
    assert "| iic | 2 | 5 | 5–5 | 5 | 7 | 9 | 2k+1 |" in md
    assert "| ccc | 2 | 9 | 9–9 | 5 | 7 | 9 | 3^k |" in md
    assert "| ccc | 1 | 3 | 3–3 | 3 | 3 | 3 | 2^(k+1)-1, 2k+1, 3^k |" in md
    assert "**iic** follows 2k+1" in md and "**iii** follows no law of the three" in md
    assert "n = 5, 6" in md and "n ≤ 5" in md and "within 0.05" in md
    assert "mnist n=5: mpmath recursion; mnist n=6: Gram polynomial (theory)" in md
    assert "mpmath digits" not in md  # every Gram within the digit cap
    empty = Doc()
    sections.k_layer(empty, {"scale": SCALE, "cells": [], "summary": summarise([])})
    assert "No k-layer cells at this scale." in empty.text()


def test_report_caption_names_the_grams_left_to_theory_by_the_digit_cap(cells):
    import copy

    from malleability.empirics.experiments import k_layer

    capped = copy.deepcopy(cells)
    for c in capped:
        for row in c["result"]["rows"]:
            if row["code"] == "ccc" and row["k"] == 2:
                row["log10_kappa_measured"] = row["exponent_measured"] = None
                row["unmeasured_reason"] = f"needs 2100 digits, above the cap of {k_layer.MAX_MEASURE_DIGITS}"
    d = Doc()
    sections.k_layer(d, {"scale": SCALE, "cells": capped, "summary": summarise(capped)})
    assert (f"Grams that need more than {k_layer.MAX_MEASURE_DIGITS} mpmath digits are not measured and show the "
            "polynomial's exponent (ccc k = 2)") in d.text()
