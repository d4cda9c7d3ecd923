"""Empirical NTK of the two-layer network (only W trained) and its infinite-width limit.

For ``f(z) = (1/sqrt(m)) relu(z Wᵀ) a`` the gradient w.r.t. ``w_r`` is
``a_r σ'(w_rᵀz) z / sqrt(m)``, so for one output column ``a``::

    K(z, z') = <z, z'> · (1/m) Σ_r a_r² σ'(w_rᵀz) σ'(w_rᵀz')            (closed form)

and for an (m, K) output matrix ``A`` the multi-output NTK is::

    Θ_kl(z, z') = <z, z'> · (1/m) Σ_r A_rk A_rl σ'(w_rᵀz) σ'(w_rᵀz')

With ``A`` = ±1 every diagonal block ``Θ_kk`` equals the scalar ``K`` with ``a = None``.
σ'(u) = 1[u > 0] (torch's relu derivative at 0 is 0 too, so the references agree exactly).

Implementations (neural_tangents style, one option, each tested against the others):

* ``closed_form``: the formula above as three matrix products, chunked over rows of ``z1``
  (memory O(n2·m + chunk·(m + n2))).
* ``jacobian_contraction``: per-sample Jacobians with ``torch.func.vmap(jacrev(...))``,
  contracted ``J1 J2ᵀ``; chunked over both row sets (the full Jacobian of 1024 rows at
  m=1024, d=784 would be 6.6 GB in float64).
* ``ntk_vector_products``: columns ``J1 (J2ᵀ e_j)`` with ``torch.func.vjp`` then ``jvp``,
  never materialising ``J1``.

``infinite_ntk`` is the m -> ∞ limit for ``W ~ N(0, I)`` and ±1 output weights:
``E_w[σ'(wᵀz) σ'(wᵀz')] = (π − θ)/(2π)`` with ``cos θ = <z, z'>`` for unit rows. Because
``σ'(wᵀz)`` depends only on the sign of ``wᵀz``, the empirical NTK is invariant to scaling W:
the paper's init ``N(0, 0.01²)`` gives exactly the same ``K_0`` as ``N(0, 1)`` with the same
draw, so ``K_0`` estimates ``K∞`` under either init (tested).
"""

from __future__ import annotations

import math
import warnings

import torch

from malleability.empirics.blas import gram_sym
from malleability.empirics.ntk_pattern import _finite_row_norms, _pattern_int8, _unit_rows_f32
from malleability.empirics.timing import best_time
from malleability.errors import MalleabilityError, require

IMPLEMENTATIONS = ("closed_form", "jacobian_contraction", "ntk_vector_products")


def _check(z1: torch.Tensor, z2: torch.Tensor, W: torch.Tensor, a) -> None:
    require(z1.ndim == 2 and z2.ndim == 2, "z1 and z2 must be 2-D (rows are samples)")
    require(W.ndim == 2, f"W must be (m, d), got shape {tuple(W.shape)}")
    require(z1.shape[1] == W.shape[1] and z2.shape[1] == W.shape[1],
            f"feature dimensions differ: z1 {tuple(z1.shape)}, z2 {tuple(z2.shape)}, W {tuple(W.shape)}")
    if a is not None:
        require(a.shape[0] == W.shape[0] and a.ndim in (1, 2), f"a must be (m,) or (m, K), got {tuple(a.shape)}")


def _require_finite(*tensors: torch.Tensor) -> None:
    # one reduction per tensor: a NaN or inf entry makes the sum non-finite; only when it is (a NaN, an
    # inf, or finite entries whose sum overflows) is the elementwise test run
    for t in tensors:
        if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
            raise MalleabilityError("z1, z2 and W must be finite")


