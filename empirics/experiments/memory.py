"""Refuse a cell whose memory cannot fit this machine, before any work starts, with the estimate in the message."""

from __future__ import annotations

import math
import os

from malleability.errors import require


def machine_bytes() -> int:
    """Physical memory of this machine (bytes); 0 when unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0


def training_bytes(n: int, d: int, width: int, outputs: int = 10) -> int:
    """A generous estimate of one training run's peak: W, its gradient and Adam's two moments (float64),
    the hidden activations and their masks for all n rows, and the (n, n) kernels of the NTK and influence."""
    n, d, width = int(n), int(d), int(width)
    return 8 * (4 * width * d + 3 * n * width + width * outputs + 4 * n * n)


DIMENSIONS = {"mnist": 784, "fashion-mnist": 784, "cifar10": 3072}


def data_dimension(dataset: str) -> int:
    """d of a named data set, or of an .npz's rows (x's entries per row, read from the file)."""
    if dataset in DIMENSIONS or not str(dataset).endswith(".npz"):
        return DIMENSIONS.get(dataset, 784)
    from malleability.empirics.npz_io import _read_npz  # cached: the run reads the same arrays

    x = _read_npz(dataset)["x"]
    return int(math.prod(x.shape[1:])) if x.ndim >= 2 else 1


def _gib(nbytes: int) -> str:
    g = nbytes / 2**30
    return f"{g:.1f}" if g < 1e6 else f"{g:.2e}"


def require_fits(n: int, d: int, width: int, what: str, model_state: tuple[str, int] = ("", 0)) -> None:
    """Refuse a run whose estimate exceeds 80% of this machine's memory. ``model_state``: (model, float64
    values) of the largest model-owned state (qkv-attn's projections, say), added to the network's."""
    total = machine_bytes()
    if total <= 0:
        return
    model, elements = model_state
    extra = 8 * int(elements)
    need = training_bytes(n, d, width) + extra
    own = f" ({model}'s own state {_gib(extra)} GiB of it)" if extra >= 2**28 else ""
    hint = "choose a smaller width or n" + (f", or smaller options of {model}" if own else "")
    require(need <= 0.8 * total,
            f"{what}: width {width} at n = {n}, d = {d} needs about {_gib(need)} GiB{own}, more than this "
            f"machine's {total / 2**30:.1f} GiB; {hint}")


def require_bytes(need: int, what: str, hint: str) -> None:
    """A one-line error when ``need`` bytes exceed 80% of this machine's memory (``hint``: which options to lower)."""
    total = machine_bytes()
    if total <= 0:
        return
    require(need <= 0.8 * total, f"{what} needs about {_gib(need)} GiB, more than this machine's "
                                 f"{total / 2**30:.1f} GiB; {hint}")
