"""The empirical NTK over every trained parameter: the network's W and the model's own parameters.

For a model with trainable feature parameters θ (e.g. qkv-attn's W_Q, W_K, W_V) the network is
``f(x) = (1/sqrt(m)) relu(z(x; θ) Wᵀ) a`` and its empirical NTK is a sum of per-block kernels::

    Θ(x, x') = Σ_blocks J_b(x) J_b(x')ᵀ = Θ_W + Θ_{W_Q} + Θ_{W_K} + Θ_{W_V}

``Θ_W`` (the *MLP part*) is the closed form of :mod:`malleability.empirics.ntk` on the features
``z(x; θ)``; the *projection part* comes from per-sample Jacobians w.r.t. θ with
``torch.func.vmap(jacrev(...))``, chunked so that at most ``max_bytes`` of Jacobian live at once
(both row sets are chunked; the column chunks are kept when they fit), contracted block by block. For K outputs the kernel is the mean of
the diagonal output blocks ``(1/K) Σ_k Θ_kk`` (with ±1 output weights the W part of every
diagonal block is the same, so for parameter-free models this is the block the rest of the
project uses). The reference :func:`reference_ntk_autograd` builds the whole Jacobian with plain
``torch.autograd.grad``, one row and output at a time, and contracts it.

Factored path (used when the model offers ``embed_factored`` and ``tap_shapes``): where each
parameter P enters a row's features once, as ``y = v @ P`` (or ``v @ Pᵀ``), the row's gradient
w.r.t. P is the outer product of ``v`` and ``∂f/∂y``, so ``Θ_P(x, x') = (v·v') (∂f/∂y · ∂f/∂y')``.
The cotangents ``∂f/∂y`` of all rows come from one ``torch.func.vjp`` of the batch per output
(rows do not interact once the state is fixed), vmapped over outputs; no per-row Jacobian is
ever formed (memory O(n·(d + K·d_k)) plus the (n, n) blocks). ``implementation='jacobian'``
forces the generic path; both are tested against the autograd reference.
"""

from __future__ import annotations

import math
import time

import torch

from malleability.empirics.models import FeatureModel, State
from malleability.empirics.ntk import empirical_ntk
from malleability.errors import require

MLP_BLOCK = "W"


def model_param_names(model: FeatureModel) -> tuple[str, ...]:
    return tuple(getattr(model, "param_names", ()) or ())


def has_params(model: FeatureModel, state: State | None) -> bool:
    """True when the model has trainable feature parameters and the state holds them."""
    names = model_param_names(model)
    return bool(names) and all(k in (state or {}) for k in names)


def _outputs(a: torch.Tensor | None, m: int, like: torch.Tensor) -> torch.Tensor:
    if a is None:
        return torch.ones(m, 1, dtype=like.dtype, device=like.device)
    a = a.detach().to(dtype=like.dtype, device=like.device)
    return a[:, None] if a.ndim == 1 else a


def _split(model: FeatureModel, state: State, dtype, device):
    names = model_param_names(model)
    cast = {k: v.detach().to(dtype=dtype, device=device) for k, v in state.items()}
    return {k: v for k, v in cast.items() if k not in names}, {k: cast[k] for k in names}


def _mlp_block(model, fixed, params, W, A, x1, x2):
    with torch.no_grad():
        z1 = model.embed(x1, {**fixed, **params})
        z2 = z1 if x2 is x1 else model.embed(x2, {**fixed, **params})
    a2 = (A ** 2).mean(dim=1)
    scalar = None if bool((a2 == 1).all()) else a2.sqrt()
    return empirical_ntk(z1, z2, W, scalar)


IMPLEMENTATIONS = ("auto", "factored", "jacobian")


def supports_factored(model: FeatureModel) -> bool:
    return callable(getattr(model, "embed_factored", None)) and callable(getattr(model, "tap_shapes", None))