def _activation_pattern(z: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return (z @ W.T > 0).to(z.dtype)


def _same_tensor(x: torch.Tensor, y: torch.Tensor) -> bool:
    # views of one memory are the same rows: the self-kernel takes the symmetric path
    return x is y or (x.shape == y.shape and x.stride() == y.stride() and x.dtype == y.dtype
                      and x.device == y.device and x.data_ptr() == y.data_ptr())


def _int_gram_ok() -> bool:
    """Whether ``torch._int_mm`` gives exact counts here and is faster than a float32 product.

    Decided once per process: correctness on a tiny case, then one timed product of 0/1
    patterns at a moderate shape each way. Where the CPU lacks int8 dot-product instructions
    torch's int8 GEMM was measured at about 1/50 of the float32 rate (AVX2-only EPYC,
    2026-12-02), so speed decides, not availability.
    """
    global _INT_MM
    if _INT_MM is None:
        try:
            x = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.int8)
            _INT_MM = torch.equal(torch._int_mm(x, x.T), torch.tensor([[2, 1], [1, 2]], dtype=torch.int32))
        except (RuntimeError, AttributeError, TypeError):
            _INT_MM = False
        if _INT_MM:
            _INT_MM = _int_mm_faster()
    return _INT_MM


def _int_mm_faster(rows: int = 256, inner: int = 1024) -> bool:
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 2, (rows, inner), generator=gen, dtype=torch.int8)
    bt = torch.randint(0, 2, (inner, rows), generator=gen, dtype=torch.int8)
    t_int = best_time(lambda: torch._int_mm(a, bt))
    t_float = best_time(lambda: a.float() @ bt.float())  # the fallback converts its operands too
    return t_int < t_float


_INT_MM = None


def _count_gram(S1: torch.Tensor, S2t: torch.Tensor) -> torch.Tensor:
    """S1 S2t for 0/1 int8 patterns (S2t = S2ᵀ, (m, n2), a view): exact integer counts.

    int32 GEMM on the CPU where torch has it and it is the faster (wrong results were seen for
    inner size 1 and for one row, hence m >= 8 and at least two rows and columns), else float32,
    exact for counts below 2^24 (also under TF32: 0/1 inputs are exact and the sum is float32).
    The int8 test and timing are the CPU's; CUDA's int8 GEMM refuses most shapes (sizes not
    multiples of 8, as a 250-row tile of n = 1000), so a CUDA tensor takes the float32 product.
    """
    if (S1.device.type == "cpu" and S1.shape[1] >= 8 and min(S1.shape[0], S2t.shape[1]) >= 2
            and _int_gram_ok()):
        return torch._int_mm(S1, S2t)
    ft = torch.float32 if S1.shape[1] < 2**24 else torch.float64
    return S1.to(ft) @ S2t.to(ft)


