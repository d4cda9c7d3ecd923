"""Input validation shared by every layer: one-line errors, never silent wrong answers."""

from __future__ import annotations

import os

import numpy as np

from malleability.errors import MalleabilityError


def as_finite_matrix(x, name: str = "X") -> np.ndarray:
    """Return ``x`` as a 2-D float64 array, or raise a one-line :class:`MalleabilityError`.

    Rejects: non-numeric data, arrays that are not 2-D, empty arrays, NaN or inf entries.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise MalleabilityError(f"{name} is not a numeric array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise MalleabilityError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise MalleabilityError(f"{name} must be 2-D (rows are samples), got shape {arr.shape}")
    if arr.size == 0:
        raise MalleabilityError(f"{name} is empty (shape {arr.shape})")
    if np.iscomplexobj(arr):
        raise MalleabilityError(f"{name} must be real, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise MalleabilityError(f"{name} has {bad} NaN or inf entries")
    return arr.astype(np.float64, copy=False)


def load_npy_matrix(path: str, name: str = "X") -> np.ndarray:
    """Load a ``.npy`` file holding a 2-D data matrix, with one-line errors for every failure."""
    if not os.path.exists(path):
        raise MalleabilityError(f"file not found: {path}")
    if os.path.isdir(path):
        raise MalleabilityError(f"expected a .npy file, got a directory: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise MalleabilityError(f"cannot read {path} as .npy: {type(exc).__name__}: {exc}") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        raise MalleabilityError(f"{path} is an .npz archive; pass a single .npy matrix")
    return as_finite_matrix(arr, name=name)


def zero_rows(x: np.ndarray) -> np.ndarray:
    """Indices of rows that are exactly zero (they have no unit-norm direction)."""
    return np.flatnonzero(~np.any(x != 0, axis=1))
