"""Input validation shared by every layer: one-line errors, never silent wrong answers.

Messages name what is wrong with the input in plain words, never a Python exception class.
``.npy`` files are read with ``allow_pickle=False``: an object array (which could run code
when unpickled) is refused before anything in it is loaded.
"""

from __future__ import annotations

import math
import os

import numpy as np

from malleability.errors import MalleabilityError, require

_KINDS = {"b": "boolean", "i": "integer", "u": "unsigned integer", "f": "float"}

# Most seeds one run may ask for (a count): 10^4 seeds of the quick audit already plan about 10^6 cells
MAX_SEED_COUNT = 10_000


def as_finite_matrix(x, name: str = "X") -> np.ndarray:
    """Return ``x`` as a 2-D float64 array, or raise a one-line :class:`MalleabilityError`.

    Rejects: non-numeric data (objects, strings, dates, time deltas, complex numbers),
    arrays that are not 2-D, empty arrays, NaN or inf entries.
    """
    try:
        arr = np.asarray(x)
    except Exception:  # ragged lists and the like
        raise MalleabilityError(f"{name} is not a numeric array (ragged or mixed entries)") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise MalleabilityError(f"{name} must be real, got complex dtype {arr.dtype}")
    if kind in "mM":
        raise MalleabilityError(f"{name} must be numeric, got {'time deltas' if kind == 'm' else 'dates'} "
                                f"(dtype {arr.dtype})")
    if kind not in _KINDS:
        raise MalleabilityError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise MalleabilityError(f"{name} must be 2-D (rows are samples), got shape {arr.shape}")
    if arr.size == 0:
        raise MalleabilityError(f"{name} is empty (shape {arr.shape})")
    if kind == "f" and arr.dtype.itemsize > 8:
        big = np.abs(arr[np.isfinite(arr)]).max(initial=0)
        if big > np.finfo(np.float64).max:
            raise MalleabilityError(f"{name} has entries beyond the float64 range (largest |entry| {big:.3e})")
    out = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(out)):
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise MalleabilityError(f"{name} has {bad} NaN or inf entries")
    return out


def load_npy_matrix(path: str, name: str = "X") -> np.ndarray:
    """Load a ``.npy`` file holding a 2-D data matrix, with one-line errors for every failure."""
    if not os.path.exists(path):
        raise MalleabilityError(f"file not found: {path}")
    if os.path.isdir(path):
        raise MalleabilityError(f"expected a .npy file, got a directory: {path}")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise MalleabilityError(f"cannot read {path}: {exc.strerror or 'permission or I/O error'}") from None
    if magic[:4] == b"PK\x03\x04":
        raise MalleabilityError(f"{path} is an .npz archive; pass a single .npy matrix")
    if magic != b"\x93NUMPY":
        raise MalleabilityError(f"{path} is not a .npy file (it does not start with the .npy magic bytes)")
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)(fh)
    except Exception:
        raise MalleabilityError(f"{path} has a damaged .npy header") from None
    dtype = header[2]
    if dtype.hasobject:
        raise MalleabilityError(f"{path} holds Python objects (dtype {dtype}); refused: loading them could run "
                                "code. Save a numeric array")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception:
        raise MalleabilityError(f"{path} is truncated or damaged: its data do not match its .npy header") from None
    return as_finite_matrix(arr, name=name)


def zero_rows(x: np.ndarray) -> np.ndarray:
    """Indices of rows that are exactly zero (they have no unit-norm direction)."""
    return np.flatnonzero(~np.any(x != 0, axis=1))


def power_of_two_scaled(x: np.ndarray) -> tuple[np.ndarray, float]:
    """(X / 2^e, 2^e) with 2^e near max|X|, so that scale-free quantities such as κ are computed
    away from float64 overflow and underflow.

    Exact except for entries that become subnormal, which move by at most 2^-1074 (far below the
    SVD's backward error eps·‖X‖). An X whose entries span more than float64's exponent range has
    no such rescaling: a row that would underflow to zero is a one-line MalleabilityError."""
    big = float(np.abs(x).max())
    if big == 0 or not math.isfinite(big):
        return x, 1.0
    e = math.frexp(big)[1]
    scaled = np.ldexp(x, -e)
    lost = np.flatnonzero(np.any(x != 0, axis=1) & ~np.any(scaled != 0, axis=1))
    if lost.size:
        tiny = float(np.abs(x[lost[0]]).max())
        raise MalleabilityError(
            f"X's rows span more than float64's range: row {int(lost[0])} (max |x| = {tiny:.1e}) underflows to "
            f"zero beside max |X| = {big:.1e}: no float64 scale holds both")
    return scaled, math.ldexp(1.0, e)


def refuse_repeats(values, what: str, spec) -> list:
    """``values`` as a list when no two are equal, else a one-line error naming the repeat.

    One rule for every list option: a repeated seed or width would count twice in a mean and its
    interval, and a repeated ε, model or size is most likely a typo, so none is dropped silently."""
    seen: set = set()
    for v in values:
        require(v not in seen, f"{what} repeats {v!r} in {str(spec)!r}: give each value once")
        seen.add(v)
    return list(values)


def split_entries(spec, what: str) -> list[str]:
    """'a, b' -> ['a', 'b']; an empty list or an empty entry ('a,,b', 'a,') is a one-line error, never dropped."""
    text = str(spec).strip()
    require(text, f"{what} is empty")
    items = [p.strip() for p in text.split(",")]
    require(all(items), f"{what} {str(spec)!r} has an empty entry: give a comma list with no blank items")
    return items
