"""torchvision data sets read from a root without surprises: a download only where allowed and reachable,
and files that exist but do not load reported in one line (a legacy pickled ``.pt`` is never trusted)."""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import numpy as np

from malleability.errors import MalleabilityError


def _network_reachable(host: str = "ossci-datasets.s3.amazonaws.com", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# raw sources (cached per process: MNIST's idx file is ~50 MB)


@functools.lru_cache(maxsize=8)
def _torchvision_split(name: str, root: str, train: bool, allow_download: bool) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (N, d) flattened, labels int64) from torchvision, or a one-line error."""
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST,
           "cifar10": torchvision.datasets.CIFAR10}[name]
    try:
        ds = cls(root=root, train=train, download=False)
    except Exception as exc:
        if not (isinstance(exc, RuntimeError) and "not found" in str(exc).lower()):
            raise _unreadable(name, root, cls) from None
        if not allow_download:
            raise MalleabilityError(
                f"data set {name} not found under {root} (and no download attempted: pass --data-root or set "
                f"MALLEABILITY_DATA to a folder laid out for torchvision)"
            ) from None
        if not _network_reachable():
            raise MalleabilityError(
                f"data set {name} not found under {root} and no network to download it; pass --data-root "
                f"or set MALLEABILITY_DATA"
            ) from None
        try:
            ds = cls(root=root, train=train, download=True)
        except Exception as exc:  # network errors of any kind -> one line
            raise MalleabilityError(f"could not download {name} into {root}: {exc}") from None
    try:
        data = ds.data
        data = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
        labels = np.asarray(ds.targets, dtype=np.int64).reshape(-1)
        # MNIST, Fashion-MNIST and CIFAR-10 have ten classes: another label is a damaged file
        ok = (data.ndim >= 2 and data.shape[0] == labels.shape[0] > 0 and data.dtype == np.uint8
              and 0 <= int(labels.min()) and int(labels.max()) <= 9)
    except Exception:
        ok = False
    if not ok:
        raise _unreadable(name, root, cls)
    pixels = np.ascontiguousarray(data.reshape(data.shape[0], -1))
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def _unreadable(name: str, root: str, cls) -> MalleabilityError:
    """Files that exist but do not load. A legacy pickled ``processed/*.pt`` is never unpickled
    beyond torch's safe loader, so the way out is to remove it, not to trust it."""
    legacy = Path(root) / cls.__name__ / "processed"
    why = (f"it holds a legacy pickled {legacy}/training.pt that is not loaded for safety; remove "
           f"{legacy} or use a root with the raw files" if (legacy / "training.pt").exists()
           else "its files are corrupt, truncated or in an unknown format")
    return MalleabilityError(f"data set {name} is not readable under {root}: {why}")
