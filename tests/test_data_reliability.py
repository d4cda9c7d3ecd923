"""Data loading never gives a silent wrong result: every bad .npz, data root or magnitude is
either handled exactly (checked against mpmath / exact arithmetic) or refused in one line; the
data fingerprint follows the rows actually used. No download, no unpickling, no huge allocation."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import socket
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch

from malleability.empirics import data as data_mod
from malleability.empirics import npz_io, torchvision_io
from malleability.empirics.data import DataConfig, data_fingerprint, load_dataset, unit_rows
from malleability.errors import MalleabilityError


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("network/download attempted in a test")

    monkeypatch.setattr(socket, "create_connection", boom)
    monkeypatch.setattr(torchvision_io, "_network_reachable", boom)


def one_line_error(fn, *args, match: str | None = None, **kwargs) -> str:
    """Call ``fn``: it must raise MalleabilityError with one clean line (no exception class name)."""
    with pytest.raises(MalleabilityError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    assert not re.search(r"\b\w*(Error|Exception|Warning)\b:", msg), msg
    assert "Traceback" not in msg and "weights_only" not in msg, msg
    if match is not None:  # paths left out: tmp_path holds the test's name, which could match by itself
        assert re.search(match, re.sub(r"/\S+", "<path>", msg)), msg
    return msg


def npz(tmp_path: Path, name: str, **arrays) -> str:
    path = tmp_path / name
    with open(path, "wb") as fh:  # np.savez would append .npz to a name without it
        np.savez(fh, **arrays)
    return str(path)


def load_npz(path, **kw):
    return load_dataset(DataConfig(str(path), **{"n": 30, "n_test": 5, **kw}))


RNG = np.random.default_rng(0)
X = RNG.random((40, 6)) + 0.05
Y2 = np.arange(40) % 2


# ---------------------------------------------------------------------------- rows and labels


def test_empty_x_and_featureless_x(tmp_path):
    one_line_error(load_npz, npz(tmp_path, "e.npz", x=np.zeros((0, 6)), y=np.zeros(0, int)), match="empty")
    one_line_error(load_npz, npz(tmp_path, "e3.npz", x=np.zeros((0, 3, 4)), y=np.zeros(0, int)), match="empty")
    one_line_error(load_npz, npz(tmp_path, "f.npz", x=np.zeros((5, 0)), y=np.arange(5) % 2), match="no features")
    # an empty x_test is a legitimate "no test set" when no test rows are asked for
    empty_test = npz(tmp_path, "t.npz", x=X, y=Y2, x_test=np.zeros((0, 6)), y_test=np.zeros(0, int))
    ds = load_npz(empty_test, n_test=0)
    assert ds.pixels_test.shape == (0, 6) and ds.pixels_train.shape == (30, 6)
    one_line_error(load_npz, empty_test, match="n_test=5 exceeds the 0 rows of x_test")


def test_one_class_is_refused(tmp_path):
    one_line_error(load_npz, npz(tmp_path, "one.npz", x=X, y=np.zeros(40, int)), match="at least two classes")
    # two classes in the file, but the first n rows (the training rows) hold one of them only
    y = np.r_[np.zeros(35, int), np.ones(5, int)]
    one_line_error(load_npz, npz(tmp_path, "late.npz", x=X, y=y), match="one class only")
    assert load_npz(npz(tmp_path, "ok.npz", x=X, y=y), n=40, n_test=0).num_classes == 2


def test_test_label_outside_training_labels(tmp_path):
    path = npz(tmp_path, "lab.npz", x=X, y=Y2, x_test=X[:5], y_test=np.array([0, 1, 5, 0, 1]))
    one_line_error(load_npz, path, match=r"test label 5 appears in no training row")
    # without x_test: the test rows come after the training rows, same rule
    y = np.r_[Y2[:30], np.full(10, 2)]
    one_line_error(load_npz, npz(tmp_path, "tail.npz", x=X, y=y), match="test label 2")
    good = load_npz(npz(tmp_path, "good.npz", x=X, y=Y2, x_test=X[:5], y_test=np.array([0, 1, 1, 0, 1])))
    assert good.num_classes == 2 and list(good.y_test) == [0, 1, 1, 0, 1]


def test_a_requested_class_with_no_rows_is_named(tmp_path, data_root):
    path = npz(tmp_path, "c.npz", x=X, y=np.arange(40) % 3)
    one_line_error(load_npz, path, n=20, classes=(0, 7), match=r"class 7 has no rows")
    # the class exists in the file but not among the training rows used
    y = np.r_[np.arange(30) % 2, np.full(10, 2)]
    one_line_error(load_npz, npz(tmp_path, "d.npz", x=X, y=y), n=20, classes=(0, 1, 2),
                   match=r"class 2 has no rows among the 20 training rows")
    # torchvision sets too: a DataConfig built by hand can name a class the data set lacks
    one_line_error(load_dataset, DataConfig("mnist", n=20, classes=(0, 11), data_root=str(data_root)),
                   match="class 11 has no rows")
    for classes in [(3,), (3, 3), (3, -1), (3, "a")]:
        one_line_error(load_dataset, DataConfig("mnist", classes=classes, data_root=str(data_root)), match="classes")


# ---------------------------------------------------------------------------- magnitudes


def _exact_unit(row) -> list:
    """mpmath at 300 digits: exact enough that the rounded result is the correctly rounded one."""
    with mpmath.workdps(300):
        v = [mpmath.mpf(float(a)) for a in row]
        norm = mpmath.sqrt(mpmath.fsum(a * a for a in v))
        return [a / norm for a in v]


def _assert_unit_rows_match_oracle(x):
    u = unit_rows(x)
    eps = np.finfo(float).eps
    for row, got in zip(x, u):
        exact = _exact_unit(row)
        for g, e in zip(got, exact):
            assert abs(mpmath.mpf(float(g)) - e) <= 4 * eps, (row, got)
        # the direction: every sign kept, except entries whose exact value is below the smallest float
        tiny = [abs(e) < mpmath.mpf(2) ** -1075 for e in exact]
        assert all(t or np.sign(g) == np.sign(r) for g, r, t in zip(got, row, tiny)), (row, got)
        with mpmath.workdps(50):
            assert abs(mpmath.fsum(mpmath.mpf(float(g)) ** 2 for g in got) - 1) <= 8 * eps


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1.0, 1e-15, 2.0 ** -1040])
def test_unit_rows_against_mpmath_at_every_magnitude(scale):
    x = np.random.default_rng(1).standard_normal((6, 5)) * scale
    assert np.all(np.isfinite(x)) and np.all(x != 0)
    _assert_unit_rows_match_oracle(x)


def test_unit_rows_mixed_magnitudes_and_norms_from_1_to_1e_minus_15():
    x = np.array([
        [1e300, 1e300, -1e300],
        [1e300, 1e-300, 3.0],
        [1e-300, -3e-300, 2e-301],
        [5e-324, 0.0, -5e-324],  # subnormal
        [1e308, 1e308, 1e308],  # the squares overflow by ~600 orders of magnitude
        *[np.array([1.0, -2.0, 2.0]) * 10.0 ** -k for k in range(16)],  # norms 3 .. 3e-15
    ])
    _assert_unit_rows_match_oracle(x)
    # a power-of-two scaling changes nothing, to the bit (exact arithmetic: 3-4-5 triangle)
    base = unit_rows(np.array([[3.0, 4.0]]))
    assert base.tolist() == [[float(3 / 5), float(4 / 5)]]
    for k in (-1070, -1000, -500, 0, 500, 1000, 1020):
        assert np.array_equal(unit_rows(np.ldexp(np.array([[3.0, 4.0]]), k)), base)
    # ordinary rows: the same bits as the textbook formula
    r = np.random.default_rng(2).random((50, 9))
    assert np.array_equal(unit_rows(r), r / np.linalg.norm(r, axis=1, keepdims=True))


def test_unit_rows_torch_at_extreme_magnitudes_is_exact_and_differentiable():
    for scale in (2.0 ** 1000, 2.0 ** -1000, 1.0, 1e300, 1e-300):
        t = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64) * scale
        t.requires_grad_(True)
        u = unit_rows(t)
        want = torch.tensor([[0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
        if np.log2(scale) == round(np.log2(scale)):  # a power of two: 3s, 4s exact, so the bits of 3/5, 4/5
            assert torch.equal(u.detach(), want)
        assert torch.allclose(u.detach(), want, rtol=1e-15, atol=0)
        (u[:, 0] * torch.tensor([1.0, 2.0], dtype=torch.float64)).sum().backward()
        # d(x0/|x|)/dx at (3, 4)s = (16, -12) / (125 s), exactly
        assert torch.allclose(t.grad[0] * scale, torch.tensor([16 / 125, -12 / 125], dtype=torch.float64),
                              rtol=1e-14, atol=0)
    r = torch.rand(20, 7, dtype=torch.float32)
    assert torch.equal(unit_rows(r), r / r.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_extreme_npz_entries_give_the_exact_unit_rows(tmp_path, scale):
    ds = load_npz(npz(tmp_path, "big.npz", x=X * scale, y=Y2))
    assert np.all(np.isfinite(ds.x_train)) and not np.any(np.all(ds.x_train == 0, axis=1))
    ref = load_npz(npz(tmp_path, "ref.npz", x=X, y=Y2)).x_train
    assert np.allclose(ds.x_train, ref, rtol=4e-16 * 8, atol=0)
    assert np.allclose(np.linalg.norm(ds.x_test, axis=1), 1.0, atol=1e-15)


# ---------------------------------------------------------------------------- dtypes and values


@pytest.mark.parametrize("bad, match", [
    (np.full((40, 6), np.nan), "NaN or inf"),
    (np.where(np.eye(40, 6) > 0, np.inf, X), "NaN or inf"),
    (np.where(np.eye(40, 6) > 0, -np.inf, X), "NaN or inf"),
    (X.astype(np.complex128), "real numbers"),
    (np.zeros((40, 6), dtype="timedelta64[s]") + 1, "real numbers"),
    (np.zeros((40, 6), dtype="datetime64[s]") + 1, "real numbers"),
    (np.full((40, 6), "0.5"), "real numbers"),
    (np.full((40, 6), b"0.5"), "real numbers"),
    (np.ones((40, 6), dtype=np.longdouble) * np.longdouble(10) ** 400
     if np.finfo(np.longdouble).maxexp > 1024 else np.full((40, 6), np.inf), "NaN or inf"),
])
def test_non_finite_and_non_numeric_pixels(tmp_path, bad, match):
    one_line_error(load_npz, npz(tmp_path, "bad.npz", x=bad, y=Y2), match=match)
    one_line_error(load_npz, npz(tmp_path, "badt.npz", x=X, y=Y2, x_test=bad[:5], y_test=Y2[:5]), match=match)


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([1 + 2j]), np.array([[1.0, np.nan]]),
                                 np.array([[np.inf, 1.0]]), np.zeros((2, 2), dtype="datetime64[D]"),
                                 np.array([[1, "a"]], dtype=object), [[1.0, 2.0], [3.0]]])
def test_unit_rows_refuses_in_one_line(bad):
    one_line_error(unit_rows, bad)


@pytest.mark.parametrize("labels, match", [
    (Y2.astype(float), "integer labels"), (Y2.astype(str), "integer labels"), (Y2 - 1, "negative"),
    (Y2.astype(np.uint64) * np.uint64(2**63), "labels are class indices"), (Y2 * 10**9, "labels are class indices"),
])
def test_bad_labels(tmp_path, labels, match):
    one_line_error(load_npz, npz(tmp_path, "l.npz", x=X, y=labels), match=match)


# ---------------------------------------------------------------------------- memory


def _npy_header_only(shape, dtype="<f8") -> bytes:
    """A .npy header that declares ``shape`` followed by almost no data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 16


