"""The shared network, the model registry and the feature maps against direct implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from malleability.empirics.models import MODELS, check_model, get_model, register
from malleability.empirics.models.base import FeatureModel
from malleability.empirics.network import TwoLayerReLU
from malleability.errors import MalleabilityError


def rows(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def test_forward_matches_the_sum_formula():
    net = TwoLayerReLU(5, 7, num_outputs=3, init="ntk", seed=2)
    z = rows(4, 5)
    W, a = net.W.detach().numpy(), net.a.numpy()
    expected = np.array([[sum(a[r, k] * max(W[r] @ zi, 0.0) for r in range(7)) / math.sqrt(7) for k in range(3)]
                         for zi in z.numpy()])
    assert np.allclose(net(z).detach().numpy(), expected, atol=1e-14)
    assert set(np.unique(a)) <= {-1.0, 1.0} and net.a.requires_grad is False
    assert [n for n, _ in net.named_parameters()] == ["W"]


def test_seeded_init_and_scales():
    a1, a2 = TwoLayerReLU(20, 300, seed=5), TwoLayerReLU(20, 300, seed=5)
    assert torch.equal(a1.W, a2.W) and torch.equal(a1.a, a2.a)
    assert not torch.equal(a1.W, TwoLayerReLU(20, 300, seed=6).W)
    ntk = TwoLayerReLU(20, 300, seed=5, init="ntk")
    # the same draw, scaled: paper init = 0.01 x NTK init
    assert torch.allclose(a1.W, 0.01 * ntk.W, rtol=0, atol=1e-15)
    assert abs(float(ntk.W.detach().std()) - 1.0) < 0.03
    f32 = TwoLayerReLU(20, 300, seed=5, dtype=torch.float32)
    assert f32.W.dtype == torch.float32 and torch.allclose(f32.W.double(), a1.W, atol=1e-9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(d=0, width=3), "dimension"), (dict(d=3, width=0), "width"),
    (dict(d=3, width=3, init="xavier"), "unknown init"), (dict(d=3, width=3, num_outputs=0), "num_outputs"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(MalleabilityError, match=match):
        TwoLayerReLU(**kwargs)


def test_attention_embedding_is_normalised_rows_of_XXtX():
    x = rows(6, 4, seed=1)
    model = get_model("mlp-attn")
    state = model.fit(x)
    z = model.features(x, state)
    f_att = x @ x.T @ x
    assert torch.allclose(z, f_att / f_att.norm(dim=1, keepdim=True), atol=1e-14)
    # test points use the training C
    x_new = rows(3, 4, seed=9)
    C = x.T @ x
    assert torch.allclose(model.features(x_new, state), (x_new @ C) / (x_new @ C).norm(dim=1, keepdim=True))
    relu = get_model("relu")
    assert torch.equal(relu.features(x, relu.fit(x)), x)
    with pytest.raises(MalleabilityError, match="unknown model"):
        get_model("no-such-model")
    with pytest.raises(MalleabilityError, match="attention matrix"):
        model.features(x, {})


def test_centred_attention_uses_training_statistics_only():
    x = rows(8, 5, seed=3)
    x_test = rows(4, 5, seed=4)
    for reading in ("center", "standardize"):
        model = get_model("mlp-attn", {"attention_input": reading})
        state = model.fit(x)
        mu = x.mean(dim=0, keepdim=True)
        sd = x.std(dim=0, keepdim=True, unbiased=False)
        u = x - mu if reading == "center" else (x - mu) / sd
        C = u.T @ u
        ut = x_test - mu if reading == "center" else (x_test - mu) / sd
        direct = ut @ C
        assert torch.allclose(model.features(x_test, state), direct / direct.norm(dim=1, keepdim=True), atol=1e-12)
        # fitting on other rows changes the statistics, so the test features change too
        other = model.fit(rows(8, 5, seed=11))
        assert not torch.allclose(model.features(x_test, other), model.features(x_test, state))
    with pytest.raises(MalleabilityError, match="attention input"):
        get_model("mlp-attn", {"attention_input": "whiten"})
    with pytest.raises(MalleabilityError, match="no option"):
        get_model("relu", {"attention_input": "center"})


def test_centring_removes_the_collinearity_of_non_negative_rows():
    from malleability.empirics.experiments.widths import collinearity

    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(60, 30, generator=g, dtype=torch.float64)
    x = pixels / pixels.norm(dim=1, keepdim=True)
    raw, cen = get_model("mlp-attn"), get_model("mlp-attn", {"attention_input": "center"})
    share_raw = collinearity(raw.features(x, raw.fit(x)).numpy())["top_eigenvalue_share"]
    share_cen = collinearity(cen.features(x, cen.fit(x)).numpy())["top_eigenvalue_share"]
    assert share_raw > 0.95 and share_cen < 0.5


def test_collinearity_closed_forms():
    from malleability.empirics.experiments.widths import collinearity

    same = np.ones((4, 3)) / np.sqrt(3)
    assert collinearity(same) == {"top_eigenvalue_share": pytest.approx(1.0), "mean_cosine": pytest.approx(1.0)}
    assert collinearity(np.eye(3)) == {"top_eigenvalue_share": pytest.approx(1 / 3), "mean_cosine": pytest.approx(0.0)}


def test_a_new_model_is_one_registered_class():
    @register
    class Doubled(FeatureModel):
        name = "test-doubled"
        label = "2x"

        def embed(self, x_unit, state):
            return 2 * x_unit

    try:
        assert check_model("test-doubled") == "test-doubled"
        x = rows(3, 2)
        assert torch.equal(get_model("test-doubled").features(x, {}), 2 * x)
    finally:
        MODELS.pop("test-doubled")


def test_the_worked_example_of_contributing_registers_and_runs():
    """The model of CONTRIBUTING.md, executed as written: registered, found, checked against its closed form."""
    import re
    import types
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    import sys

    module = types.ModuleType("scaled_identity_example")
    sys.modules[module.__name__] = module  # dataclasses resolve annotations through the module
    try:
        exec(compile(code, "CONTRIBUTING.md", "exec"), module.__dict__)
        model = get_model("scaled-identity", {"scale": 3.0})
        x = rows(4, 3)
        assert torch.equal(model.features(x, model.fit(x)), 3 * x)
        with pytest.raises(MalleabilityError, match="scale"):
            get_model("scaled-identity", {"scale": 0.0})
    finally:
        MODELS.pop("scaled-identity", None)
        sys.modules.pop(module.__name__, None)
