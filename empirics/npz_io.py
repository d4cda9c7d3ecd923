""".npz data sets read safely: only the keys used, sizes checked from the headers before anything is decompressed.

A member whose declared size exceeds :data:`MAX_ARRAY_BYTES` (or the memory available now) is
refused unread; object arrays are refused from their header, never unpickled.
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np

from malleability.errors import MalleabilityError, require

NPZ_KEYS = ("x", "y", "x_test", "y_test")
MAX_ARRAY_BYTES = 8 * 2**30  # an .npz member that would need more (as float64) is refused unread
MAX_CLASSES = 10_000  # labels are class indices; a label of 10**9 would mean a 10**9-way output


def _real_array(x, what: str) -> np.ndarray:
    """``x`` as a numpy array of real numbers (bool, int, uint, float), else a one-line refusal."""
    try:
        arr = np.asarray(x)
    except Exception:  # ragged lists and other shapes numpy cannot hold
        raise MalleabilityError(f"{what} is not a rectangular array of numbers") from None
    require(arr.dtype.kind in "biuf", f"{what} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _member_limit() -> int:
    """Bytes one array may take: MAX_ARRAY_BYTES, or the memory available now if that is less."""
    try:
        with open("/proc/meminfo") as fh:
            avail = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return MAX_ARRAY_BYTES
    return min(MAX_ARRAY_BYTES, avail)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, key: str) -> np.ndarray:
    """One ``.npy`` member, its header checked before the data are decompressed."""
    where, limit = f"{path}: '{key}'", _member_limit()
    require(info.file_size <= limit + 65536,
            f"{where} declares {info.file_size / 2**30:.3g} GiB uncompressed, over the {limit / 2**30:.3g} GiB limit")
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        require(version in ((1, 0), (2, 0)), f"{where} uses .npy format {version}, not 1.0 or 2.0")
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(fh)
        offset = fh.tell()
    require(not dtype.hasobject, f"{where} holds Python objects (pickled data), which are never loaded")
    count = int(np.prod(shape, dtype=object))
    need = count * max(dtype.itemsize, 8)  # the pixels become float64
    require(need <= limit, f"{where} declares shape {shape} of {dtype}: {need / 2**30:.3g} GiB as float64, "
            f"over the {limit / 2**30:.3g} GiB limit")
    require(info.file_size >= offset + count * dtype.itemsize,
            f"{where} declares shape {shape} but holds only {info.file_size - offset} data bytes (truncated)")
    with zf.open(info) as fh:
        arr = np.lib.format.read_array(fh, allow_pickle=False)
    arr.setflags(write=False)
    return arr


def _npz_members(zf: zipfile.ZipFile) -> dict:
    """{key: ZipInfo} for the keys used; other members are never decompressed."""
    members = {i.filename: i for i in zf.infolist()}
    return {k: info for k in NPZ_KEYS if (info := members.get(f"{k}.npy") or members.get(k)) is not None}


@functools.lru_cache(maxsize=4)
def _read_npz_cached(path: str, stamp: tuple) -> dict:
    """``stamp`` (the CRC-32 and size of each used member, the file's mtime and size) keys the
    cache, so a file rewritten in place is read again however close in time the writes were."""
    try:
        with zipfile.ZipFile(path) as zf:
            return {k: _read_member(zf, info, path, k) for k, info in _npz_members(zf).items()}
    except MalleabilityError:
        raise
    except Exception:  # bad CRC, bad zlib stream, bad header, short data: the file is damaged
        raise MalleabilityError(f"cannot read {path} as .npz: the file is corrupt or truncated") from None


def _read_npz(path: str) -> dict:
    """The arrays ``x``, ``y`` and, if present, ``x_test``, ``y_test`` (read-only)."""
    p = Path(path)
    require(p.exists(), f"data file not found: {path}")
    require(p.is_file(), f"expected an .npz file, got a directory: {path}")
    try:
        st = p.stat()
        with zipfile.ZipFile(p) as zf:
            stamp = tuple((k, i.CRC, i.file_size) for k, i in _npz_members(zf).items())
        content = _read_npz_cached(str(p.resolve()), stamp + (st.st_mtime_ns, st.st_size))
    except zipfile.BadZipFile:
        raise MalleabilityError(f"{path} is not an .npz file (not a zip archive, or truncated)") from None
    except OSError as exc:
        raise MalleabilityError(f"cannot read {path}: {exc.strerror or exc}") from None
    for key in ("x", "y"):
        require(key in content, f"{path} has no '{key}' array (needs x (N, ...) and y (N,))")
    require(("x_test" in content) == ("y_test" in content), f"{path}: x_test and y_test must come together")
    return content


def _npz_pixels(x: np.ndarray, what: str, allow_empty: bool = False) -> np.ndarray:
    x = _real_array(x, what)
    require(x.ndim >= 2, f"{what} must be (N, ...) with N samples, got shape {x.shape}")
    require(allow_empty or x.shape[0] >= 1, f"{what} is empty: it has no rows")
    d = int(np.prod(x.shape[1:]))
    require(d >= 1, f"{what} has no features: shape {x.shape}")
    flat = x.reshape(x.shape[0], d)
    if flat.dtype == np.uint8:
        return flat.astype(np.float64) / 255.0
    with np.errstate(over="ignore"):  # float128 beyond float64's range becomes inf, refused next
        flat = flat.astype(np.float64)
    require(bool(np.all(np.isfinite(flat))), f"{what} has NaN or inf entries")
    return flat


def _npz_labels(y: np.ndarray, n_rows: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    require(y.dtype.kind in "iu", f"{what} must hold integer labels, got {y.dtype}")
    y = y.reshape(-1)
    require(y.shape[0] == n_rows, f"{what} has {y.shape[0]} labels for {n_rows} rows")
    require(bool(np.all(y >= 0)), f"{what} has negative labels")
    require(y.size == 0 or int(y.max()) < MAX_CLASSES,
            f"{what} has label {int(y.max()) if y.size else 0}: labels are class indices below {MAX_CLASSES}")
    return y.astype(np.int64)


# --------------------------------------------------------------------------------------------
# subsets