def _factors(model, fixed, params, W, A, x):
    """({name: v (n, d_in)}, {name: ∂f_k/∂y (K, n, d_out)}) of every parameter use, for the rows x."""
    from torch.func import vjp, vmap

    m, K = W.shape[0], A.shape[1]
    state = {**fixed, **params}
    zeros = {k: torch.zeros(shape, dtype=x.dtype, device=x.device) for k, shape in model.tap_shapes(x.shape[0], x.shape[1]).items()}
    left = {}

    def outputs(taps):
        z, vs = model.embed_factored(x, state, taps)
        left.update({k: v.detach() for k, v in vs.items()})
        return torch.relu(z @ W.T) @ A / math.sqrt(m)  # (n, K)

    out, pullback = vjp(outputs, zeros)
    eye = torch.eye(K, dtype=x.dtype, device=x.device)
    cot = eye[:, None, :].expand(K, out.shape[0], K)  # output k of every row
    (grads,) = vmap(pullback)(cot)
    return left, grads


def _factored_blocks(model, fixed, params, W, A, x1, x2, symmetric):
    v1, g1 = _factors(model, fixed, params, W, A, x1)
    v2, g2 = (v1, g1) if symmetric else _factors(model, fixed, params, W, A, x2)
    K = A.shape[1]
    return {k: (v1[k] @ v2[k].T) * torch.einsum("kia,kja->ij", g1[k], g2[k]) / K for k in params}


