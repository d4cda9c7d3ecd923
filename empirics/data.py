"""Data sets as the paper's models see them: flattened images, seeded subsets, unit-norm rows.

Sources (``DataConfig.dataset``):

* ``mnist``, ``fashion-mnist``: torchvision with ``download=False`` from the data root.
* ``cifar10``: torchvision's CIFAR10 when ``cifar-10-batches-py`` is under the root; else the
  offline subset ``cifar10-subset/cifar10_train_first4000.npz`` (x uint8 (N,32,32,3) HWC,
  y uint8). With only the subset, train *and* test come from it (a seeded disjoint split)
  and ``Dataset.source`` / ``Dataset.notes`` say so.
* a path to an ``.npz``: ``x`` (N, ...) uint8 (scaled by 1/255) or float, ``y`` (N,) integer
  labels, optional ``x_test`` / ``y_test``. The training set is the first ``n`` rows (of the
  selected classes); without ``x_test`` the test set is the next ``n_test`` rows. Fewer rows
  than ``n`` (or ``n_test``) is an error, as for the other sources. No randomness: ``seed`` is
  unused, so every seed sees the same rows.

Data root: ``DataConfig.data_root``, else ``$MALLEABILITY_DATA``, else the user cache folder
``$XDG_CACHE_HOME/malleability`` (``~/.cache/malleability``). torchvision may download only
into that user cache, only when the caller allows it, and only after a 3-second
connectivity probe succeeds, so that a missing data set fails fast with one line instead of
hanging. An explicit root or ``$MALLEABILITY_DATA`` never triggers a download (tests use those).

Seeded subsets (torchvision sets): ``numpy.random.default_rng(seed)`` permutes the indices of
the selected classes of the train split and keeps the first ``n``; an independent stream
(``default_rng([seed, 1])``) does the same for the test split. Labels are remapped to
``0..len(classes)-1`` in the order given.

Refused, each with one line: an empty or non-numeric ``x`` (complex, datetime, object, strings),
NaN/inf entries, fewer than two classes among the training rows, a requested class with no
rows, test labels that no training row has (``.npz``), pickled members, and ``.npz`` members
whose declared size exceeds :data:`MAX_ARRAY_BYTES` or the memory available (checked from the
``.npy`` header before anything is decompressed; only ``x``, ``y``, ``x_test``, ``y_test`` are read).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from malleability.errors import MalleabilityError, require
from malleability.empirics.npz_io import _npz_labels, _npz_pixels, _read_npz, _real_array
from malleability.empirics.torchvision_io import _torchvision_split
from malleability.validation import zero_rows

DATASET_NAMES = ("mnist", "fashion-mnist", "cifar10")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))
_CLASS_NAMES = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}
CIFAR10_SUBSET = Path("cifar10-subset") / "cifar10_train_first4000.npz"


@dataclass(frozen=True)
class DataConfig:
    """Which data, how much, which classes, which seed; JSON-serialisable with ``dataclasses.asdict``."""

    dataset: str = field(metadata={"help": "'mnist' | 'fashion-mnist' | 'cifar10' | a path to an .npz"})
    n: int = field(default=1000, metadata={"help": "training samples"})
    n_test: int = field(default=500, metadata={"help": "test samples"})
    classes: tuple[int, ...] | None = field(
        default=None, metadata={"help": "class indices kept, remapped to 0..k-1 in this order; None = all"}
    )
    seed: int = field(default=0, metadata={"help": "seeds the subset draw"})
    data_root: str | None = field(
        default=None, metadata={"help": "None -> $MALLEABILITY_DATA -> user cache dir (downloads only there)"}
    )

    def __post_init__(self):
        if isinstance(self.classes, list):  # JSON round trips give lists
            object.__setattr__(self, "classes", tuple(self.classes))


@dataclass(frozen=True, eq=False)
class Dataset:
    """Flattened pixels in [0, 1] (before row normalisation) and labels, train and test."""

    name: str
    pixels_train: np.ndarray
    y_train: np.ndarray
    pixels_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    config: DataConfig
    source: str = ""  # where the rows came from (torchvision root, subset .npz, ...)
    notes: str = ""  # anything a reader of the numbers must know (e.g. test split drawn from train data)

    @property
    def x_train(self) -> np.ndarray:
        """Unit-ℓ2 rows of the training pixels, as the paper feeds them to the models."""
        return unit_rows(self.pixels_train)

    @property
    def x_test(self) -> np.ndarray:
        return unit_rows(self.pixels_test)

    @property
    def d(self) -> int:
        return int(self.pixels_train.shape[1])

    @property
    def fingerprint(self) -> str:
        """32 hex digits of sha256 over the exact rows used: dtype, shape and bytes of the train and
        test pixels and labels, and ``num_classes``. The subset drawn is implied by the rows, so a
        changed pixel, label, seed or data root changes it. Recomputed on each access (arrays
        are mutable); costs one pass over the bytes, about 0.03 s for 1500 x 3072 float64."""
        h = hashlib.sha256(b"malleability-data-v1")
        for a, kind in ((self.pixels_train, "<f8"), (self.y_train, "<i8"), (self.pixels_test, "<f8"),
                        (self.y_test, "<i8")):
            a = np.ascontiguousarray(a, dtype=kind)  # fixed byte order: the same digest on every machine
            h.update(f"|{kind}{a.shape}|".encode())
            h.update(a.tobytes() if a.size == 0 else memoryview(a).cast("B"))
        h.update(f"|k={int(self.num_classes)}".encode())
        return h.hexdigest()[:32]

    def describe(self) -> dict:
        """JSON-ready summary (no arrays)."""
        return {
            "name": self.name,
            "n_train": int(self.pixels_train.shape[0]),
            "n_test": int(self.pixels_test.shape[0]),
            "d": self.d,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "source": self.source,
            "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------
# row normalisation


def unit_rows(x):
    """Scale each row to unit ℓ2 norm, for any finite magnitude (1e300 and 1e-300 alike).

    Each row is first divided by the power of two nearest its max |entry|, which is exact, so the
    squares can neither overflow nor underflow and rows of ordinary size give the same bits as
    ``x / norm(x)``. numpy in -> float64 numpy out, raising :class:`MalleabilityError` on a zero
    row (it has no direction) or a non-numeric input. torch in -> torch out, differentiable (the
    power of two is a constant: the map is scale-invariant, so the gradient is exact); the norm
    is clamped at 1e-12 so that a gradient step through a zero row cannot produce NaN.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        m = x.detach().abs().amax(dim=-1, keepdim=True)
        m = torch.where((m > 0) & torch.isfinite(m), m, torch.ones_like(m))
        top = int(np.log2(torch.finfo(x.dtype).max)) - 1  # 2**-e must stay finite in x's dtype
        y = x * torch.exp2(-torch.frexp(m).exponent.clamp(min=-top).to(x.dtype))
        return y / y.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    arr = _real_array(x, "data")
    require(arr.ndim == 2, f"expected a 2-D array of rows, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    require(bool(np.all(np.isfinite(arr))), "data has NaN or inf entries")
    zr = zero_rows(arr)
    if zr.size:
        raise MalleabilityError(
            f"{zr.size} zero row(s) (first at index {int(zr[0])}): a zero row has no unit-norm direction"
        )
    if arr.size == 0:
        return arr
    scaled = np.ldexp(arr, -np.frexp(np.abs(arr).max(axis=1, keepdims=True))[1])
    return scaled / np.linalg.norm(scaled, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# options


def parse_classes(spec, dataset: str) -> tuple[int, ...] | None:
    """``'3,8'`` -> (3, 8); CIFAR-10 also accepts names (``'automobile,airplane'`` -> (1, 0)).

    None / 'all' -> None (all classes); an empty string is an error, as a blank list is elsewhere. Needs at least two distinct classes.
    """
    if spec is None:
        return None
    if isinstance(spec, (tuple, list)):
        parts = [str(p) for p in spec]
    else:
        text = str(spec).strip()
        require(text, "--classes is empty: give a comma list such as 3,8, or all")
        if text.lower() == "all":
            return None
        parts = [p.strip() for p in text.split(",")]
    require(all(parts), f"bad --classes list {spec!r}: empty entry")
    names = _CLASS_NAMES.get(dataset, ())
    lowered = [n.lower() for n in names]
    out = []
    for p in parts:
        if p.lstrip("-").isdigit():
            out.append(int(p))
        elif p.lower() in lowered:
            out.append(lowered.index(p.lower()))
        else:
            hint = f"; names: {','.join(names)}" if dataset == "cifar10" else ""
            raise MalleabilityError(f"unknown class {p!r} for dataset {dataset}{hint}")
    require(len(out) >= 2, f"--classes needs at least two classes, got {spec!r}")
    require(len(set(out)) == len(out), f"--classes has a repeated class: {spec!r}")
    if names:
        bad = [c for c in out if not 0 <= c < len(names)]
        if bad:
            raise MalleabilityError(f"class index {bad[0]} out of range 0..{len(names) - 1} for {dataset}")
    else:
        require(all(c >= 0 for c in out), f"class indices must be >= 0: {spec!r}")
    return tuple(out)


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "malleability"


def resolve_data_root(data_root: str | None) -> tuple[Path, bool]:
    """(root, is_user_cache). Only the user cache may receive downloads."""
    if data_root is not None:
        # an empty --data-root is a mistake (an unset variable in a script), not a request for the default
        require(str(data_root).strip(), "--data-root is empty: give a folder, or leave it out for $MALLEABILITY_DATA "
                                        "or the user cache")
        root = Path(data_root).expanduser()
        require(not root.is_file(), f"--data-root {root} is a file, not a folder of data sets")
        return root, False
    env = os.environ.get("MALLEABILITY_DATA")
    if env:
        root = Path(env).expanduser()
        require(not root.is_file(), f"MALLEABILITY_DATA={root} is a file, not a folder of data sets")
        return root, False
    return user_cache_dir(), True


def _class_mask(y: np.ndarray, classes) -> np.ndarray:
    return np.ones(y.shape[0], bool) if classes is None else np.isin(y, np.asarray(classes))


def _remap(y: np.ndarray, classes) -> np.ndarray:
    if classes is None:
        return y.astype(np.int64)
    lut = {c: i for i, c in enumerate(classes)}
    return np.array([lut[int(v)] for v in y], dtype=np.int64)


def _draw(y: np.ndarray, classes, count: int, rng: np.random.Generator, what: str, dataset: str) -> np.ndarray:
    pool = np.flatnonzero(_class_mask(y, classes))
    require(
        count <= pool.size,
        f"{what}={count} exceeds the {pool.size} {dataset} samples available"
        + ("" if classes is None else f" in classes {list(classes)}"),
    )
    return np.sort(rng.permutation(pool)[:count])


def _require_class_rows(y: np.ndarray, classes, where: str) -> None:
    """Every requested class must have a row, else the draw silently loses it."""
    for c in classes or ():
        require(bool(np.any(y == c)), f"class {c} has no rows in {where}")


def _validate(cfg: DataConfig) -> None:
    require(isinstance(cfg.dataset, str) and cfg.dataset.strip() != "", "dataset name is empty")
    for name in ("n", "n_test", "seed"):
        v = getattr(cfg, name)
        require(isinstance(v, (int, np.integer)) and not isinstance(v, bool), f"{name} must be an integer, got {v!r}")
    require(int(cfg.n) >= 1, f"n must be >= 1, got {cfg.n}")
    require(int(cfg.n_test) >= 0, f"n_test must be >= 0, got {cfg.n_test}")
    require(int(cfg.seed) >= 0, f"seed must be >= 0, got {cfg.seed}")
    if cfg.classes is not None:
        c = cfg.classes
        require(all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in c),
                f"classes must be class indices >= 0, got {list(c)}")
        require(len(c) >= 2 and len(set(c)) == len(c), f"classes needs at least two distinct classes, got {list(c)}")
    if cfg.dataset not in DATASET_NAMES and not cfg.dataset.endswith(".npz"):
        raise MalleabilityError(
            f"unknown dataset {cfg.dataset!r}: choose one of {', '.join(DATASET_NAMES)} or a path to an .npz"
        )


def _check_labels(ds: Dataset, classes, user_npz: bool) -> None:
    """Labels that make NTK distances and flip rates meaningful: two classes or more in training,
    every requested class trained on and, for an .npz (whose class count comes from its labels),
    no test label that no training row has."""
    seen = np.unique(ds.y_train)
    require(seen.size >= 2, f"{ds.name}: the training rows hold one class only ({ds.class_names[int(seen[0])]}); "
            "NTK distances and flip rates need at least two classes")
    missing = [c for i, c in enumerate(classes or ()) if i not in seen]
    require(not missing, f"{ds.name}: class {missing[0] if missing else ''} has no rows among the "
            f"{ds.y_train.size} training rows; raise n")
    stray = np.setdiff1d(ds.y_test, seen)
    require(not (user_npz and stray.size), f"{ds.name}: test label "
            f"{ds.class_names[int(stray[0])] if stray.size else ''} appears in no training row")


def load_dataset(cfg: DataConfig, *, allow_download: bool | None = None) -> Dataset:
    """Load, subset, remap and check a data set; any problem is a one-line MalleabilityError.

    ``allow_download``: None -> allowed only when the root is the user cache folder (never
    with an explicit root or ``$MALLEABILITY_DATA``); False -> never.
    """
    _validate(cfg)
    classes = tuple(cfg.classes) if cfg.classes is not None else None
    if cfg.dataset.endswith(".npz"):
        ds = _load_npz_dataset(cfg, classes)
    else:
        root, is_cache = resolve_data_root(cfg.data_root)
        may_download = is_cache if allow_download is None else (allow_download and is_cache)
        if cfg.dataset == "cifar10" and not (root / "cifar-10-batches-py").is_dir() and (root / CIFAR10_SUBSET).is_file():
            ds = _load_cifar_subset(cfg, classes, root)
        else:
            ds = _load_torchvision_dataset(cfg, classes, root, may_download)
    _check_labels(ds, classes, cfg.dataset.endswith(".npz"))
    for what, px in (("training", ds.pixels_train), ("test", ds.pixels_test)):
        zr = zero_rows(px) if px.shape[0] else np.array([], int)
        if zr.size:
            raise MalleabilityError(
                f"{ds.name}: {zr.size} zero row(s) in the {what} set (first at row {int(zr[0])}); "
                "a zero row has no unit-norm direction"
            )
    return ds


def data_fingerprint(cfg: DataConfig, *, allow_download: bool | None = None) -> str:
    """:attr:`Dataset.fingerprint` of the rows ``cfg`` selects: a cache key that changes whenever
    the data behind the same configuration do (another root, a rewritten file)."""
    return load_dataset(cfg, allow_download=allow_download).fingerprint


def _names_for(dataset: str, classes, num_classes: int) -> tuple[str, ...]:
    names = _CLASS_NAMES.get(dataset) or tuple(str(i) for i in range(num_classes))
    if classes is None:
        return tuple(names[:num_classes]) if len(names) >= num_classes else tuple(str(i) for i in range(num_classes))
    return tuple(names[c] if c < len(names) else str(c) for c in classes)


def _load_torchvision_dataset(cfg: DataConfig, classes, root: Path, may_download: bool) -> Dataset:
    if not may_download and not root.is_dir():
        raise MalleabilityError(f"data root {root} does not exist (set --data-root or MALLEABILITY_DATA)")
    px_tr, y_tr = _torchvision_split(cfg.dataset, str(root), True, may_download)
    px_te, y_te = _torchvision_split(cfg.dataset, str(root), False, may_download)
    _require_class_rows(y_tr, classes, f"the {cfg.dataset} training split under {root}")
    i_tr = _draw(y_tr, classes, int(cfg.n), np.random.default_rng(int(cfg.seed)), "n", cfg.dataset)
    i_te = _draw(y_te, classes, int(cfg.n_test), np.random.default_rng([int(cfg.seed), 1]), "n_test", cfg.dataset)
    k = len(classes) if classes is not None else 10
    return Dataset(
        name=cfg.dataset,
        pixels_train=px_tr[i_tr].astype(np.float64) / 255.0,
        y_train=_remap(y_tr[i_tr], classes),
        pixels_test=px_te[i_te].astype(np.float64) / 255.0,
        y_test=_remap(y_te[i_te], classes),
        num_classes=k,
        class_names=_names_for(cfg.dataset, classes, k),
        config=cfg,
        source=f"torchvision {cfg.dataset} under {root}",
        notes="seeded subsets of the official train and test splits",
    )


def _load_cifar_subset(cfg: DataConfig, classes, root: Path) -> Dataset:
    path = root / CIFAR10_SUBSET
    content = _read_npz(str(path))
    x = content["x"]
    require(x.ndim == 4 and x.shape[1:] == (32, 32, 3), f"{path}: expected x of shape (N,32,32,3), got {x.shape}")
    # torchvision's CIFAR10 keeps HWC uint8 too, so the flattening order is the same in both sources.
    px = _npz_pixels(x, "x")
    y = _npz_labels(content["y"], x.shape[0], "y")
    bad = y[(y < 0) | (y > 9)]
    require(not bad.size, f"{path}: label {int(bad[0]) if bad.size else 0} is not a CIFAR-10 class (0..9): the file is damaged")
    _require_class_rows(y, classes, str(path))
    pool = np.flatnonzero(_class_mask(y, classes))
    need = int(cfg.n) + int(cfg.n_test)
    require(
        need <= pool.size,
        f"n + n_test = {need} exceeds the {pool.size} samples of the offline CIFAR-10 subset"
        + ("" if classes is None else f" in classes {list(classes)}"),
    )
    perm = np.random.default_rng(int(cfg.seed)).permutation(pool)
    i_tr, i_te = np.sort(perm[: int(cfg.n)]), np.sort(perm[int(cfg.n) : need])
    k = len(classes) if classes is not None else 10
    return Dataset(
        name="cifar10",
        pixels_train=px[i_tr],
        y_train=_remap(y[i_tr], classes),
        pixels_test=px[i_te],
        y_test=_remap(y[i_te], classes),
        num_classes=k,
        class_names=_names_for("cifar10", classes, k),
        config=cfg,
        source=f"offline subset {path}",
        notes="full CIFAR-10 not available: train and test are a seeded disjoint split of the first 4000 "
        "CIFAR-10 training images",
    )


def _load_npz_dataset(cfg: DataConfig, classes) -> Dataset:
    content = _read_npz(cfg.dataset)
    x = _npz_pixels(content["x"], "x")
    y = _npz_labels(content["y"], x.shape[0], "y")
    _require_class_rows(y, classes, f"{cfg.dataset} (y)")
    keep = np.flatnonzero(_class_mask(y, classes))
    n, n_test = int(cfg.n), int(cfg.n_test)
    # fewer rows than asked is an error, as for the built-in data sets: every result is labelled
    # with n and n_test, so they must be the counts actually used
    in_classes = "" if classes is None else f" in classes {list(classes)}"
    if "x_test" in content:
        xt = _npz_pixels(content["x_test"], "x_test", allow_empty=True)
        require(xt.shape[1] == x.shape[1], f"x_test has {xt.shape[1]} features, x has {x.shape[1]}")
        yt = _npz_labels(content["y_test"], xt.shape[0], "y_test")
        keep_t = np.flatnonzero(_class_mask(yt, classes))
        require(n <= keep.size, f"{cfg.dataset}: n={n} exceeds the {keep.size} rows of x{in_classes}")
        require(n_test <= keep_t.size, f"{cfg.dataset}: n_test={n_test} exceeds the {keep_t.size} rows of x_test{in_classes}")
        i_tr = keep[:n]
        px_te, y_te = xt[keep_t[:n_test]], yt[keep_t[:n_test]]
        notes = "first n rows of x, first n_test rows of x_test"
    else:
        require(n + n_test <= keep.size,
                f"{cfg.dataset}: n + n_test = {n + n_test} exceeds the {keep.size} rows of x{in_classes} "
                "(without x_test the test rows follow the training rows)")
        i_tr = keep[:n]
        i_te = keep[n : n + n_test]
        px_te, y_te = x[i_te], y[i_te]
        notes = "no x_test: first n rows train, the next n_test remaining rows test"
    require(i_tr.size >= 1, f"{cfg.dataset}: no training rows in the selected classes")
    y_tr = y[i_tr]
    if classes is not None:
        k = len(classes)
    else:
        k = int(max(y_tr.max(), y_te.max() if y_te.size else 0)) + 1
    return Dataset(
        name=os.path.basename(cfg.dataset),
        pixels_train=x[i_tr],
        y_train=_remap(y_tr, classes),
        pixels_test=px_te,
        y_test=_remap(y_te, classes),
        num_classes=k,
        class_names=_names_for("", classes, k) if classes is None else tuple(str(c) for c in classes),
        config=cfg,
        source=f"npz {cfg.dataset}",
        notes=notes,
    )
