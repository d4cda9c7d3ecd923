"""Data loaders: real MNIST / Fashion-MNIST / CIFAR-10 subset from the offline folder, .npz files,
seeded subsets, class remapping, and one-line errors. No download is ever attempted."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from malleability.empirics import torchvision_io
from malleability.empirics.data import DataConfig, load_dataset, parse_classes, unit_rows
from malleability.errors import MalleabilityError


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any download or connection attempt fails the test loudly."""
    import torchvision.datasets.utils as tvu

    def boom(*args, **kwargs):
        raise AssertionError("network/download attempted in a test")

    monkeypatch.setattr(tvu, "download_url", boom)
    monkeypatch.setattr(tvu, "download_and_extract_archive", boom)
    monkeypatch.setattr(socket, "create_connection", boom)
    monkeypatch.setattr(torchvision_io, "_network_reachable", boom)


def test_mnist_subset_shapes_ranges_and_unit_rows(data_root):
    ds = load_dataset(DataConfig("mnist", n=120, n_test=40, seed=3, data_root=str(data_root)))
    assert ds.pixels_train.shape == (120, 784) and ds.pixels_test.shape == (40, 784)
    assert ds.pixels_train.dtype == np.float64 and ds.pixels_train.min() >= 0 and ds.pixels_train.max() <= 1
    # MNIST pixels are k/255
    assert np.allclose(ds.pixels_train * 255, np.round(ds.pixels_train * 255))
    assert np.allclose(np.linalg.norm(ds.x_train, axis=1), 1.0, atol=1e-12)
    assert set(np.unique(ds.y_train)) <= set(range(10)) and ds.num_classes == 10
    assert ds.class_names == tuple(str(i) for i in range(10))


def test_subset_is_the_documented_seeded_draw(data_root):
    import torchvision

    ds = load_dataset(DataConfig("mnist", n=50, n_test=10, seed=7, data_root=str(data_root)))
    raw = torchvision.datasets.MNIST(str(data_root), train=True, download=False)
    idx = np.sort(np.random.default_rng(7).permutation(60000)[:50])
    assert np.array_equal(ds.pixels_train * 255, raw.data.numpy().reshape(60000, -1)[idx].astype(float))
    assert np.array_equal(ds.y_train, raw.targets.numpy()[idx])
    again = load_dataset(DataConfig("mnist", n=50, n_test=10, seed=7, data_root=str(data_root)))
    other = load_dataset(DataConfig("mnist", n=50, n_test=10, seed=8, data_root=str(data_root)))
    assert np.array_equal(ds.pixels_train, again.pixels_train) and np.array_equal(ds.pixels_test, again.pixels_test)
    assert not np.array_equal(ds.pixels_train, other.pixels_train)


def test_classes_are_remapped_in_the_given_order(data_root):
    ds = load_dataset(DataConfig("mnist", n=80, n_test=20, classes=(8, 3), data_root=str(data_root)))
    full = load_dataset(DataConfig("mnist", n=80, n_test=20, classes=(3, 8), data_root=str(data_root)))
    assert set(np.unique(ds.y_train)) == {0, 1} and ds.num_classes == 2 and ds.class_names == ("8", "3")
    # same pool and seed -> same rows, labels swapped
    assert np.array_equal(ds.pixels_train, full.pixels_train)
    assert np.array_equal(ds.y_train, 1 - full.y_train)


def test_fashion_mnist_names(data_root):
    ds = load_dataset(DataConfig("fashion-mnist", n=10, n_test=5, classes=(0, 9), data_root=str(data_root)))
    assert ds.class_names == ("T-shirt/top", "Ankle boot") and ds.d == 784


def test_cifar_subset_split_is_disjoint_and_recorded(data_root):
    classes = parse_classes("automobile,airplane", "cifar10")
    assert classes == (1, 0)
    ds = load_dataset(DataConfig("cifar10", n=100, n_test=60, classes=classes, seed=1, data_root=str(data_root)))
    assert ds.d == 3072 and ds.class_names == ("automobile", "airplane")
    assert "subset" in ds.source and "train and test" in ds.notes
    rows_tr = {r.tobytes() for r in ds.pixels_train}
    assert not any(r.tobytes() in rows_tr for r in ds.pixels_test)
    # the README's first labels: 6, 9, 9, 4, 1, 1 -> automobile (1) at positions 4 and 5
    raw = np.load(data_root / "cifar10-subset" / "cifar10_train_first4000.npz")
    assert list(raw["y"][:6]) == [6, 9, 9, 4, 1, 1]
    with pytest.raises(MalleabilityError, match="exceeds"):
        load_dataset(DataConfig("cifar10", n=900, n_test=500, classes=classes, data_root=str(data_root)))