def ntk_blocks(model: FeatureModel, state: State, W: torch.Tensor, a: torch.Tensor | None, x1: torch.Tensor,
               x2: torch.Tensor | None = None, *, max_bytes: int = 2**30,
               implementation: str = "auto") -> dict[str, torch.Tensor]:
    """Per-block empirical NTKs (n1, n2), in float64: {'W': MLP part, name: one per model parameter}.

    ``x2=None``: the symmetric kernel of x1 (only blocks j >= i are contracted, then mirrored).
    ``a``: the output weights (m,) or (m, K); None -> one output of ones. ``implementation``:
    'auto' (factored where the model offers it, else jacobian), 'factored' or 'jacobian'.
    """
    from torch.func import jacrev, vmap

    require(implementation in IMPLEMENTATIONS,
            f"unknown implementation {implementation!r}: choose one of {', '.join(IMPLEMENTATIONS)}")
    require(implementation != "factored" or supports_factored(model),
            f"model {model.name!r} has no factored form; use implementation='jacobian'")
    require(int(max_bytes) >= 1, f"max_bytes must be >= 1, got {max_bytes}")
    f64 = torch.float64
    dev = W.device
    W = W.detach().to(f64)
    m = W.shape[0]
    A = _outputs(a, m, W)
    K = A.shape[1]
    fixed, params = _split(model, state, f64, dev)
    symmetric = x2 is None
    x1 = x1.detach().to(device=dev, dtype=f64)
    x2 = x1 if symmetric else x2.detach().to(device=dev, dtype=f64)
    out = {MLP_BLOCK: _mlp_block(model, fixed, params, W, A, x1, x2)}
    if not params:
        return out
    if implementation == "factored" or (implementation == "auto" and supports_factored(model)):
        out.update(_factored_blocks(model, fixed, params, W, A, x1, x2, symmetric))
        return out

    def f(p, x):  # one row (d,) -> (K,) outputs
        z = model.embed(x[None], {**fixed, **p})[0]
        return torch.relu(W @ z) @ A / math.sqrt(m)

    jac = vmap(jacrev(f), in_dims=(None, 0))
    per_row = 8 * K * sum(v.numel() for v in params.values())
    half = int(max_bytes) // 2  # one half for the row chunk, one for the column chunk(s)
    step = max(1, half // per_row)

    def rows_jac(x):
        return {k: v.reshape(x.shape[0], K, -1) for k, v in jac(params, x).items()}

    starts2 = range(0, x2.shape[0], step)
    # the column Jacobians are kept when they fit in their half, else recomputed per row chunk
    cached = {j0: rows_jac(x2[j0:j0 + step]) for j0 in starts2} if x2.shape[0] * per_row <= half else None
    for k in params:
        out[k] = torch.empty(x1.shape[0], x2.shape[0], dtype=f64, device=dev)
    for i0 in range(0, x1.shape[0], step):
        J1 = cached[i0] if (symmetric and cached is not None) else rows_jac(x1[i0:i0 + step])
        for j0 in starts2:
            if symmetric and j0 < i0:
                continue
            J2 = J1 if (symmetric and j0 == i0) else (cached[j0] if cached is not None else rows_jac(x2[j0:j0 + step]))
            for k in params:
                _contract(out[k], J1[k], J2[k], i0, j0, symmetric and j0 == i0, symmetric, K)
    return out


TILE = 128  # rows per tile of a diagonal chunk: only tiles on or above the diagonal are multiplied


def _contract(out, J1, J2, i0, j0, diagonal: bool, symmetric: bool, K: int) -> None:
    """out[i0.., j0..] = J1 J2ᵀ / K (summed over outputs), mirrored below the diagonal when symmetric."""
    if not diagonal:
        block = torch.einsum("ikp,jkp->ij", J1, J2) / K
        out[i0:i0 + J1.shape[0], j0:j0 + J2.shape[0]] = block
        if symmetric:
            out[j0:j0 + J2.shape[0], i0:i0 + J1.shape[0]] = block.T
        return
    rows = J1.shape[0]
    for a in range(0, rows, TILE):
        for b in range(a, rows, TILE):
            block = torch.einsum("ikp,jkp->ij", J1[a:a + TILE], J1[b:b + TILE]) / K
            out[i0 + a:i0 + a + block.shape[0], i0 + b:i0 + b + block.shape[1]] = block
            if b != a:
                out[i0 + b:i0 + b + block.shape[1], i0 + a:i0 + a + block.shape[0]] = block.T


def full_ntk(model: FeatureModel, state: State, W: torch.Tensor, a: torch.Tensor | None, x1: torch.Tensor,
             x2: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """The whole empirical NTK: the sum of :func:`ntk_blocks`."""
    return sum(ntk_blocks(model, state, W, a, x1, x2, **kw).values())


def split_parts(blocks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{'mlp': Θ_W, 'projection': the sum of the model-parameter blocks (zeros when there are none)}."""
    proj = [v for k, v in blocks.items() if k != MLP_BLOCK]
    return {"mlp": blocks[MLP_BLOCK], "projection": sum(proj) if proj else torch.zeros_like(blocks[MLP_BLOCK])}


def reference_ntk_autograd(model: FeatureModel, state: State, W: torch.Tensor, a: torch.Tensor | None,
                           x1: torch.Tensor, x2: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-block NTKs from the full Jacobian built with ``torch.autograd.grad`` row by row (slow, simple)."""
    f64 = torch.float64
    W0 = W.detach().to(f64)
    m = W0.shape[0]
    A = _outputs(a, m, W0)
    fixed, params = _split(model, state, f64, W0.device)
    leaves = {MLP_BLOCK: W0.clone().requires_grad_(True), **{k: v.clone().requires_grad_(True) for k, v in params.items()}}

    def jacobian(x):
        rows = {k: [] for k in leaves}
        for i in range(x.shape[0]):
            z = model.embed(x[i:i + 1].to(f64), {**fixed, **{k: leaves[k] for k in params}})
            out = torch.relu(z @ leaves[MLP_BLOCK].T) @ A / math.sqrt(m)
            for k_out in range(A.shape[1]):
                grads = torch.autograd.grad(out[0, k_out], list(leaves.values()), retain_graph=True, allow_unused=True)
                for name, g in zip(leaves, grads):
                    rows[name].append(torch.zeros_like(leaves[name]).reshape(-1) if g is None else g.reshape(-1))
        return {k: torch.stack(v).reshape(x.shape[0], A.shape[1], -1) for k, v in rows.items()}

    J1 = jacobian(x1)
    J2 = J1 if x2 is None else jacobian(x2)
    return {k: torch.einsum("ikp,jkp->ij", J1[k], J2[k]) / A.shape[1] for k in leaves}


def benchmark_qkv_ntk(n: int = 512, d: int = 784, m: int = 1024, d_k: int = 64, *, reference_rows: int | None = None,
                      num_outputs: int = 1, seed: int = 0, max_bytes: int = 2**30, jacobian: bool = True) -> dict:
    """Time the NTK over all parameters of qkv-attn (the default, factored path; and the chunked torch.func
    Jacobian path unless ``jacobian=False``) against the plain autograd Jacobian contraction, on random unit
    rows in one process, with the memory each holds.

    Memory: ``tracemalloc`` sees no torch allocations, so each side reports the bytes of what it holds at
    once (the plain reference: the whole n × K × P Jacobian, P = m·d_k + 3·d·d_k; the Jacobian path: its
    Jacobian chunks; the factored path: the parameter uses and their cotangents) plus the (n, n) blocks,
    and the growth of the process's max resident set (``resource.getrusage``; coarse, it never shrinks).
    The reference runs on ``reference_rows`` rows (default all n); when fewer, its time is scaled by
    (n / rows)² (an upper bound: its contraction is quadratic in the rows, its row loop linear), flagged in
    ``reference_scaled_from_rows``. ``speedup`` = reference / factored; ``jacobian_speedup`` = reference /
    Jacobian path. ``max_rel_diff`` compares every block of each path with the reference on its rows.
    """
    import resource

    from malleability.empirics.models import get_model

    require(min(int(n), int(d), int(m), int(d_k), int(num_outputs)) >= 1, "n, d, m, d_k and num_outputs must be >= 1")
    rows = int(n) if reference_rows is None else min(int(reference_rows), int(n))
    require(rows >= 1, "reference_rows must be >= 1")
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.rand(int(n), int(d), generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    model = get_model("qkv-attn", {"d_k": int(d_k)})
    state = {**model.fit(x), **model.init_params(int(d), int(seed))}
    W = torch.randn(int(m), int(d_k), generator=gen, dtype=torch.float64)
    a = (torch.randint(0, 2, (int(m), int(num_outputs)), generator=gen) * 2 - 1).to(torch.float64)

    def rss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def timed(fn):
        r0, t0 = rss(), time.perf_counter()
        value = fn()
        return value, time.perf_counter() - t0, max(0, rss() - r0)

    for impl in ("factored",) + (("jacobian",) if jacobian else ()):  # warm up torch.func's tracing
        ntk_blocks(model, state, W, a, x[:2], max_bytes=max_bytes, implementation=impl)
    fact, t_fact, rss_fact = timed(lambda: ntk_blocks(model, state, W, a, x, implementation="factored"))
    jac = t_jac = rss_jac = None
    if jacobian:
        jac, t_jac, rss_jac = timed(lambda: ntk_blocks(model, state, W, a, x, max_bytes=max_bytes,
                                                       implementation="jacobian"))
    ref, t_ref_rows, rss_ref = timed(lambda: reference_ntk_autograd(model, state, W, a, x[:rows]))
    t_ref = t_ref_rows * (int(n) / rows) ** 2
    N, K, P_proj = int(n), int(num_outputs), 3 * int(d) * int(d_k)
    blocks_bytes = 8 * N * N * 4
    per_row = 8 * K * P_proj
    half = int(max_bytes) // 2
    held = N * per_row if N * per_row <= half else 2 * min(max(1, half // per_row), N) * per_row

    def diff(blocks):
        return max(float((blocks[k][:rows, :rows] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-300))
                   for k in ref)

    return {
        "n": N, "d": int(d), "m": int(m), "d_k": int(d_k), "num_outputs": K, "threads": torch.get_num_threads(),
        "factored_s": t_fact, "jacobian_s": t_jac, "reference_s": t_ref,
        "reference_scaled_from_rows": rows if rows < N else None,
        "speedup": t_ref / t_fact, "jacobian_speedup": None if t_jac is None else t_ref / t_jac,
        "factored_bytes": 8 * N * (2 * int(d) + int(d_k) + K * (int(d) + 2 * int(d_k))) + blocks_bytes,
        "jacobian_bytes": held + blocks_bytes if jacobian else None,
        "reference_bytes": 8 * N * K * (int(m) * int(d_k) + P_proj) + blocks_bytes,
        "factored_rss_growth_bytes": rss_fact, "jacobian_rss_growth_bytes": rss_jac, "reference_rss_growth_bytes": rss_ref,
        "max_rel_diff": {"factored": diff(fact), "jacobian": None if jac is None else diff(jac)},
        "parts_fro": {k: float(torch.linalg.matrix_norm(v)) for k, v in split_parts(fact).items()},
    }