def empirical_ntk(z1, z2, W, a=None, *, chunk_size: int = 1024) -> torch.Tensor:
    """Closed-form empirical NTK, (n1, n2): ``(z1 z2ᵀ) ⊙ (σ'(z1 Wᵀ) diag(a²) σ'(z2 Wᵀ)ᵀ) / m``.

    ``a``: (m,) one output column, None -> ones (the ±1 case). When a² is constant (a = ±c)
    the middle factor is c² times a matrix of integer counts <= m, computed exactly from int8
    0/1 patterns; otherwise the weighted pattern's Gram is taken in z's dtype. For the
    self-kernel (z1, z2 the same tensor) both Grams are computed on the chunk × chunk blocks of
    the upper triangle only, the diagonal blocks as symmetric products (BLAS syrk on the CPU,
    :func:`_sym_counts`), and mirrored. Minimal work (self-kernel, ±1): one (n, d)x(d, m) product for the pattern
    (float32 screening in a float64 run), n(n+1)·m integer multiply-adds and n(n+1)·d/2
    float64 ones (the counts in float32 where int8 GEMM is the slower, :func:`_int_gram_ok`).
    Peak memory beyond the (n1, n2) output: (n1 + n2)·m bytes of patterns,
    about 10·chunk·m bytes for one pattern chunk (or a diagonal block's float32 pattern), 4·m·d for
    the float32 copy of W, and
    12·chunk² bytes per tile.
    """
    _check(z1, z2, W, a)
    require(a is None or a.ndim == 1, "empirical_ntk takes one output column a (m,); use empirical_ntk_multi")
    require(int(chunk_size) >= 1, f"chunk_size must be >= 1, got {chunk_size}")
    chunk = int(chunk_size)
    m = W.shape[0]
    same = _same_tensor(z1, z2)
    W = W.detach()
    z1 = z1.detach()
    z2 = z1 if same else z2.detach()
    screen = z1.dtype == torch.float64 and torch.get_float32_matmul_precision() == "highest"
    if screen:  # the norms the screen needs also prove the inputs finite
        norms = [_finite_row_norms(t) for t in ((W, z1) if same else (W, z1, z2))]
        # rows of huge or tiny norm would over/underflow in float32: such inputs skip screening
        screen = bool(torch.cat(norms).clamp_min(1e-30).log2().abs().max() < 100)
    else:
        _require_finite(z1, z2, W)
    scale, weights = 1.0, None
    if a is not None:
        a2 = a.detach().to(z1.dtype) ** 2
        if bool((a2 == a2[0]).all()):
            scale = float(a2[0])
        else:
            weights = a2
    if screen:
        Ws = _unit_rows_f32(W, norms[0])  # one float32 copy of W for both row sets
        z1s = _unit_rows_f32(z1, norms[1])
        z2s = z1s if same else _unit_rows_f32(z2, norms[2])
        S1 = _pattern_int8(z1, W, chunk, zs=z1s, Ws=Ws)  # (n1, m)
        S2 = S1 if same else _pattern_int8(z2, W, chunk, zs=z2s, Ws=Ws)
        del Ws, z1s, z2s
    else:
        S1 = _pattern_int8(z1, W, chunk)
        S2 = S1 if same else _pattern_int8(z2, W, chunk)

    def sym_counts(r0, r1):
        return _sym_counts(S1[r0:r1])

    def gram(r0, r1, c0, c1):
        if weights is None:
            return _count_gram(S1[r0:r1], S2[c0:c1].T)
        return (S1[r0:r1].to(z1.dtype) * weights) @ S2[c0:c1].T.to(z1.dtype)

    n1, n2 = z1.shape[0], z2.shape[0]
    out = torch.empty(n1, n2, dtype=z1.dtype, device=z1.device)
    factor = scale / m
    if same:  # blocks of the upper triangle, mirrored below; diagonal blocks as symmetric products
        for r0 in range(0, n1, chunk):
            r1 = min(r0 + chunk, n1)
            diag = out[r0:r1, r0:r1]
            gram_sym(z1[r0:r1], out=diag)
            diag.mul_(sym_counts(r0, r1) if weights is None else _mirror_upper(gram(r0, r1, r0, r1))).mul_(factor)
            for c0 in range(r1, n1, chunk):
                c1 = min(c0 + chunk, n1)
                block = out[r0:r1, c0:c1]  # the product is written in place: no tile copy
                torch.mm(z1[r0:r1], z1[c0:c1].T, out=block)
                block.mul_(gram(r0, r1, c0, c1)).mul_(factor)
                out[c0:c1, r0:r1] = block.T
        return out
    for r0 in range(0, n1, chunk):
        r1 = min(r0 + chunk, n1)
        for c0 in range(0, n2, chunk):
            c1 = min(c0 + chunk, n2)
            block = out[r0:r1, c0:c1]
            torch.mm(z1[r0:r1], z2[c0:c1].T, out=block)
            block.mul_(gram(r0, r1, c0, c1)).mul_(factor)
    return out


def _mirror_upper(sq: torch.Tensor) -> torch.Tensor:
    """The square's upper triangle mirrored below: a product of A with Aᵀ need not be bitwise symmetric."""
    return sq.triu().add_(sq.triu(1).T)


def _sym_counts(S: torch.Tensor, leaf: int = 128) -> torch.Tensor:
    """S Sᵀ for a 0/1 int8 pattern block (b, m): exact, symmetric integer counts.

    With int8 GEMM, by halves (:func:`_fill_sym_counts`): the upper triangle plus ``leaf``-sized
    diagonal squares, b·leaf/2 entries more than the triangle; otherwise one float32 symmetric
    product (:func:`gram_sym`, BLAS syrk on the CPU), exact for counts below 2^24 in any order.
    """
    b, m = S.shape
    int8 = S.device.type == "cpu" and m >= 8 and b >= 2 and _int_gram_ok()
    if not int8 and m < 2**24:
        return gram_sym(S.to(torch.float32))
    counts = torch.empty(b, b, dtype=torch.int32 if int8 else torch.float64, device=S.device)
    _fill_sym_counts(counts, S, 0, b, max(2, int(leaf)))
    return counts