def _zip(path: Path, members: dict) -> str:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, blob in members.items():
            if isinstance(blob, np.ndarray):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, blob, allow_pickle=False)
                blob = buf.getvalue()
            zf.writestr(name, blob)
    return str(path)


def test_unused_members_are_never_read(tmp_path):
    big = np.zeros((2500, 1000))  # 20 MB of zeros, compressed to ~20 kB
    path = _zip(tmp_path / "extra.npz", {"x.npy": X, "y.npy": Y2, "junk.npy": big,
                                         "absurd.npy": _npy_header_only((10**6, 10**6))})
    del big
    tracemalloc.start()
    try:
        ds = load_npz(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ds.pixels_train.shape == (30, 6)
    assert peak < 4 * 2**20, peak  # far below the 20 MB the unused member would take


def test_an_absurd_declared_shape_is_refused_before_reading(tmp_path):
    path = _zip(tmp_path / "absurd.npz", {"x.npy": _npy_header_only((10**6, 10**6)), "y.npy": Y2})
    tracemalloc.start()
    try:
        one_line_error(load_npz, path, match=r"'x' declares shape \(1000000, 1000000\).*over the .* GiB limit")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak
    # a shape within the limit but more data than the member holds: truncated, not read
    path = _zip(tmp_path / "short.npz", {"x.npy": _npy_header_only((1000, 1000)), "y.npy": Y2})
    one_line_error(load_npz, path, match="truncated")


def test_a_huge_declared_uncompressed_size_is_refused_before_decompressing(tmp_path, monkeypatch):
    path = Path(_zip(tmp_path / "bomb.npz", {"x.npy": X, "y.npy": Y2}))
    blob = bytearray(path.read_bytes())
    # the central directory entry of x.npy: uncompressed size at offset 24 of the entry
    at = blob.index(b"PK\x01\x02")
    assert blob[at + 46: at + 46 + 5] == b"x.npy"
    blob[at + 24: at + 28] = struct.pack("<I", 0xF0000000)
    path.write_bytes(bytes(blob))
    assert zipfile.ZipFile(path).getinfo("x.npy").file_size == 0xF0000000
    monkeypatch.setattr(npz_io, "MAX_ARRAY_BYTES", 2**30)
    tracemalloc.start()
    try:
        one_line_error(load_npz, path, match=r"'x' declares 3.75 GiB uncompressed, over the 1 GiB limit")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak


def test_the_limit_applies_to_real_members_too(tmp_path, monkeypatch):
    path = npz(tmp_path, "mid.npz", x=np.ones((200, 100)), y=np.arange(200) % 2)  # 160 kB as float64
    path8 = npz(tmp_path, "u8.npz", x=np.ones((100, 100), np.uint8), y=np.arange(100) % 2)  # 10 kB on disk
    monkeypatch.setattr(npz_io, "MAX_ARRAY_BYTES", 64 * 1024)
    one_line_error(load_npz, path, match="limit")
    # uint8 pixels become float64: the limit counts the 8 bytes each entry will take
    one_line_error(load_npz, path8, match=r"0.*GiB as float64")
    monkeypatch.setattr(npz_io, "MAX_ARRAY_BYTES", 2**20)
    assert load_npz(path).d == 100 and load_npz(path8).d == 100


# ---------------------------------------------------------------------------- pickles


class Payload:
    """What a pickle would run on load: it creates a file."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_members_are_never_loaded(tmp_path):
    Payload.marker = tmp_path / "pwned"
    obj = np.array([Payload(), Payload()], dtype=object)
    cases = [
        npz(tmp_path, "evil_x.npz", x=obj, y=np.array([0, 1])),
        npz(tmp_path, "evil_y.npz", x=np.ones((2, 2)), y=obj),
        npz(tmp_path, "evil_t.npz", x=X, y=Y2, x_test=obj, y_test=np.array([0, 1])),
    ]
    for path in cases:
        one_line_error(load_npz, path, match="holds Python objects")
    raw = tmp_path / "evil_raw.npz"  # a bare pickle named .npz
    raw.write_bytes(pickle.dumps(Payload()))
    one_line_error(load_npz, raw, match="not an .npz")
    npy = tmp_path / "evil.npy"  # an .npy is not a data set: refused by name, never opened
    np.save(npy, obj, allow_pickle=True)
    one_line_error(load_dataset, DataConfig(str(npy)), match="unknown dataset")
    assert not Payload.marker.exists()


def _legacy_root(tmp_path: Path, folder: str) -> Path:
    """torchvision's pre-0.9 layout: processed/training.pt and test.pt, here a pickle that runs code."""
    root = tmp_path / "legacy"
    proc = root / folder / "processed"
    proc.mkdir(parents=True)
    for name in ("training.pt", "test.pt"):
        torch.save({"data": Payload(), "targets": [0, 1]}, proc / name)
    return root


@pytest.mark.parametrize("dataset, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_a_legacy_pickled_root_is_reported_unreadable(tmp_path, dataset, folder):
    Payload.marker = tmp_path / "pwned"
    root = _legacy_root(tmp_path, folder)
    msg = one_line_error(load_dataset, DataConfig(dataset, n=10, data_root=str(root)),
                         match=rf"data set {dataset} is not readable under <path> it holds a legacy pickled")
    assert f"under {root}:" in msg and f"{root / folder / 'processed'}/training.pt" in msg
    assert not Payload.marker.exists()


def test_garbage_raw_files_are_reported_unreadable(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(os.urandom(64))
    one_line_error(load_dataset, DataConfig("mnist", n=10, data_root=str(tmp_path)), match="not readable")


# ---------------------------------------------------------------------------- garbage files


def test_garbage_npz_files(tmp_path):
    rnd = tmp_path / "random.npz"
    rnd.write_bytes(os.urandom(300))
    one_line_error(load_npz, rnd, match="not an .npz")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    one_line_error(load_npz, empty, match="not an .npz")
    good = Path(npz(tmp_path, "good.npz", x=X, y=Y2))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    one_line_error(load_npz, cut, match="not an .npz")
    # a damaged member: flip bytes inside the compressed data of x
    comp = Path(tmp_path / "comp.npz")
    with open(comp, "wb") as fh:
        np.savez_compressed(fh, x=RNG.random((400, 60)), y=np.arange(400) % 2)
    blob = bytearray(comp.read_bytes())
    for i in range(200, 260):
        blob[i] ^= 0xFF
    (tmp_path / "damaged.npz").write_bytes(bytes(blob))
    one_line_error(load_npz, tmp_path / "damaged.npz", match="corrupt")
    d = tmp_path / "dir.npz"
    d.mkdir()
    one_line_error(load_npz, d, match="directory")


@pytest.mark.parametrize("arrays, match", [
    ({"x": X}, "no 'y'"),
    ({"y": Y2}, "no 'x'"),
    ({"images": X, "labels": Y2}, "no 'x'"),
    ({"x": X, "y": Y2, "x_test": X[:3]}, "together"),
    ({"x": X, "y": Y2[:39]}, "39 labels for 40 rows"),
    ({"x": X, "y": Y2, "x_test": X[:3], "y_test": Y2[:2]}, "2 labels for 3 rows"),
    ({"x": X, "y": Y2, "x_test": X[:3, :4], "y_test": Y2[:3]}, "features"),
    ({"x": X[:, 0], "y": Y2}, r"shape \(40,\)"),
    ({"x": np.float64(3.0), "y": Y2}, r"shape \(\)"),
    ({"x": np.ones((40, 2, 3), dtype=np.bool_) & False, "y": Y2}, "zero row"),
])
def test_wrong_keys_and_shapes(tmp_path, arrays, match):
    one_line_error(load_npz, npz(tmp_path, "w.npz", **arrays), match=match)


def test_a_fortran_ordered_member_reads_like_numpy(tmp_path):
    xf = np.asfortranarray(RNG.random((40, 3, 2)))
    ds = load_npz(npz(tmp_path, "f.npz", x=xf, y=Y2))
    assert np.array_equal(ds.pixels_train, np.ascontiguousarray(xf).reshape(40, 6)[:30])


# ---------------------------------------------------------------------------- fingerprint


def test_fingerprint_follows_the_rows_used(tmp_path, data_root):
    path = npz(tmp_path, "a.npz", x=X, y=Y2)
    fp = data_fingerprint(DataConfig(path, n=30, n_test=5))
    assert re.fullmatch(r"[0-9a-f]{32}", fp)
    assert fp == data_fingerprint(DataConfig(path, n=30, n_test=5)) == load_npz(path).fingerprint
    x2 = X.copy()
    x2[3, 2] = np.nextafter(x2[3, 2], 2.0)  # one pixel, one ulp
    y2 = Y2.copy()
    y2[[4, 5]] = y2[[5, 4]]
    others = {
        "pixel": data_fingerprint(DataConfig(npz(tmp_path, "b.npz", x=x2, y=Y2), n=30, n_test=5)),
        "label": data_fingerprint(DataConfig(npz(tmp_path, "c.npz", x=X, y=y2), n=30, n_test=5)),
        "n": data_fingerprint(DataConfig(path, n=29, n_test=5)),
        "classes": data_fingerprint(DataConfig(path, n=30, n_test=5, classes=(1, 0))),
    }
    assert len({fp, *others.values()}) == 1 + len(others), others
    # an unused row does not matter: the fingerprint is of the rows used
    x3 = X.copy()
    x3[39] += 1
    assert data_fingerprint(DataConfig(npz(tmp_path, "d.npz", x=x3, y=Y2), n=30, n_test=5)) == fp


def test_fingerprint_sees_a_file_rewritten_in_place(tmp_path):
    path = npz(tmp_path, "a.npz", x=X, y=Y2)
    fp = data_fingerprint(DataConfig(path, n=30, n_test=5))
    st = os.stat(path)
    x2 = X.copy()
    x2[0, 0] += 0.25
    npz(tmp_path, "a.npz", x=x2, y=Y2)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, same size: only the content differs
    assert os.stat(path).st_size == st.st_size
    assert data_fingerprint(DataConfig(path, n=30, n_test=5)) != fp


def test_fingerprint_seed_and_root(tmp_path, data_root):
    cfg = DataConfig("cifar10", n=100, n_test=50, seed=0, data_root=str(data_root))
    fp = data_fingerprint(cfg)
    assert fp == data_fingerprint(cfg)
    assert data_fingerprint(DataConfig("cifar10", n=100, n_test=50, seed=1, data_root=str(data_root))) != fp
    # another root holding other images under the same name and layout
    other = tmp_path / "root"
    (other / data_mod.CIFAR10_SUBSET).parent.mkdir(parents=True)
    src = np.load(data_root / data_mod.CIFAR10_SUBSET)
    x = src["x"].copy()
    x[:, 0, 0, 0] ^= 1
    np.savez(other / data_mod.CIFAR10_SUBSET, x=x, y=src["y"])
    assert data_fingerprint(DataConfig("cifar10", n=100, n_test=50, seed=0, data_root=str(other))) != fp
    shutil.copy(data_root / data_mod.CIFAR10_SUBSET, other / data_mod.CIFAR10_SUBSET)  # same images again
    assert data_fingerprint(DataConfig("cifar10", n=100, n_test=50, seed=0, data_root=str(other))) == fp
    m = data_fingerprint(DataConfig("mnist", n=50, n_test=10, seed=0, data_root=str(data_root)))
    assert m != data_fingerprint(DataConfig("mnist", n=50, n_test=10, seed=1, data_root=str(data_root)))
    assert m != data_fingerprint(DataConfig("fashion-mnist", n=50, n_test=10, seed=0, data_root=str(data_root)))


def test_fingerprint_is_the_same_in_another_process(tmp_path, data_root):
    path = npz(tmp_path, "a.npz", x=X.astype(np.float32), y=Y2.astype(np.uint8))
    cfgs = [DataConfig(path, n=30, n_test=5), DataConfig("mnist", n=40, n_test=10, seed=3, data_root=str(data_root))]
    here = [data_fingerprint(c) for c in cfgs]
    code = ("import json, sys; from malleability.empirics.data import DataConfig, data_fingerprint; "
            "print(json.dumps([data_fingerprint(DataConfig(**c)) for c in json.loads(sys.argv[1])]))")
    arg = json.dumps([{"dataset": c.dataset, "n": c.n, "n_test": c.n_test, "seed": c.seed, "data_root": c.data_root}
                      for c in cfgs])
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == here


def test_torchvision_splits_stay_cached_per_process(data_root):
    data_mod._torchvision_split.cache_clear()
    load_dataset(DataConfig("mnist", n=20, n_test=5, data_root=str(data_root)))
    misses = data_mod._torchvision_split.cache_info().misses
    load_dataset(DataConfig("mnist", n=30, n_test=5, seed=4, data_root=str(data_root)))
    info = data_mod._torchvision_split.cache_info()
    assert info.misses == misses == 2 and info.hits >= 2


def test_a_label_outside_the_ten_classes_is_a_damaged_file(tmp_path, data_root):
    """MNIST's idx labels and the CIFAR-10 subset hold classes 0..9; any other value is damage, refused on
    the whole split, so that no subset draw can pass it by."""
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_root / "MNIST" / "raw").iterdir():
        shutil.copy(f, raw / f.name)
    labels = raw / "train-labels-idx1-ubyte"
    blob = bytearray(labels.read_bytes())
    blob[-1] = 200  # the last training row's label: no seeded draw of 50 rows is likely to pick it
    labels.write_bytes(bytes(blob))
    one_line_error(load_dataset, DataConfig("mnist", n=50, n_test=10, data_root=str(tmp_path / "root")),
                   match="corrupt")
    sub = tmp_path / "cifar" / data_mod.CIFAR10_SUBSET
    sub.parent.mkdir(parents=True)
    src = np.load(data_root / data_mod.CIFAR10_SUBSET)
    y = src["y"].copy()
    y[-1] = 12
    np.savez(sub, x=src["x"], y=y)
    one_line_error(load_dataset, DataConfig("cifar10", n=50, n_test=10, data_root=str(tmp_path / "cifar")),
                   match="not a CIFAR-10 class")


def test_model_checks_see_an_npz_files_own_dimension(tmp_path):
    from malleability.empirics.experiments.memory import data_dimension
    from malleability.empirics.models import check_models

    path = npz(tmp_path, "d1000.npz", x=RNG.random((12, 10, 10, 10)) + 0.05, y=np.arange(12) % 2)
    assert data_dimension(path) == 1000 and data_dimension("mnist") == 784 and data_dimension("cifar10") == 3072
    check_models(["patch-attn"], {"patch-attn": {"image_shape": (10, 10, 10), "patch_size": 5}}, data_dimension(path))
    with pytest.raises(MalleabilityError, match="1000"):
        check_models(["truncated-attn"], {"truncated-attn": {"rank": 1001}}, data_dimension(path))
    check_models(["truncated-attn"], {"truncated-attn": {"rank": 800}}, data_dimension(path))  # 800 > 784: MNIST's d is not assumed
