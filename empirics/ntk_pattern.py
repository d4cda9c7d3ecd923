"""The ReLU activation pattern σ'(z Wᵀ) as int8, screened in float32 for a float64 run.

Exactness is the contract: the pattern equals that of the product in z's own dtype. The float32
product decides every entry whose magnitude clears a proven rounding bound; the rest (about 0.1%
for random rows) are recomputed as sampled dot products in z's dtype.
"""

from __future__ import annotations

import warnings

import torch

from malleability.empirics.blas import mm_nt
from malleability.errors import MalleabilityError


def _finite_row_norms(t: torch.Tensor) -> torch.Tensor:
    """Row norms of t, which also prove it finite: a NaN or inf entry makes its row's norm non-finite;
    only then (a NaN, an inf, or finite entries whose norm overflows) is the elementwise test run."""
    norms = t.norm(dim=1)
    if not bool(torch.isfinite(norms).all()) and not bool(torch.isfinite(t).all()):
        raise MalleabilityError("z1, z2 and W must be finite")
    return norms


def _unit_rows_f32(t: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """t's rows over their norms, as float32: cast first, then scaled by the float32 reciprocal.

    Three roundings per entry (the cast, the reciprocal, the product), inside the screen's bound
    (:func:`_pattern_int8`); scaling after the cast touches float32 only, with no float64
    temporary the size of t. Entries near that bound are rechecked in t's own dtype, so the
    pattern, and hence the kernel, does not depend on this copy.
    """
    out = t.to(torch.float32, copy=True)
    return out.mul_(norms.clamp_min(1e-30).reciprocal().to(torch.float32)[:, None])


def screen_bound(d: int) -> float:
    """The float32 screen's error bound ``c = 1.01·γ_{d+8} + d·2^-140`` for unit rows of length d
    (see :func:`_pattern_int8`); inf when γ is not defined, so every entry is rechecked."""
    k = (d + 8) * 2.0**-24
    return 1.01 * k / (1 - k) + d * 2.0**-140 if k < 0.5 else float("inf")


def _pattern_int8(z: torch.Tensor, W: torch.Tensor, chunk: int, *, zs: torch.Tensor | None = None,
                  Ws: torch.Tensor | None = None) -> torch.Tensor:
    """σ'(z Wᵀ) as an (n, m) int8 0/1 matrix, equal to the pattern of the product in z's dtype.

    With ``zs`` and ``Ws`` (float32 unit-norm copies of the rows of a float64 ``z`` and ``W``) the
    product is screened in float32. With ``|ẑ·ŵ| <= 1`` the float32 error is at most
    ``c = 1.01·γ_{d+8} + d·2^-140`` (accumulation γ_d; three roundings of each input, 6u; the
    product's underflow, d·2^-140). The margin left (2u, and 1% of the whole) holds the second-order terms,
    the float64 norms' error and the absolute error of entries that the cast puts below float32's
    normal range (2^-150 each, at most 2^-50 after a row's scaling, which the screen keeps within
    2^100), so ``|P32| > c`` fixes
    the sign of the exact product; the rare entries with ``|P32| <= c`` (about 0.1% for random
    rows) are recomputed as float64 dot products (a sampled product z Wᵀ). Without them the
    product is taken in z's own dtype. The pattern Gram S1 S2ᵀ takes S2ᵀ as a view of the
    (n, m) rows at the speed of a contiguous operand: no transpose copy.
    """
    n, d = z.shape
    m = W.shape[0]
    out = torch.empty(n, m, dtype=torch.int8, device=z.device)
    bits = out.view(torch.bool)
    screen = zs is not None and Ws is not None
    c = screen_bound(d)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        if not screen:
            torch.gt(z[start:stop] @ W.T, 0, out=bits[start:stop])
            continue
        P = mm_nt(zs[start:stop], Ws)  # (rows, m); any backend: the bound c holds for every summation order
        near = _flat_nonzero(_signs_and_near(P, c, bits[start:stop]))
        if near.numel() > P.numel() // 16:  # many near-zero pre-activations: one float64 product
            torch.gt(z[start:stop] @ W.T, 0, out=bits[start:stop])
        elif near.numel():
            i, r = near.div(m, rounding_mode="floor"), near.remainder(m)
            bits[i + start, r] = _exact_dot_signs_sampled(z[start:stop], W, i, r)
    return out


def _signs_and_near(P: torch.Tensor, c: float, bits: torch.Tensor) -> torch.Tensor:
    """Writes P > 0 into ``bits`` and returns the mask |P| <= c; P is overwritten with |P|.

    On the CPU through numpy's ufuncs, about 3x faster than torch's comparisons into bool (1.3 ms
    against 0.36 ms for 4M float32 entries, one thread, 2026-12-05): the same values either way.
    """
    if P.device.type == "cpu" and P.is_contiguous() and bits.is_contiguous():
        import numpy as np

        Pn = P.numpy()
        np.greater(Pn, 0, out=bits.numpy())
        np.abs(Pn, out=Pn)
        mask = torch.empty(P.shape, dtype=torch.bool)
        np.less_equal(Pn, np.float32(c), out=mask.numpy())
        return mask
    torch.gt(P, 0, out=bits)
    return P.abs_() <= c


def _flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Sorted flat indices of the True entries of a contiguous bool tensor.

    On the CPU, read as int64 words first: nonzero() over n/8 words, then over the 8 bytes of each
    word that has a True (a few per thousand here), is about 4x faster than over n bools.
    """
    flat = mask.reshape(-1)
    if flat.device.type != "cpu" or flat.numel() % 8 or not flat.is_contiguous():
        return flat.nonzero().view(-1)
    words = flat.view(torch.int64).nonzero().view(-1)
    if not words.numel():
        return words
    byte = flat.view(-1, 8)[words].nonzero()
    return words[byte[:, 0]] * 8 + byte[:, 1]


def _exact_dot_signs_sampled(z: torch.Tensor, W: torch.Tensor, i: torch.Tensor,
                             r: torch.Tensor) -> torch.Tensor:
    """z_i · w_r > 0 for index pairs sorted by (i, r), in z's dtype, as a sampled product z Wᵀ (SDDMM).

    A CSR mask over (n, m) holds the pairs; torch.sparse.sampled_addmm computes only those dot
    products, reading the rows in place (about 6x faster than gathering them, 4.6k pairs at
    d = 784, m = 4096). Where sampled_addmm is not available the rows are gathered.
    """
    n, k = z.shape[0], i.numel()
    crow = torch.zeros(n + 1, dtype=torch.int64, device=z.device)
    torch.cumsum(torch.bincount(i, minlength=n), 0, out=crow[1:])
    try:
        with warnings.catch_warnings():  # torch calls sparse CSR "beta"; the mask is valid by construction
            warnings.simplefilter("ignore", UserWarning)
            mask = torch.sparse_csr_tensor(crow, r, torch.zeros(k, dtype=z.dtype, device=z.device),
                                           size=(n, W.shape[0]), check_invariants=False)
            values = torch.sparse.sampled_addmm(mask, z, W.T, beta=0.0).values()
    except (RuntimeError, NotImplementedError):  # a backend without SDDMM
        return _exact_dot_signs(z, W, i, r)
    return values > 0


def _exact_dot_signs(z: torch.Tensor, W: torch.Tensor, i: torch.Tensor, r: torch.Tensor, block: int = 256):
    """z_i · w_r > 0 for index pairs, in z's dtype; gathered a block at a time into reused buffers
    (one gather of every pair at once costs more in memory traffic than the dot products)."""
    d, k = z.shape[1], i.numel()
    signs = torch.empty(k, dtype=torch.bool, device=z.device)
    bz = torch.empty(min(block, k), d, dtype=z.dtype, device=z.device)
    bw = torch.empty_like(bz)
    for s in range(0, k, block):
        e = min(s + block, k)
        torch.index_select(z, 0, i[s:e], out=bz[: e - s])
        torch.index_select(W, 0, r[s:e], out=bw[: e - s])
        torch.gt(torch.einsum("kd,kd->k", bz[: e - s], bw[: e - s]), 0, out=signs[s:e])
    return signs
