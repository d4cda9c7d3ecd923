"""κ of real data per view, predicted widths in log10 (no silent overflow), measured widths from fits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from malleability.empirics.data import DataConfig, load_dataset
from malleability.empirics.experiments.widths import measured_widths, predicted_widths, view_features, width_report
from malleability.errors import MalleabilityError
from malleability.reports.cli import main


def test_predicted_widths_exact_logs_and_overflow():
    p = predicted_widths(1.0, n=100, eps=0.1)  # κ = 10
    assert p["v1"]["log10_width"] == pytest.approx(8.0, abs=1e-12) and p["v1"]["width"] == pytest.approx(1e8)
    assert p["v2"]["log10_width"] == pytest.approx(6 + math.log10(100 * math.log(100)), abs=1e-12)
    huge = predicted_widths(60.0, n=1000, eps=0.01)  # κ⁶ = 1e360: beyond float64
    assert huge["v1"]["log10_width"] == pytest.approx(364.0) and huge["v1"]["width"] is None
    singular = predicted_widths(None, n=10, eps=0.1)
    assert singular["v1"]["log10_width"] is None and "infinite" in singular["v1"]["note"]
    with pytest.raises(MalleabilityError, match="eps"):
        predicted_widths(1.0, 10, 0.0)


def _fit(slope, ci, widths=(4, 1024)):
    return {"dataset": "d", "model": "relu", "protocol": "paper", "distance": "a", "slope": slope, "intercept": 0.0,
            "ci95": ci, "x_range": list(widths)}


def test_measured_widths_only_from_a_slope_whose_interval_is_below_zero():
    out = measured_widths({"slopes": [_fit(-0.5, [-0.6, -0.4])]}, eps=0.1)[0]
    assert out["log10_width"] == pytest.approx(2.0) and out["width"] == pytest.approx(100.0)
    assert out["extrapolated"] is False and out["label"].startswith("measured from slope -0.500")
    far = measured_widths({"slopes": [_fit(-0.03, [-0.05, -0.01], widths=(16, 64))]}, eps=0.1)[0]
    assert far["extrapolated"] is True and "extrapolated from slope -0.030 (95%: -0.050..-0.010) over widths 16..64" \
        in far["label"]
    for fit in (_fit(0.1, [0.05, 0.2]), _fit(-0.5, [-1.0, 0.1]), _fit(-0.5, None)):
        e = measured_widths({"slopes": [fit]}, eps=0.1)[0]
        assert e["width"] is None and e["label"] == "no trend"
    e = measured_widths({"slopes": [{**_fit(None, None), "reason": "x"}]}, eps=0.1)[0]
    assert e["width"] is None and e["label"] == "no fit"


def test_width_report_on_mnist_matches_direct_eigenvalues(data_root):
    cfg = DataConfig("mnist", n=40, n_test=1, data_root=str(data_root))
    rep = width_report(cfg, 0.1, ns=(20, 40))
    assert [e["n"] for e in rep["per_n"]] == [20, 40]
    x = load_dataset(cfg).x_train[:20]
    for kind in ("relu", "mlp-attn"):
        z = view_features(kind, x)
        ev = np.linalg.eigvalsh(z @ z.T)
        cond = rep["per_n"][0]["views"][kind]["conditioning"]
        if kind == "relu":  # well conditioned enough for a plain float64 eigensolve
            assert cond["kappa_G"] == pytest.approx(ev.max() / ev.min(), rel=1e-8)
        assert cond["log10_kappa_G3"] == pytest.approx(3 * cond["log10_kappa_G"], rel=1e-9)
        pred = rep["per_n"][0]["views"][kind]["predicted"]["kappa_G"]["v1"]["log10_width"]
        assert pred == pytest.approx(6 * cond["log10_kappa_G"] + 2, rel=1e-12)
    z = view_features("mlp-attn", x)
    xtx = x @ x.T @ x
    assert np.allclose(z, xtx / np.linalg.norm(xtx, axis=1, keepdims=True))
    assert rep["measured"] is None
    # the attention view is far worse conditioned than the raw rows (Thm 4.7's amplification)
    views = rep["per_n"][1]["views"]
    assert views["mlp-attn"]["conditioning"]["log10_kappa_G"] > 2 * views["relu"]["conditioning"]["log10_kappa_G"]


def test_width_report_with_rows_and_singular_gram(tmp_path):
    p = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x=rng.random((12, 5)) + 0.1, y=np.arange(12) % 2)
    rows = [{"dataset": "small.npz", "model": m, "width": w, "seed": s,
             "distance": {"init_vs_infinite_relative": 2.0 * w ** -0.5}} for m in ("relu", "mlp-attn")
            for w in (4, 16, 64) for s in range(2)]
    rep = width_report(DataConfig(str(p), n=10, n_test=2), 0.1, rows=rows)
    relu = rep["per_n"][0]["views"]["relu"]
    assert relu["conditioning"]["kappa_G"] is None  # n = 10 > d = 5: G is singular
    assert relu["conditioning"]["pseudo_kappa_G"] is not None
    assert relu["predicted"]["kappa_G"]["v1"]["log10_width"] is None
    m = next(e for e in rep["measured"] if e["model"] == "relu" and e["distance"] == "init_vs_infinite_relative")
    assert m["log10_width"] == pytest.approx(2 * math.log10(20), abs=1e-9)  # 2 m^-1/2 = 0.1 at m = 400
    assert m["extrapolated"] is True
    json.dumps(rep, allow_nan=False)


def test_cli_widths(data_root, tmp_path):
    res = CliRunner().invoke(main, ["widths", "--dataset", "mnist", "--n", "15,30", "--eps", "0.1",
                                    "--data-root", str(data_root), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [e["n"] for e in out["per_n"]] == [15, 30]
    assert {"kappa_G", "pseudo_kappa_G", "kappa_d"} <= set(out["per_n"][0]["views"]["relu"]["conditioning"])
    # the first n's κ of the data stays at the top level
    assert out["kappa_G"] == out["per_n"][0]["views"]["relu"]["conditioning"]["kappa_G"]
    assert {"pseudo_kappa_G", "kappa_d", "paper_kappa_match"} <= set(out)
    assert 0 < out["per_n"][0]["views"]["mlp-attn"]["collinearity"]["top_eigenvalue_share"] <= 1
    for args, match in [(["--n", "0"], "--n must be >= 1"), (["--n", "1,x"], "bad --n"), (["--eps", "0"], "--eps"),
                        (["--rows", str(tmp_path / "none.json")], "rows file not found")]:
        bad = CliRunner().invoke(main, ["widths", "--dataset", "mnist", "--data-root", str(data_root), *args])
        assert bad.exit_code == 2 and match in bad.stderr, bad.output


def test_cli_widths_takes_every_model_and_its_options(data_root):
    models = "softmax-attn,patch-attn,qkv-attn,truncated-attn"
    res = CliRunner().invoke(main, ["widths", "--dataset", "mnist", "--n", "30", "--models", models, "--rank", "5",
                                    "--data-root", str(data_root), "--json"])
    assert res.exit_code == 0, res.output
    views = json.loads(res.stdout)["per_n"][-1]["views"]
    assert set(views) == set(models.split(","))
    assert views["truncated-attn"]["conditioning"]["rank"] == 5  # the option reached the model
    # qkv-attn's view is its feature map at the seeded initialisation of its projections
    from malleability.empirics.data import unit_rows
    from malleability.empirics.models import get_model

    x = unit_rows(load_dataset(DataConfig(dataset="mnist", n=30, n_test=0, data_root=str(data_root))).pixels_train)
    m = get_model("qkv-attn")
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    direct = m.features(xt, {**m.fit(xt), **m.init_params(xt.shape[1], 0)}).numpy()
    assert np.allclose(view_features("qkv-attn", x, seed=0), direct, rtol=0, atol=0)
    assert not np.allclose(view_features("qkv-attn", x, seed=1), direct)
    bad = CliRunner().invoke(main, ["widths", "--dataset", "mnist", "--data-root", str(data_root), "--models", "relu",
                                    "--rank", "5"])
    assert bad.exit_code == 2 and "--rank applies to none" in bad.stderr, bad.output


def test_cli_widths_refuses_edited_rows_in_one_line(data_root, tmp_path):
    good = {"dataset": "mnist", "model": "relu", "width": 16, "seed": 0, "readings": {"protocol": "paper"},
            "distance": {"after_vs_init_relative": 0.5}, "accuracy": {"train": 0.9, "test": 0.8}}
    cases = [({"width": -5}, "width must be an integer in 1.."), ({"width": "16"}, "width must be an integer"),
             ({"width": True}, "width must be an integer"), ({"model": None}, "model must be a non-empty string"),
             ({"distance": {"after_vs_init_relative": -1.0}}, "must be a finite number >= 0"),
             ({"distance": {}}, "distance must be an object"), ({"accuracy": {"test": 7}}, "accuracy test"),
             ({"readings": {"protocol": 3}}, "readings must be an object"),
             ({"width": 10**400}, "width must be an integer in 1..2147483648, got 1000"),
             ({"seed": None}, "seed must be an integer"),
             ({"distance": {"after_vs_init_relative": 10**400}}, "must be a finite number"),
             ({}, "repeats row 0 (same data set, model, protocol, width and seed)")]
    for i, (edit, match) in enumerate(cases):
        path = tmp_path / f"rows{i}.json"
        path.write_text(json.dumps({"rows": [good, {**good, **edit}]}))
        bad = CliRunner().invoke(main, ["widths", "--dataset", "mnist", "--n", "20", "--data-root", str(data_root),
                                        "--rows", str(path)])
        assert bad.exit_code == 2, (edit, bad.output)
        (line,) = bad.stderr.strip().splitlines()
        assert "row 1: " in line and match in line, line
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    bad = CliRunner().invoke(main, ["widths", "--dataset", "mnist", "--n", "20", "--data-root", str(data_root),
                                    "--rows", str(deep)])
    assert bad.exit_code == 2 and "nested too deeply" in bad.stderr, bad.output
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"rows": []}))
    bad = CliRunner().invoke(main, ["widths", "--dataset", "mnist", "--n", "20", "--data-root", str(data_root),
                                    "--rows", str(empty)])
    assert bad.exit_code == 2 and "holds no NTK-distance rows" in bad.stderr
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"rows": [good, {**good, "seed": 1, "distance": {"after_vs_init_relative": 0.4}}]}))
    res = CliRunner().invoke(main, ["widths", "--dataset", "mnist", "--n", "20", "--data-root", str(data_root),
                                    "--rows", str(ok), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["measured"][0]["model"] == "relu"
