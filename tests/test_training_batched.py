"""Batched training over seeds reproduces train_model seed by seed; the batching rule; the benchmark's readings."""

from __future__ import annotations

import pytest
import torch

from malleability.empirics.training import TrainConfig, train_model
from malleability.empirics.training_batched import (benchmark_training, should_batch, step_floor, train_models,
                                                    train_models_batched)
from malleability.errors import MalleabilityError

SEEDS = (0, 3, 7)


def _data(n=90, d=24, K=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True), torch.randint(0, K, (n,), generator=g)


def _compare(model, K, loss, protocol, dtype, width=16, epochs=4, batch_size=32):
    x, y = _data(K=K)
    kw = {"batch_size": batch_size} if protocol == "paper" else {"lr": 0.5}
    cfgs = [TrainConfig(protocol=protocol, epochs=epochs, seed=s, dtype=dtype, loss=loss, **kw) for s in SEEDS]
    batched = train_models_batched(model, x, y, K, cfgs, width=width)
    w_err, h_err, moved = 0.0, 0.0, 0.0
    for cfg, b in zip(cfgs, batched):
        r = train_model(model, x, y, K, cfg, width=width)
        assert torch.equal(r.W0, b.W0) and torch.equal(r.net.a, b.net.a)  # same init per seed
        assert b.loss == r.loss and b.config == cfg and len(b.history) == epochs
        Wr, Wb = r.net.W.detach(), b.net.W.detach()
        w_err = max(w_err, float((Wr - Wb).abs().max() / Wr.abs().max()))
        h_err = max(h_err, max(abs(p - q) / abs(p) for p, q in zip(r.history, b.history)))
        moved = max(moved, float((Wr - r.W0).abs().max() / Wr.abs().max()))
    return w_err, h_err, moved


@pytest.mark.parametrize("model", ["relu", "mlp-attn"])
@pytest.mark.parametrize("protocol", ["paper", "lazy"])
@pytest.mark.parametrize("K,loss", [(10, "auto"), (2, "auto"), (3, "mse-ovr")])
def test_batched_equals_looped_float64(model, protocol, K, loss):
    w_err, h_err, moved = _compare(model, K, loss, protocol, "float64")
    assert moved > 1e-6  # training moved W, so equality is not the trivial W_T = W_0
    assert w_err <= 1e-10 and h_err <= 1e-10


@pytest.mark.parametrize("protocol", ["paper", "lazy"])
@pytest.mark.parametrize("K,loss", [(10, "auto"), (2, "auto")])
def test_batched_equals_looped_float32(protocol, K, loss):
    # a few epochs of float32 rounding (eps 1.2e-7) amplified by at most ~100 steps
    w_err, h_err, _ = _compare("mlp-attn", K, loss, protocol, "float32")
    assert w_err <= 1e-4 and h_err <= 1e-4


def test_one_seed_is_the_plain_path_and_matches():
    x, y = _data(K=10)
    cfg = TrainConfig(epochs=3, seed=5, dtype="float64", batch_size=25)
    (b,) = train_models_batched("relu", x, y, 10, [cfg], width=8)
    r = train_model("relu", x, y, 10, cfg, width=8)
    assert torch.allclose(b.net.W, r.net.W, rtol=0, atol=1e-12)


def test_the_batch_is_not_seed_independent_by_accident():
    # swapping the seeds must swap the results: each slice follows its own seed
    x, y = _data(K=2)
    mk = lambda s: TrainConfig(epochs=2, seed=s, dtype="float64", batch_size=16)  # noqa: E731
    a = train_models_batched("relu", x, y, 2, [mk(1), mk(2)], width=8)
    b = train_models_batched("relu", x, y, 2, [mk(2), mk(1)], width=8)
    assert torch.equal(a[0].net.W, b[1].net.W) and torch.equal(a[1].net.W, b[0].net.W)
    assert not torch.allclose(a[0].net.W, a[1].net.W)


