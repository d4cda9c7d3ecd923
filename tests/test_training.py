"""Training protocols: determinism, losses, protocol defaults, batch transforms, bad options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from malleability.empirics.data import DataConfig, load_dataset
from malleability.empirics.training import (
    TrainConfig,
    make_loss_fn,
    resolve_device,
    resolve_loss,
    targets_for,
    train_model,
)
from malleability.errors import MalleabilityError


@pytest.fixture(scope="module")
def binary(data_root):
    ds = load_dataset(DataConfig("mnist", n=64, n_test=1, classes=(3, 8), data_root=str(data_root)))
    return torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)


def test_same_seed_same_numbers(binary):
    x, y = binary
    cfg = TrainConfig(epochs=3, seed=4, batch_size=16)
    a = train_model("mlp-attn", x, y, 2, cfg, width=32)
    b = train_model("mlp-attn", x, y, 2, cfg, width=32)
    assert a.history == b.history and torch.equal(a.net.W, b.net.W)
    c = train_model("mlp-attn", x, y, 2, TrainConfig(epochs=3, seed=5, batch_size=16), width=32)
    assert not torch.equal(a.net.W, c.net.W)
    assert torch.equal(a.W0, train_model("mlp-attn", x, y, 2, TrainConfig(epochs=0, seed=4), width=32).net.W)


def test_paper_and_lazy_protocols_reduce_the_loss(binary):
    x, y = binary
    paper = train_model("relu", x, y, 2, TrainConfig(epochs=15, dtype="float64", lr=1e-2), width=64)
    assert paper.loss == "mse" and paper.net.a.shape == (64, 1) and paper.net.init == "paper"
    assert paper.history[-1] < paper.history[0]
    lazy = train_model("relu", x, y, 2, TrainConfig(protocol="lazy", epochs=15, dtype="float64"), width=64)
    assert lazy.net.init == "ntk" and lazy.history[-1] < lazy.history[0]
    # lazy regime: W moves little relative to its size
    rel = float((lazy.net.W.detach() - lazy.W0).norm() / lazy.W0.norm())
    assert rel < 0.2
    s = TrainConfig(protocol="paper").resolved()
    assert (s["epochs"], s["lr"], s["batch_size"], s["weight_decay"], s["init_std"]) == (500, 1e-3, 128, 1e-3, 0.01)


def test_losses():
    assert resolve_loss("auto", 10) == "ce" and resolve_loss("auto", 2) == "mse"
    with pytest.raises(MalleabilityError, match="needs 2 classes"):
        resolve_loss("mse", 10)
    y = torch.tensor([0, 2])
    t = targets_for("mse-ovr", y, 3)
    assert torch.equal(t, torch.tensor([[1.0, -1, -1], [-1, -1, 1]], dtype=torch.float64))
    out = torch.zeros(2, 3, dtype=torch.float64)
    assert torch.allclose(make_loss_fn("mse-ovr", 3)(out, y), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(make_loss_fn("ce", 3)(out, y), torch.full((2,), np.log(3), dtype=torch.float64))
    assert torch.allclose(make_loss_fn("mse", 2)(torch.zeros(2, 1), torch.tensor([0, 1])), torch.ones(2))


def test_ten_class_models_and_pixel_logits(data_root):
    ds = load_dataset(DataConfig("mnist", n=40, n_test=5, data_root=str(data_root)))
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    for loss in ("ce", "mse-ovr"):
        tm = train_model("mlp-attn", x, y, 10, TrainConfig(epochs=1, loss=loss), width=16)
        assert tm.net.a.shape == (16, 10) and tm.loss == loss
    pixels = torch.from_numpy(ds.pixels_test).float().requires_grad_(True)
    out = tm.logits_from_pixels(pixels)
    tm.loss_fn()(out, torch.from_numpy(ds.y_test)).sum().backward()
    assert out.shape == (5, 10) and torch.all(torch.isfinite(pixels.grad)) and pixels.grad.abs().sum() > 0
    # pixels scaled by a constant give the same logits (rows are normalised first)
    assert torch.allclose(tm.logits_from_pixels(pixels.detach() * 3), out.detach(), atol=1e-5)


def test_batch_transform_is_called_and_identity_changes_nothing(binary):
    x, y = binary
    calls = []

    def identity(model, xb, yb):
        calls.append((xb.shape[0], model.kind))
        return xb

    cfg = TrainConfig(epochs=2, batch_size=32, dtype="float64")
    a = train_model("mlp-attn", x, y, 2, cfg, width=16, batch_transform=identity)
    b = train_model("mlp-attn", x, y, 2, cfg, width=16)
    assert calls == [(32, "mlp-attn")] * 4
    assert torch.allclose(a.net.W, b.net.W, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(protocol="sgd"), "unknown protocol"), (dict(loss="hinge"), "unknown loss"),
    (dict(dtype="float16"), "unknown dtype"), (dict(epochs=-1), "epochs"), (dict(lr=0.0), "lr"),
    (dict(batch_size=0), "batch_size"), (dict(seed=-2), "seed"),
])
def test_bad_train_configs(kwargs, match):
    with pytest.raises(MalleabilityError, match=match):
        TrainConfig(**kwargs)


def test_devices_and_bad_labels(binary):
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(MalleabilityError, match="unknown device"):
        resolve_device("tpu")
    x, y = binary
    with pytest.raises(MalleabilityError, match="labels"):
        train_model("relu", x, y + 5, 2, TrainConfig(epochs=1), width=4)
    with pytest.raises(MalleabilityError, match="unknown model"):
        train_model("cnn", x, y, 2, TrainConfig(epochs=1), width=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
@pytest.mark.parametrize("count", [1, 2])  # one parameter takes the step's single-tensor path
def test_fused_adam_is_torch_fused_adam_bitwise(dtype, weight_decay, count):
    from malleability.empirics.training import FusedAdam

    gen = torch.Generator().manual_seed(7)
    start = [torch.randn(5, 3, generator=gen, dtype=torch.float64).to(dtype),
             torch.randn(4, generator=gen).to(dtype)][:count]
    ours = [p.clone().requires_grad_(True) for p in start]
    theirs = [p.clone().requires_grad_(True) for p in start]
    opt_ours = FusedAdam(ours, lr=0.01, weight_decay=weight_decay)
    opt_theirs = torch.optim.Adam(theirs, lr=0.01, weight_decay=weight_decay, fused=True)
    for step in range(30):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype) for p in start]
        for p, q, g in zip(ours, theirs, grads):
            # the second tensor (or the only one) sits out every third step: its moments and step count must not move
            skip = (p.ndim == 1 or count == 1) and step % 3 == 0
            p.grad = None if skip else g.clone()
            q.grad = None if skip else g.clone()
        opt_ours.step()
        opt_theirs.step()
    for p, q in zip(ours, theirs):
        assert torch.equal(p.detach(), q.detach())
    assert not torch.equal(ours[0].detach(), start[0])  # it did move


def _autograd_loss_and_grad(net, zb, yb, loss, num_classes):
    """The graph-built step the hand-written one replaces: the oracle it must equal bit for bit."""
    from malleability.empirics.training import make_loss_fn

    net.W.grad = None
    losses = make_loss_fn(loss, num_classes)(net(zb), yb)
    losses.mean().backward()
    return losses.detach()


@pytest.mark.parametrize("model, classes, loss, dtype, width, batch_size, protocol", [
    ("relu", 10, "ce", "float64", 128, 128, "paper"),
    ("relu", 10, "ce", "float32", 16, 128, "paper"),
    ("mlp-attn", 2, "mse", "float64", 32, 64, "paper"),
    ("relu", 10, "mse-ovr", "float32", 64, None, "paper"),
    ("relu", 2, "mse", "float64", 16, None, "lazy"),
])
def test_hand_written_step_is_autograds_bit_for_bit(monkeypatch, model, classes, loss, dtype, width, batch_size,
                                                     protocol):
    import malleability.empirics.training as T

    g = torch.Generator().manual_seed(classes * width)
    x = torch.rand(300, 49, generator=g, dtype=torch.float64)  # 300 rows: the last batch is a short one
    x = x / x.norm(dim=1, keepdim=True)
    y = torch.randint(0, classes, (300,), generator=g)
    cfg = TrainConfig(protocol=protocol, epochs=4, seed=3, batch_size=batch_size, loss=loss, dtype=dtype)
    fast = train_model(model, x, y, classes, cfg, width=width)
    monkeypatch.setattr(T, "_loss_and_grad", _autograd_loss_and_grad)
    slow = train_model(model, x, y, classes, cfg, width=width)
    assert fast.history == slow.history
    assert torch.equal(fast.net.W, slow.net.W)
    assert not torch.equal(fast.net.W, fast.W0)  # it trained


@pytest.mark.parametrize("model", ["relu", "mlp-attn"])
def test_hand_written_step_under_a_batch_transform_is_autograds(monkeypatch, model):
    # adversarial training's path: the batch is rebuilt each step, and the transform leaves a gradient
    # on W (an attack differentiates through the network), which the step must replace, not add to
    import malleability.empirics.training as T

    def transform(trained, xb, yb):
        out = trained.net(trained.features(xb))
        out.sum().backward()  # a stray gradient on W
        moved = xb + 1e-3 * torch.sign(out.detach()[:, :1])
        return moved / moved.norm(dim=1, keepdim=True)

    g = torch.Generator().manual_seed(11)
    x = torch.rand(200, 36, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    y = torch.randint(0, 10, (200,), generator=g)
    cfg = TrainConfig(epochs=3, seed=1, batch_size=64, dtype="float64")
    fast = train_model(model, x, y, 10, cfg, width=32, batch_transform=transform)
    monkeypatch.setattr(T, "_loss_and_grad", _autograd_loss_and_grad)
    slow = train_model(model, x, y, 10, cfg, width=32, batch_transform=transform)
    assert fast.history == slow.history and torch.equal(fast.net.W, slow.net.W)
