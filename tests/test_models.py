"""The two networks: the output formula, seeded inits, and the attention embedding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from malleability.empirics.models import TwoLayerReLU, attention_matrix, embed
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
    assert abs(float(ntk.W.std()) - 1.0) < 0.03
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
    C = attention_matrix(x)
    z = embed("mlp-attn", x, C)
    f_att = x @ x.T @ x
    assert torch.allclose(z, f_att / f_att.norm(dim=1, keepdim=True), atol=1e-14)
    # test points use the training C
    x_new = rows(3, 4, seed=9)
    assert torch.allclose(embed("mlp-attn", x_new, C), (x_new @ C) / (x_new @ C).norm(dim=1, keepdim=True))
    assert torch.equal(embed("relu", x, None), x)
    with pytest.raises(MalleabilityError, match="unknown model"):
        embed("softmax", x, C)
    with pytest.raises(MalleabilityError, match="attention matrix"):
        embed("mlp-attn", x, None)