def test_train_models_dispatches_and_agrees():
    x, y = _data(K=2)
    cfgs = [TrainConfig(epochs=2, seed=s, dtype="float64", batch_size=30) for s in (0, 1)]
    batched = train_models("relu", x, y, 2, cfgs, width=8, max_batch_width=64)
    looped = train_models("relu", x, y, 2, cfgs, width=8, max_batch_width=4)
    for p, q in zip(batched, looped):
        assert torch.allclose(p.net.W, q.net.W, rtol=0, atol=1e-12)


def test_should_batch():
    assert should_batch(16, 5) and should_batch(64, 2)
    assert not should_batch(4096, 5) and not should_batch(16, 1)
    assert should_batch(256, 5, max_width=256) and not should_batch(257, 5, max_width=256)


@pytest.mark.parametrize("change", [{"epochs": 3}, {"lr": 1e-2}, {"dtype": "float64"}, {"protocol": "lazy"},
                                    {"seed": 0}])
def test_configs_must_differ_only_in_the_seed(change):
    x, y = _data(K=2)
    base = TrainConfig(epochs=2, seed=0)
    other = TrainConfig(**{**{"epochs": 2, "seed": 1}, **change})
    with pytest.raises(MalleabilityError):
        train_models_batched("relu", x, y, 2, [base, other], width=4)


def test_bad_inputs_are_one_line_errors():
    x, y = _data(K=2)
    with pytest.raises(MalleabilityError):
        train_models_batched("relu", x, y, 2, [], width=4)
    with pytest.raises(MalleabilityError):
        train_models_batched("relu", x, y[:-1], 2, [TrainConfig(epochs=1)], width=4)
    with pytest.raises(MalleabilityError):
        train_models_batched("relu", x, y, 2, [TrainConfig(epochs=1)], width=0)
    with pytest.raises(MalleabilityError):
        train_models_batched("nope", x, y, 2, [TrainConfig(epochs=1)], width=4)


def test_step_floor_counts_the_four_products():
    f = step_floor(8, 5, 3, 2, repeats=1)
    assert f["flops"] == 2.0 * 8 * 3 * (2 * 5 + 2 * 2)
    assert f["floor_s"] > 0 and f["gemm_gflops"] > 0


def test_benchmark_training_readings():
    res = benchmark_training((4, 8), n=40, d=12, num_classes=3, batch_size=16, seeds=2, epochs=1, repeats=1)
    assert res["steps_per_epoch"] == 3 and [r["width"] for r in res["widths"]] == [4, 8]
    for row in res["widths"]:  # one round: the medians are that round's own ratios
        assert row["ratio_to_floor"] == pytest.approx(row["step_s"] / row["floor_s"])
        assert row["ratio_to_floor_rounds"] == [row["ratio_to_floor"]]
        if row["batched_step_s"] > 0:
            assert row["speedup_batched"] == pytest.approx(row["step_s"] / row["batched_step_s"])
    three = benchmark_training((4,), n=40, d=12, num_classes=3, batch_size=16, seeds=2, epochs=1, repeats=3)
    row = three["widths"][0]
    assert len(row["ratio_to_floor_rounds"]) == 3
    assert row["ratio_to_floor"] == sorted(row["ratio_to_floor_rounds"])[1]  # the median of the rounds
    with pytest.raises(MalleabilityError):
        benchmark_training((4,), n=0)


def test_cli_bench_training_json_and_errors():
    import json

    from click.testing import CliRunner

    from malleability.reports.cli import main

    args = ["bench", "training", "--widths", "4,8", "--n", "40", "--d", "12", "--classes", "3", "--batch-size", "16",
            "--seeds", "2", "--epochs", "1", "--repeats", "1", "--json"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    res = json.loads(r.output[r.output.index("{"):])
    assert [w["width"] for w in res["widths"]] == [4, 8] and res["threads"] == 1
    assert {"ratio_to_floor", "speedup_batched", "floor_s", "step_s"} <= set(res["widths"][0])
    assert res["provenance"]["versions"]["torch"] == torch.__version__.split("+")[0] and res["provenance"]["machine"]["cores"] >= 1
    for bad in (["--widths", "4,x"], ["--seeds", "0"], ["--classes", "1"]):
        r = CliRunner().invoke(main, ["bench", "training", *bad])
        assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output