def _fill_sym_counts(counts: torch.Tensor, S: torch.Tensor, lo: int, hi: int, leaf: int) -> None:
    """``counts[lo:hi, lo:hi] = S[lo:hi] S[lo:hi]ᵀ``: the two halves' cross block as one product,
    copied transposed below the diagonal, and each half's own square by recursion, down to squares
    of at most ``leaf`` rows. Square cross blocks keep int8 GEMM at its speed where narrow row
    panels of the upper trapezoid do not (1024 rows, m = 4096, one thread, AMD EPYC with AVX-512,
    2026-12-07: 16 ms against 20 ms for 128-row panels, which also needed a 5 ms mirror)."""
    if hi - lo <= leaf:
        counts[lo:hi, lo:hi] = _count_gram(S[lo:hi], S[lo:hi].T)  # integers: exactly symmetric
        return
    mid = lo + (hi - lo) // 2
    cross = _count_gram(S[lo:mid], S[mid:hi].T)
    counts[lo:mid, mid:hi] = cross
    counts[mid:hi, lo:mid] = cross.T
    _fill_sym_counts(counts, S, lo, mid, leaf)
    _fill_sym_counts(counts, S, mid, hi, leaf)


def empirical_ntk_multi(z1, z2, W, A, *, chunk_size: int = 1024) -> torch.Tensor:
    """Closed-form multi-output NTK, (n1, n2, K, K): ``Θ[i, j, k, l] = Θ_kl(z1_i, z2_j)``."""
    _check(z1, z2, W, A)
    require(A.ndim == 2, f"A must be (m, K), got shape {tuple(A.shape)}")
    m, K = A.shape
    W, A = W.detach(), A.detach().to(z1.dtype)
    S2 = _activation_pattern(z2.detach(), W)  # (n2, m)
    out = torch.empty(z1.shape[0], z2.shape[0], K, K, dtype=z1.dtype, device=z1.device)
    step = max(1, int(chunk_size) // max(1, K))
    for start in range(0, z1.shape[0], step):
        stop = min(start + step, z1.shape[0])
        zc = z1[start:stop].detach()
        Sc = _activation_pattern(zc, W)
        # Σ_r S1[i,r] A[r,k] A[r,l] S2[j,r]
        prod = torch.einsum("ir,rk,rl,jr->ijkl", Sc, A, A, S2)
        out[start:stop] = (zc @ z2.detach().T)[:, :, None, None] * prod
    return out.div_(m)


def infinite_ntk(z1, z2) -> torch.Tensor:
    """``(z1 z2ᵀ) ⊙ (π − arccos(clamp(z1 z2ᵀ, −1, 1)))/(2π)`` for unit rows (n1, n2)."""
    require(z1.ndim == 2 and z2.ndim == 2 and z1.shape[1] == z2.shape[1], "z1, z2 must be (n, d) with equal d")
    G = z1 @ z2.T
    return G * (math.pi - torch.arccos(G.clamp(-1.0, 1.0))) / (2 * math.pi)


# --------------------------------------------------------------------------------------------
# generic references (torch.func), for tests and the benchmark


def _network_fn(a: torch.Tensor, m: int):
    def f(W, z):  # one sample z (d,) -> scalar or (K,)
        return torch.relu(W @ z) @ a / math.sqrt(m)

    return f


def empirical_ntk_reference(z1, z2, W, a=None, *, chunk_size: int = 64) -> torch.Tensor:
    """Jacobian-contraction NTK with ``torch.func`` (generic, slow): (n1, n2), or (n1, n2, K, K) for a (m, K).

    Chunked over both row sets so at most ``2 * chunk_size`` per-sample Jacobians live at once.
    """
    from torch.func import jacrev, vmap

    _check(z1, z2, W, a)
    m = W.shape[0]
    multi = a is not None and a.ndim == 2
    a_ = torch.ones(m, dtype=W.dtype, device=W.device) if a is None else a.detach().to(W.dtype)
    jac = vmap(jacrev(_network_fn(a_, m)), in_dims=(None, 0))
    W = W.detach()
    step = int(chunk_size)
    require(step >= 1, f"chunk_size must be >= 1, got {chunk_size}")
    K = a_.shape[1] if multi else 1
    out = torch.empty(z1.shape[0], z2.shape[0], K, K, dtype=z1.dtype, device=z1.device)
    symmetric = z1 is z2  # then only blocks j >= i are contracted and mirrored
    for i0 in range(0, z1.shape[0], step):
        J1 = jac(W, z1[i0 : i0 + step].detach()).reshape(-1, K, W.numel())
        for j0 in range(i0 if symmetric else 0, z2.shape[0], step):
            J2 = J1 if (symmetric and i0 == j0) else jac(W, z2[j0 : j0 + step].detach()).reshape(-1, K, W.numel())
            if K == 1:
                block = (J1[:, 0] @ J2[:, 0].T)[:, :, None, None]
            else:
                block = torch.einsum("ikp,jlp->ijkl", J1, J2)
            out[i0 : i0 + step, j0 : j0 + step] = block
            if symmetric and j0 != i0:
                out[j0 : j0 + step, i0 : i0 + step] = block.permute(1, 0, 3, 2)
    return out if multi else out[:, :, 0, 0]


def _quiet_jvp_decompositions() -> None:
    # torch's first jvp imports its jvp decompositions, which still call the deprecated torch.jit.script
    # and warn about torch's own code, not ours
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
        try:
            import torch._decomp.decompositions_for_jvp  # noqa: F401
        except ImportError:
            pass


def ntk_vector_products(z1, z2, W, a=None, *, chunk_size: int = 64) -> torch.Tensor:
    """NTK by vector products: column j is ``J1 (J2ᵀ e_j)`` (vjp then jvp); one output column only."""
    from torch.func import jvp, vjp, vmap

    _quiet_jvp_decompositions()
    _check(z1, z2, W, a)
    require(a is None or a.ndim == 1, "ntk_vector_products takes one output column a (m,)")
    m = W.shape[0]
    a_ = torch.ones(m, dtype=W.dtype, device=W.device) if a is None else a.detach().to(W.dtype)
    W = W.detach()
    z1d, z2d = z1.detach(), z2.detach()

    def f_on(z):
        return lambda W_: torch.relu(z @ W_.T) @ a_ / math.sqrt(m)

    _, pullback = vjp(f_on(z2d), W)
    f1 = f_on(z1d)

    def column(e):
        (tangent,) = pullback(e)
        return jvp(f1, (W,), (tangent,))[1]

    eye = torch.eye(z2.shape[0], dtype=z2.dtype, device=z2.device)
    cols = [vmap(column)(eye[j : j + int(chunk_size)]) for j in range(0, z2.shape[0], int(chunk_size))]
    return torch.cat(cols, 0).T.contiguous()


def ntk(z1, z2, W, a=None, *, implementation: str = "closed_form", chunk_size: int | None = None) -> torch.Tensor:
    """One entry point for all implementations (same result up to rounding)."""
    if implementation == "closed_form":
        if a is not None and a.ndim == 2:
            return empirical_ntk_multi(z1, z2, W, a, chunk_size=chunk_size or 1024)
        return empirical_ntk(z1, z2, W, a, chunk_size=chunk_size or 1024)
    if implementation == "jacobian_contraction":
        return empirical_ntk_reference(z1, z2, W, a, chunk_size=chunk_size or 64)
    if implementation == "ntk_vector_products":
        return ntk_vector_products(z1, z2, W, a, chunk_size=chunk_size or 64)
    raise MalleabilityError(f"unknown NTK implementation {implementation!r}: choose one of {', '.join(IMPLEMENTATIONS)}")


# --------------------------------------------------------------------------------------------
# benchmark (used by `malleability bench ntk` and benchmarks/bench_ntk.py)
