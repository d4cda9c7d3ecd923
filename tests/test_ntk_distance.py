"""NTK-distance cells, slope fits, summaries, and the ntk-distance / bench ntk commands."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from malleability.empirics.data import DataConfig
from malleability.empirics.experiments.ntk_distance import (
    DISTANCE_NAMES,
    NTKDistanceConfig,
    find_slope,
    kernel_regression,
    parse_widths,
    run_ntk_distance_cell,
    summarise,
    sweep,
)
from malleability.empirics.training import TrainConfig
from malleability.errors import MalleabilityError
from malleability.reports.cli import main


@pytest.fixture(scope="module")
def cfg(data_root):
    data = DataConfig("mnist", n=60, n_test=20, classes=(3, 8), data_root=str(data_root))
    return NTKDistanceConfig(data=data, train=TrainConfig(epochs=2, seed=1), model="mlp-attn", width=32)


def test_cell_row_has_every_named_distance_and_is_deterministic(cfg):
    row = run_ntk_distance_cell(cfg)
    assert (row["model"], row["dataset"], row["width"], row["seed"]) == ("mlp-attn", "mnist", 32, 1)
    assert set(row["distance"]) == set(DISTANCE_NAMES)
    assert all(v is not None and math.isfinite(v) and v >= 0 for v in row["distance"].values())
    assert row["readings"]["loss"] == "mse" and row["width"] == 32
    acc = row["accuracy"]
    assert set(acc) >= {"train", "test", "krr_test", "chance", "learned"} and isinstance(acc["learned"], bool)
    assert row["weight_change"] > 0 and 0 <= row["pattern_flip_share"] <= 1
    assert 0 <= row["function_space_agreement"] <= 1
    json.dumps(row)  # JSON-ready
    again = run_ntk_distance_cell(NTKDistanceConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))))
    assert again["distance"] == row["distance"]


def test_untrained_network_has_zero_after_vs_init_distance(cfg):
    row = run_ntk_distance_cell(dataclasses.replace(cfg, train=TrainConfig(epochs=0), model="relu"))
    d = row["distance"]
    assert d["after_vs_init_absolute"] == 0 and d["after_vs_init_relative"] == 0
    assert row["weight_change"] == 0 and row["pattern_flip_share"] == 0
    assert d["after_vs_infinite_relative"] == d["init_vs_infinite_relative"]
    # NTK init and the paper's N(0, 0.01²) init give the same K_0 (activation signs are scale-free)
    lazy = run_ntk_distance_cell(dataclasses.replace(cfg, train=TrainConfig(protocol="lazy", epochs=0), model="relu"))
    assert lazy["distance"]["init_vs_infinite_relative"] == pytest.approx(d["init_vs_infinite_relative"], rel=1e-12)
    # with kernel_function 'init' the function-space reference uses K_0 instead of K∞
    alt = run_ntk_distance_cell(dataclasses.replace(cfg, train=TrainConfig(epochs=0), function_kernel="init",
                                                    kernel_points=10))
    assert alt["kernel_points"] == 10 and alt["readings"]["function_kernel"] == "init"


def test_kernel_regression_matches_numpy():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(8, 8))
    K = A @ A.T
    Kx = rng.normal(size=(3, 8))
    T = rng.normal(size=(8, 2))
    lam = 1e-3 * np.trace(K) / 8
    expected = Kx @ np.linalg.solve(K + lam * np.eye(8), T)
    got = kernel_regression(torch.from_numpy(K), torch.from_numpy(Kx), torch.from_numpy(T), 1e-3)
    assert np.allclose(got.numpy(), expected, rtol=1e-10)


def _rows(law):
    return [{"dataset": "d", "model": "relu", "width": w, "seed": s, "distance": {"x": law(w, s), "none": None}}
            for w in (4, 16, 64, 256) for s in range(3)]


def test_slope_recovers_an_exact_power_law():
    fit = find_slope(summarise(_rows(lambda w, s: 3.0 * w ** -0.5)), distance="x")
    assert fit["slope"] == pytest.approx(-0.5, abs=1e-12) and fit["intercept"] == pytest.approx(math.log(3), abs=1e-12)
    assert fit["n_points"] == 12 and fit["widths"] == [4, 16, 64, 256] and fit["stderr"] < 1e-10
    assert fit["class"] == "falls"
    one = find_slope(summarise([r for r in _rows(lambda w, s: 1.0) if r["width"] == 4]), distance="x")
    assert one["slope"] is None and one["class"] is None


def test_loglog_slope_interval_equals_its_closed_form():
    # ln x = 0, 1, 2, 3 and ln y = 0, 1, 1, 3: slope 9/10, residual sum of squares 7/10, Sxx = 5,
    # so stderr = sqrt(0.7 / (4 - 2) / 5) and the interval is slope ± t(0.975, 2) · stderr
    import scipy.stats

    from malleability.stats import loglog_slope

    fit = loglog_slope(np.exp([0.0, 1, 2, 3]), np.exp([0.0, 1, 1, 3]))
    half = scipy.stats.t.ppf(0.975, 2) * math.sqrt(0.07)
    assert fit["slope"] == pytest.approx(0.9, abs=1e-12)
    assert fit["stderr"] == pytest.approx(math.sqrt(0.07), rel=1e-12)
    assert fit["ci95"] == pytest.approx([0.9 - half, 0.9 + half], rel=1e-12)


def test_flat_and_noisy_slopes_are_classed_flat():
    rng = np.random.default_rng(0)
    flat = find_slope(summarise(_rows(lambda w, s: 40.0 * w ** 0.01)), distance="x")
    assert flat["class"] == "flat"  # |slope| < 0.05
    noisy = find_slope(summarise(_rows(lambda w, s: float(np.exp(rng.normal(0, 2.0))) * w ** 0.2)), distance="x")
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1] and noisy["class"] == "flat"
    rises = find_slope(summarise(_rows(lambda w, s: w ** 0.3 * (1 + 0.01 * s))), distance="x")
    assert rises["class"] == "rises"


def test_summarise_mean_and_interval_in_range():
    s = summarise(_rows(lambda w, s: float(w + s)))
    first = next(e for e in s["cells"] if e["width"] == 4 and e["distance"] == "x")
    assert first["mean"] == 5.0 and first["std"] == pytest.approx(1.0) and first["n_seeds"] == 3
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2)
    assert first["ci95"] == pytest.approx([5.0 - half, 5.0 + half])
    wide = summarise(_rows(lambda w, s: [0.1, 50.0, 100.0][s]))  # a norm: the interval never goes below 0
    assert all(c["ci95"][0] >= 0 for c in wide["cells"] if c["ci95"])
    assert any(c["ci95"] for c in wide["cells"])


def test_parse_widths_and_sweep():
    assert parse_widths("16, 64") == (16, 64)
    assert parse_widths("default") == tuple(2**k for k in range(2, 13))
    for bad, match in [("16,x", "not an integer"), ("0", ">= 1"), ("4,4", "repeats 4"), ("", "not an integer")]:
        with pytest.raises(MalleabilityError, match=match):
            parse_widths(bad)
    cfgs = sweep(DataConfig("mnist", seed=10), TrainConfig(), ["relu", "mlp-attn"], (4, 8), 3)
    assert len(cfgs) == 12 and {c.train.seed for c in cfgs} == {0, 1, 2}
    # one protocol: seed s draws data subset data.seed + s and init s
    assert all(c.data.seed == 10 + c.train.seed for c in cfgs)
    with pytest.raises(MalleabilityError, match="seeds"):
        sweep(DataConfig("mnist"), TrainConfig(), ["relu"], (4,), 0)
    with pytest.raises(MalleabilityError, match="unknown model"):
        NTKDistanceConfig(data=DataConfig("mnist"), train=TrainConfig(), model="cnn")


def test_cli_ntk_distance_json(data_root):
    res = CliRunner().invoke(main, [
        "ntk-distance", "--dataset", "mnist", "--n", "30", "--n-test", "10", "--widths", "8,32", "--seeds", "2",
        "--epochs", "1", "--classes", "3,8", "--data-root", str(data_root), "--models", "relu", "--eps", "0.1", "--json",
    ])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["rows"]) == 4 and set(out["rows"][0]["distance"]) == set(DISTANCE_NAMES)
    assert any(sl["distance"] == "init_vs_infinite_relative" and sl["model"] == "relu" for sl in out["slopes"])
    assert "measured_widths" in out and out["summary"]["cells"]
    for row in out["rows"]:
        assert {"train", "test", "krr_test", "chance", "learned"} <= set(row["accuracy"])
        assert "weight_change" in row and "pattern_flip_share" in row


@pytest.mark.parametrize("args, match", [
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--dataset", "mnist", "--n", "0"], "--n must be >= 1"),
    (["--dataset", "mnist", "--seeds", "0"], "--seeds must be >= 1"),
    (["--dataset", "mnist", "--eps", "inf"], "--eps"),
    (["--dataset", "mnist", "--widths", "8,zero"], "bad --widths"),
    (["--dataset", "mnist", "--widths", "0"], "width must be >= 1"),
    (["--dataset", "mnist", "--models", "relu,cnn"], "unknown model"),
    (["--dataset", "mnist", "--classes", "3,11"], "out of range"),
])
def test_cli_bad_inputs_exit_2_with_one_line(data_root, args, match):
    res = CliRunner().invoke(main, ["ntk-distance", *args, "--data-root", str(data_root)])
    assert res.exit_code == 2
    assert match in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_cli_missing_data_exits_2(tmp_path):
    res = CliRunner().invoke(main, ["ntk-distance", "--dataset", "mnist", "--data-root", str(tmp_path)])
    assert res.exit_code == 2 and "not found" in res.stderr


def test_bench_ntk_small(monkeypatch):
    res = CliRunner().invoke(main, ["bench", "ntk", "--n", "12", "--d", "5", "--m", "16", "--repeats", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["max_rel_diff"] < 1e-12 and out["speedup"] > 0 and out["matmul_floor_s"] > 0
    assert out["reference_scaled_from_rows"] is None


def test_a_width_that_cannot_fit_is_refused_before_any_work(data_root):
    from malleability.empirics.experiments.memory import machine_bytes, training_bytes

    assert training_bytes(100, 784, 1024) < machine_bytes()
    res = CliRunner().invoke(main, ["ntk-distance", "--dataset", "mnist", "--widths", "99999999999", "--n", "100",
                                    "--data-root", str(data_root)])
    assert res.exit_code == 2 and "GiB" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "[1/" not in res.stderr  # nothing started
