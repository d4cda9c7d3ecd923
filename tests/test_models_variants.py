"""The attention variants beyond the paper against direct implementations, and the NTK over all parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from malleability.empirics.models import get_model
from malleability.empirics.ntk import empirical_ntk
from malleability.empirics.ntk_params import full_ntk, ntk_blocks, reference_ntk_autograd, split_parts
from malleability.empirics.training import OUTPUT_WEIGHTS, TrainConfig, train_model
from malleability.errors import MalleabilityError


def rows(n, d, seed=0, positive=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64) if positive else torch.randn(n, d, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def normalised(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# ------------------------------------------------------------------------------ softmax-attn

@pytest.mark.parametrize("temperature", [None, 0.3])
def test_softmax_attention_against_a_loop(temperature):
    x, x_new = rows(7, 5, seed=1), rows(3, 5, seed=2)
    model = get_model("softmax-attn", {"temperature": temperature})
    state = model.fit(x)
    X = x.numpy()
    tau = math.sqrt(5) if temperature is None else temperature
    for q, got in zip(np.vstack([X, x_new.numpy()]), torch.cat([model.features(x, state), model.features(x_new, state)])):
        scores = [math.exp(float(q @ X[j]) / tau) for j in range(7)]
        weights = [s / sum(scores) for s in scores]
        direct = normalised(sum(w * X[j] for j, w in enumerate(weights)))
        assert np.allclose(got.numpy(), direct, atol=1e-13)
    assert model.transductive


def training_statistics(x, reading):
    """μ and σ (population, 1 where constant) of the training rows, in numpy: the oracle of the centred readings."""
    X = x.numpy()
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (lambda v: v - mu) if reading == "center" else (lambda v: (v - mu) / sd)


@pytest.mark.parametrize("reading", ["center", "standardize"])
def test_centred_softmax_attention_against_a_loop(reading):
    x, x_new = rows(7, 5, seed=5, positive=True), rows(3, 5, seed=6, positive=True)
    model = get_model("softmax-attn", {"attention_input": reading})
    state = model.fit(x)
    tr = training_statistics(x, reading)
    U = np.array([tr(v) for v in x.numpy()])
    for q, got in zip(np.vstack([x.numpy(), x_new.numpy()]), torch.cat([model.features(x, state),
                                                                     model.features(x_new, state)])):
        scores = [math.exp(float(tr(q) @ U[j]) / math.sqrt(5)) for j in range(7)]
        direct = normalised(sum(s / sum(scores) * U[j] for j, s in enumerate(scores)))
        assert np.allclose(got.numpy(), direct, atol=1e-13)
    # the statistics are the training rows': fitting on other rows moves the test features
    assert not torch.allclose(model.features(x_new, model.fit(rows(7, 5, seed=9, positive=True))),
                              model.features(x_new, state))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_attention_at_a_tiny_temperature_is_hard_attention(dtype):
    # s/τ alone overflows below τ ≈ 1e-38 (float32) or 1e-308 (float64); the limit is the nearest training row
    x, x_new = rows(7, 5, seed=1).to(dtype), rows(3, 5, seed=2).to(dtype)
    model = get_model("softmax-attn", {"temperature": 1e-300})
    state = model.fit(x)
    q = x_new.clone().requires_grad_(True)
    got = model.features(q, state)
    nearest = x[(x_new @ x.T).argmax(dim=1)]
    assert torch.allclose(got, nearest, atol=1e-6)
    got.sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_softmax_temperature_must_be_positive(bad):
    with pytest.raises(MalleabilityError, match="temperature"):
        get_model("softmax-attn", {"temperature": bad})


# ------------------------------------------------------------------------------ patch-attn

def direct_patch_features(img_hwc, p, softmax=False):
    h, w, c = img_hwc.shape
    tokens = [img_hwc[i:i + p, j:j + p, :].reshape(-1) for i in range(0, h, p) for j in range(0, w, p)]
    T = np.array(tokens)
    out = []
    for a in T:
        s = np.array([a @ b for b in T])
        if softmax:
            s = np.exp(s / math.sqrt(T.shape[1]))
            s = s / s.sum()
        out.append(sum(s[j] * T[j] for j in range(len(T))))
    return normalised(np.concatenate(out))


@pytest.mark.parametrize("attention", ["linear", "softmax"])
def test_patch_attention_against_a_loop(attention):
    shape = (4, 6, 2)
    x = rows(3, 48, seed=3, positive=True)
    model = get_model("patch-attn", {"patch_size": 2, "image_shape": shape, "attention": attention})
    assert model.fit(x) == {} and not model.transductive
    z = model.features(x, {})
    for i in range(3):
        img = x[i].numpy().reshape(shape)
        assert np.allclose(z[i].numpy(), direct_patch_features(img, 2, attention == "softmax"), atol=1e-13)
    # inductive: a row's features do not depend on the other rows
    assert torch.allclose(model.features(x[:1], {}), z[:1], atol=0, rtol=0)


@pytest.mark.parametrize("reading", ["center", "standardize"])
def test_centred_patch_attention_against_a_loop(reading):
    shape = (4, 6, 2)
    x, x_new = rows(5, 48, seed=7, positive=True), rows(2, 48, seed=8, positive=True)
    model = get_model("patch-attn", {"patch_size": 2, "image_shape": shape, "attention_input": reading})
    state = model.fit(x)
    assert set(state) == {"mu", "sigma"} and not model.transductive
    tr = training_statistics(x, reading)
    z = model.features(x_new, state)
    for i in range(2):
        img = tr(x_new[i].numpy()).reshape(shape)
        assert np.allclose(z[i].numpy(), direct_patch_features(img, 2), atol=1e-13)
    # still inductive given the statistics: one row's features do not depend on the rows embedded with it
    assert torch.allclose(model.features(x_new[:1], state), z[:1], atol=0, rtol=0)
    with pytest.raises(MalleabilityError, match="training statistics"):
        model.features(x_new, {})


def test_patch_attention_default_sizes_give_16_tokens():
    for d, side, channels in ((784, 28, 1), (3072, 32, 3)):
        x = rows(2, d, seed=4, positive=True)
        model = get_model("patch-attn")
        z = model.features(x, model.fit(x))
        p = side // 4
        assert z.shape == (2, d)
        assert np.allclose(z[1].numpy(), direct_patch_features(x[1].numpy().reshape(side, side, channels), p), atol=1e-12)


def test_patch_attention_bad_shapes_are_one_line_errors():
    x = rows(2, 784, positive=True)
    with pytest.raises(MalleabilityError, match="does not divide"):
        get_model("patch-attn", {"patch_size": 5}).fit(x)
    with pytest.raises(MalleabilityError, match="image shape"):
        get_model("patch-attn").fit(rows(2, 100))
    with pytest.raises(MalleabilityError, match="has 12 values"):
        get_model("patch-attn", {"image_shape": (2, 2, 3)}).fit(rows(2, 100))
    with pytest.raises(MalleabilityError, match="patch_size"):
        get_model("patch-attn", {"patch_size": 0})
    with pytest.raises(MalleabilityError, match="unknown attention"):
        get_model("patch-attn", {"attention": "cosine"})


# ------------------------------------------------------------------------------ truncated-attn

@pytest.mark.parametrize("reading", ["raw", "center"])
def test_full_rank_truncation_is_mlp_attn_exactly(reading):
    x, x_new = rows(9, 6, seed=5, positive=True), rows(4, 6, seed=6, positive=True)
    full = get_model("truncated-attn", {"attention_input": reading})
    ref = get_model("mlp-attn", {"attention_input": reading})
    assert torch.equal(full.features(x_new, full.fit(x)), ref.features(x_new, ref.fit(x)))
    # rank = d is the full C up to rounding of the SVD
    top = get_model("truncated-attn", {"attention_input": reading, "rank": 6})
    assert torch.allclose(top.features(x_new, top.fit(x)), ref.features(x_new, ref.fit(x)), atol=1e-12)


@pytest.mark.parametrize("r", [1, 2, 4])
def test_rank_r_truncation_against_an_eigen_oracle(r):
    x, x_new = rows(9, 6, seed=7), rows(4, 6, seed=8)
    model = get_model("truncated-attn", {"rank": r})
    state = model.fit(x)
    C = x.numpy().T @ x.numpy()
    w, V = np.linalg.eigh(C)
    keep = np.argsort(w)[::-1][:r]
    C_r = (V[:, keep] * w[keep]) @ V[:, keep].T
    assert np.allclose(state["C"].numpy(), C_r, atol=1e-12)
    assert np.linalg.matrix_rank(state["C"].numpy(), tol=1e-10) == r
    direct = np.array([normalised(v @ C_r) for v in x_new.numpy()])
    assert np.allclose(model.features(x_new, state).numpy(), direct, atol=1e-12)


@pytest.mark.parametrize("rank, match", [(0, "rank must be"), (-2, "rank must be"), (1.5, "rank must be"), (7, "exceeds")])
def test_rank_out_of_range_is_a_one_line_error(rank, match):
    with pytest.raises(MalleabilityError, match=match):
        get_model("truncated-attn", {"rank": rank}).fit(rows(5, 6))


# ------------------------------------------------------------------------------ qkv-attn

def qkv_state(n=6, d=8, d_k=3, seed=0):
    x = rows(n, d, seed=seed)
    model = get_model("qkv-attn", {"d_k": d_k})
    return model, x, {**model.fit(x), **model.init_params(d, seed)}


def test_qkv_features_are_the_attention_formula():
    model, x, state = qkv_state()
    x_new = rows(3, 8, seed=9)
    WQ, WK, WV = (state[k].numpy() for k in ("W_Q", "W_K", "W_V"))
    X = x.numpy()
    for q, got in zip(x_new.numpy(), model.features(x_new, state)):
        direct = normalised((q @ WQ) @ (X @ WK).T @ (X @ WV))
        assert np.allclose(got.numpy(), direct, atol=1e-13)
    assert model.features(x_new, state).shape == (3, 3)


def test_qkv_init_is_seeded_standard_normal_over_sqrt_d():
    model = get_model("qkv-attn", {"d_k": 50})
    p = model.init_params(400, 3)
    assert all(torch.equal(p[k], model.init_params(400, 3)[k]) for k in p)
    assert not torch.equal(p["W_Q"], model.init_params(400, 4)["W_Q"])
    assert not torch.equal(p["W_Q"], p["W_K"])
    assert abs(float(torch.cat([v.reshape(-1) for v in p.values()]).std()) * math.sqrt(400) - 1) < 0.02


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_qkv_d_k_below_one_is_an_error(bad):
    with pytest.raises(MalleabilityError, match="d_k"):
        get_model("qkv-attn", {"d_k": bad})


def test_qkv_missing_parameters_are_a_one_line_error():
    model, x, state = qkv_state()
    with pytest.raises(MalleabilityError, match="W_Q"):
        model.features(x, model.fit(x))


def test_training_moves_the_projections_and_keeps_their_init():
    model, x, _ = qkv_state(n=20, d=8, d_k=4)
    y = (x[:, 0] > 0).long()
    tm = train_model(model, x, y, 2, TrainConfig(epochs=5, seed=2, dtype="float64", batch_size=8), width=16)
    assert tm.net.W.shape == (16, 4)
    assert set(tm.params) == set(tm.params0) == {"W_Q", "W_K", "W_V"}
    assert all(torch.equal(tm.params0[k], model.init_params(8, 2)[k]) for k in tm.params0)
    assert all(not torch.allclose(tm.params[k].detach(), tm.params0[k]) for k in tm.params)
    assert tm.history[-1] < tm.history[0]
    # a refit state gets the trained parameters (and the output weights) merged back
    import dataclasses

    refit = dataclasses.replace(tm, state=model.fit(x))
    assert refit.state["W_Q"] is tm.params["W_Q"] and refit.state[OUTPUT_WEIGHTS] is tm.net.a
    # a parameter-free model has no parameters and keeps its features' dimension
    relu = train_model("relu", x, y, 2, TrainConfig(epochs=1, seed=2, dtype="float64"), width=16)
    assert relu.params == {} and relu.params0 == {} and relu.net.W.shape == (16, 8)


# ------------------------------------------------------------------------------ NTK over all parameters

@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("implementation, max_bytes", [
    ("jacobian", 1000),  # one row per chunk, recomputed
    ("jacobian", 2**30),  # all column Jacobians kept
    ("factored", 2**30),  # outer products of the parameter uses
])
def test_params_ntk_matches_plain_autograd_jacobians(outputs, cross, implementation, max_bytes):
    model, x, state = qkv_state(n=5, d=7, d_k=3, seed=1)
    g = torch.Generator().manual_seed(4)
    W = torch.randn(6, 3, generator=g, dtype=torch.float64)
    a = (torch.randint(0, 2, (6, outputs), generator=g) * 2 - 1).double()
    x2 = rows(4, 7, seed=11) if cross else None
    ours = ntk_blocks(model, state, W, a, x, x2, max_bytes=max_bytes, implementation=implementation)
    ref = reference_ntk_autograd(model, state, W, a, x, x2)
    assert set(ours) == set(ref) == {"W", "W_Q", "W_K", "W_V"}
    for k in ref:
        assert torch.allclose(ours[k], ref[k], rtol=1e-10, atol=1e-12 * float(ref[k].abs().max())), k
    parts = split_parts(ours)
    assert torch.allclose(parts["mlp"] + parts["projection"], full_ntk(model, state, W, a, x, x2), atol=1e-12)
    assert float(parts["projection"].abs().max()) > 0


def test_params_ntk_of_a_parameter_free_model_is_the_closed_form():
    x = rows(6, 5, seed=2)
    model = get_model("mlp-attn")
    state = model.fit(x)
    W = torch.randn(9, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    blocks = ntk_blocks(model, state, W, None, x)
    assert list(blocks) == ["W"]
    closed = empirical_ntk(model.features(x, state), model.features(x, state), W)
    torch.testing.assert_close(blocks["W"], closed, rtol=1e-12, atol=1e-14)


def test_network_influence_of_qkv_uses_the_full_ntk():
    from malleability.empirics.experiments.flip_rate.metrics import krr_targets, network_influence
    from malleability.empirics.influence import loo_influence

    model, x, _ = qkv_state(n=12, d=8, d_k=3, seed=3)
    y = (x[:, 1] > 0).long()
    tm = train_model(model, x, y, 2, TrainConfig(epochs=3, seed=1, dtype="float64"), width=10)
    x_te, y_te = rows(4, 8, seed=12), np.array([0, 1, 1, 0])
    got = network_influence(model, tm.net.W, tm.state, x, y.numpy(), x_te, y_te, 1, 1e-3)
    ref = reference_ntk_autograd(model, tm.state, tm.net.W, tm.net.a, x)
    ref_te = reference_ntk_autograd(model, tm.state, tm.net.W, tm.net.a, x_te, x)
    expect = loo_influence(sum(ref.values()).numpy(), sum(ref_te.values()).numpy(), krr_targets(y.numpy(), 1, "onehot"),
                           krr_targets(y_te, 1, "onehot"), 1e-3)
    assert np.allclose(got.total, expect.total, rtol=1e-8, atol=1e-12)
    # the W part alone gives other influences: the projections matter
    w_only = loo_influence(ref["W"].numpy(), ref_te["W"].numpy(), krr_targets(y.numpy(), 1, "onehot"),
                           krr_targets(y_te, 1, "onehot"), 1e-3)
    assert not np.allclose(got.total, w_only.total, rtol=1e-3)
    no_a = {k: v for k, v in tm.state.items() if k != OUTPUT_WEIGHTS}
    with pytest.raises(MalleabilityError, match="output weights"):
        network_influence(model, tm.net.W, no_a, x, y.numpy(), x_te, y_te, 1, 1e-3)


# ------------------------------------------------------------------------------ the experiments run every variant

VARIANTS = [("softmax-attn", {}), ("patch-attn", {}), ("truncated-attn", {"rank": 2}), ("qkv-attn", {"d_k": 4})]


@pytest.mark.parametrize("model, options", VARIANTS)
def test_ntk_distance_cell_runs_every_variant(data_root, model, options):
    from malleability.empirics.data import DataConfig
    from malleability.empirics.experiments.ntk_distance import NTKDistanceConfig, run_ntk_distance_cell

    data = DataConfig("mnist", n=30, n_test=10, classes=(3, 8), data_root=str(data_root))
    row = run_ntk_distance_cell(NTKDistanceConfig(data=data, train=TrainConfig(epochs=2, seed=1), model=model,
                                                  model_options=options, width=16, function_kernel="init"))
    assert all(v is not None and math.isfinite(v) for v in row["distance"].values())
    if model == "qkv-attn":
        parts = row["ntk_parts"]
        # the kernel is the sum of its parts, at init and after training
        assert parts["mlp"]["k0_fro"] > 0 and parts["projection"]["k0_fro"] > 0
        assert row["norms"]["k0_fro"] <= parts["mlp"]["k0_fro"] + parts["projection"]["k0_fro"] + 1e-9
        assert all(v > 0 for v in row["param_change"].values())
    else:
        assert row["ntk_parts"] is None and row["param_change"] is None


@pytest.mark.parametrize("model, options", VARIANTS)
def test_flip_rate_cell_runs_every_variant(data_root, model, options):
    from malleability.empirics.data import DataConfig
    from malleability.empirics.experiments.flip_rate import FlipRateConfig, run_flip_rate_cell

    cfg = FlipRateConfig(data=DataConfig("mnist", n=30, n_test=8, seed=1, classes=(3, 8), data_root=str(data_root)),
                         train=TrainConfig(epochs=2, seed=1), model=model, model_options=options, width=16,
                         attack="fgsm", eps=0.3)
    row = run_flip_rate_cell(cfg)
    assert 0 <= row["flip_rate"] <= 1 and row["model_options"] == get_model(model, options).options()


def test_tiled_symmetric_contraction_equals_the_cross_kernel():
    # more rows than one tile: the symmetric path multiplies only tiles on or above the diagonal
    model, x, state = qkv_state(n=300, d=12, d_k=3, seed=5)
    W = torch.randn(8, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sym = ntk_blocks(model, state, W, None, x, implementation="jacobian")
    cross = ntk_blocks(model, state, W, None, x, x.clone(), implementation="jacobian")
    for k in sym:
        assert torch.allclose(sym[k], cross[k], rtol=1e-12, atol=1e-12 * float(cross[k].abs().max()))
        assert torch.allclose(sym[k], sym[k].T, rtol=0, atol=1e-13 * float(sym[k].abs().max()))


def test_factored_features_are_the_features_and_bad_implementations_are_errors():
    model, x, state = qkv_state()
    taps = {k: torch.zeros(shape, dtype=torch.float64) for k, shape in model.tap_shapes(*x.shape).items()}
    z, uses = model.embed_factored(x, state, taps)
    assert torch.equal(z, model.embed(x, state)) and set(uses) == {"W_Q", "W_K", "W_V"}
    W = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(MalleabilityError, match="unknown implementation"):
        ntk_blocks(model, state, W, None, x, implementation="fast")
    relu = get_model("relu")
    with pytest.raises(MalleabilityError, match="no factored form"):
        ntk_blocks(relu, {}, torch.randn(5, 8, dtype=torch.float64), None, x, implementation="factored")


def test_benchmark_reports_both_paths_and_agrees_with_the_reference():
    from malleability.empirics.ntk_params import benchmark_qkv_ntk

    out = benchmark_qkv_ntk(n=12, d=16, m=8, d_k=3, num_outputs=2, reference_rows=6)
    assert out["reference_scaled_from_rows"] == 6 and out["speedup"] > 0 and out["jacobian_speedup"] > 0
    assert out["max_rel_diff"]["factored"] < 1e-10 and out["max_rel_diff"]["jacobian"] < 1e-10
    assert out["reference_bytes"] > out["factored_bytes"] > 0
    with pytest.raises(MalleabilityError, match="must be >= 1"):
        benchmark_qkv_ntk(n=0)