def test_npz_rules(tmp_path):
    x = np.arange(1, 10 * 12 + 1, dtype=np.uint8).reshape(10, 3, 4)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    p = tmp_path / "d.npz"
    np.savez(p, x=x, y=y)
    ds = load_dataset(DataConfig(str(p), n=6, n_test=3))
    assert np.allclose(ds.pixels_train, x[:6].reshape(6, -1) / 255.0)
    assert np.allclose(ds.pixels_test, x[6:9].reshape(3, -1) / 255.0) and ds.num_classes == 3
    # more rows than the file holds is an error, not a smaller set under the requested n
    with pytest.raises(MalleabilityError, match=r"n \+ n_test = 11 exceeds the 10 rows"):
        load_dataset(DataConfig(str(p), n=8, n_test=3))
    assert load_dataset(DataConfig(str(p), n=7, n_test=3)).pixels_test.shape[0] == 3
    with pytest.raises(MalleabilityError, match=r"n \+ n_test = 7 exceeds the 6 rows of x in classes \[2, 1\]"):
        load_dataset(DataConfig(str(p), n=4, n_test=3, classes=(2, 1)))
    sub = load_dataset(DataConfig(str(p), n=2, n_test=4, classes=(2, 1)))
    assert list(sub.y_train) == [1, 0] and list(sub.y_test) == [1, 0, 1, 0]
    q = tmp_path / "f.npz"
    np.savez(q, x=np.ones((4, 2)) * 0.5, y=np.array([0, 1, 1, 0]), x_test=np.ones((3, 2)), y_test=np.ones(3, int))
    dq = load_dataset(DataConfig(str(q), n=4, n_test=2))
    assert dq.pixels_test.shape == (2, 2) and np.all(dq.pixels_train == 0.5) and dq.num_classes == 2
    assert list(dq.y_test) == [1, 1] and np.all(dq.pixels_test == 1.0)
    with pytest.raises(MalleabilityError, match="n=5 exceeds the 4 rows of x"):
        load_dataset(DataConfig(str(q), n=5, n_test=2))
    with pytest.raises(MalleabilityError, match="n_test=4 exceeds the 3 rows of x_test"):
        load_dataset(DataConfig(str(q), n=4, n_test=4))


def test_npz_errors(tmp_path):
    p = tmp_path / "zero.npz"
    np.savez(p, x=np.array([[1.0, 0.0], [0.0, 0.0]]), y=np.array([0, 1]))
    with pytest.raises(MalleabilityError, match="zero row"):
        load_dataset(DataConfig(str(p), n=2, n_test=0))
    q = tmp_path / "nolabels.npz"
    np.savez(q, x=np.ones((3, 2)))
    with pytest.raises(MalleabilityError, match="no 'y'"):
        load_dataset(DataConfig(str(q)))
    with pytest.raises(MalleabilityError, match="not found"):
        load_dataset(DataConfig(str(tmp_path / "missing.npz")))


def test_missing_dataset_fails_fast_without_download(tmp_path, monkeypatch):
    with pytest.raises(MalleabilityError, match="not found"):
        load_dataset(DataConfig("mnist", n=5, data_root=str(tmp_path)))
    with pytest.raises(MalleabilityError, match="does not exist"):
        load_dataset(DataConfig("fashion-mnist", n=5, data_root=str(tmp_path / "nope")))
    # user-cache root with downloads disallowed by the caller: still no attempt
    monkeypatch.delenv("MALLEABILITY_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "malleability").mkdir(parents=True)
    with pytest.raises(MalleabilityError, match="no download attempted"):
        load_dataset(DataConfig("mnist", n=5), allow_download=False)


@pytest.mark.parametrize(
    "cfg, match",
    [
        (DataConfig("imagenet"), "unknown dataset"),
        (DataConfig("mnist", n=0), "n must be >= 1"),
        (DataConfig("mnist", n_test=-1), "n_test"),
        (DataConfig("mnist", seed=-1), "seed"),
    ],
)
def test_bad_configs(cfg, match):
    with pytest.raises(MalleabilityError, match=match):
        load_dataset(cfg)


def test_parse_classes():
    assert parse_classes(None, "mnist") is None and parse_classes("all", "mnist") is None
    assert parse_classes("3,8", "mnist") == (3, 8)
    assert parse_classes("Truck, cat", "cifar10") == (9, 3)
    for spec, match in [("3", "two classes"), ("3,3", "repeated"), ("3,10", "out of range"), ("cat,dog", "unknown class"),
                        ("", "is empty"), ("3,,8", "empty entry")]:
        with pytest.raises(MalleabilityError, match=match):
            parse_classes(spec, "mnist")


def test_unit_rows_numpy_and_torch():
    x = np.array([[3.0, 4.0], [0.0, 2.0]])
    assert np.allclose(unit_rows(x), [[0.6, 0.8], [0.0, 1.0]])
    with pytest.raises(MalleabilityError, match="zero row"):
        unit_rows(np.array([[1.0, 1.0], [0.0, 0.0]]))
    t = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    u = unit_rows(t)
    u.sum().backward()
    assert torch.allclose(u[0], torch.tensor([0.6, 0.8], dtype=torch.float64))
    assert torch.all(torch.isfinite(t.grad))
