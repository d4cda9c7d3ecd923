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


def ntk_blocks(model: FeatureModel, state: State, W: torch.Tensor, a: torch.Tensor | None, x1: torch.Tensor,
               x2: torch.Tensor | None = None, *, max_bytes: int = 2**30) -> dict[str, torch.Tensor]:
    """Per-block empirical NTKs (n1, n2), in float64: {'W': MLP part, name: one per model parameter}.

    ``x2=None``: the symmetric kernel of x1 (only blocks j >= i are contracted, then mirrored).
    ``a``: the output weights (m,) or (m, K); None -> one output of ones.
    """
    from torch.func import jacrev, vmap

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
                block = torch.einsum("ikp,jkp->ij", J1[k], J2[k]) / K
                out[k][i0:i0 + step, j0:j0 + step] = block
                if symmetric and j0 != i0:
                    out[k][j0:j0 + step, i0:i0 + step] = block.T
    return out


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
                      num_outputs: int = 1, seed: int = 0, max_bytes: int = 2**30) -> dict:
    """Time the chunked torch.func NTK (closed-form MLP part + per-block projection Jacobians) against the
    plain autograd Jacobian contraction, on random unit rows in one process; peak memory of each.

    Peak memory: ``tracemalloc`` sees no torch allocations, so each side reports the bytes of the
    Jacobians it holds at once (the plain one holds the whole n × P Jacobian, P = m·d + 3·d·d_k
    per output; ours holds two chunks of the projection Jacobian plus the (n, n) blocks) and the
    process's max resident set growth (``resource.getrusage``, coarse: it never shrinks). The
    reference runs on ``reference_rows`` rows (default all n) and its time is scaled by
    (n / rows)² when smaller (its contraction dominates and is quadratic in the rows), flagged
    in ``reference_scaled_from_rows``.
    """
    import resource

    from malleability.empirics.models import get_model

    require(min(int(n), int(d), int(m), int(d_k), int(num_outputs)) >= 1, "n, d, m, d_k and num_outputs must be >= 1")
    rows = int(n) if reference_rows is None else min(int(reference_rows), int(n))
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.rand(int(n), int(d), generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    model = get_model("qkv-attn", {"d_k": int(d_k)})
    state = {**model.fit(x), **model.init_params(int(d), int(seed))}
    W = torch.randn(int(m), int(d_k), generator=gen, dtype=torch.float64)
    a = (torch.randint(0, 2, (int(m), int(num_outputs)), generator=gen) * 2 - 1).to(torch.float64)

    def rss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    ntk_blocks(model, state, W, a, x[:2], max_bytes=max_bytes)  # warm up torch.func's tracing
    r0 = rss()
    t0 = time.perf_counter()
    ours = ntk_blocks(model, state, W, a, x, max_bytes=max_bytes)
    t_ours = time.perf_counter() - t0
    r1 = rss()
    t0 = time.perf_counter()
    ref = reference_ntk_autograd(model, state, W, a, x[:rows])
    t_ref_rows = time.perf_counter() - t0
    r2 = rss()
    t_ref = t_ref_rows * (int(n) / rows) ** 2
    P_proj = 3 * int(d) * int(d_k)
    P = int(m) * int(d_k) + P_proj
    K = int(num_outputs)
    per_row = 8 * K * P_proj
    half = int(max_bytes) // 2
    step = max(1, half // per_row)
    held = int(n) * per_row if int(n) * per_row <= half else 2 * min(step, int(n)) * per_row
    ours_jac = held + 8 * int(n) ** 2 * (1 + 3)
    ref_jac = 8 * int(n) * K * P + 8 * int(n) ** 2 * 4
    diff = max(float((ours[k][:rows, :rows] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-300)) for k in ref)
    return {
        "n": int(n), "d": int(d), "m": int(m), "d_k": int(d_k), "num_outputs": K, "threads": torch.get_num_threads(),
        "params_ours_s": t_ours, "reference_s": t_ref, "reference_scaled_from_rows": rows if rows < int(n) else None,
        "speedup": t_ref / t_ours,
        "ours_jacobian_bytes": ours_jac, "reference_jacobian_bytes": ref_jac,
        "ours_rss_growth_bytes": max(0, r1 - r0), "reference_rss_growth_bytes": max(0, r2 - r1),
        "max_rel_diff": diff,
        "parts_fro": {k: float(torch.linalg.matrix_norm(v)) for k, v in split_parts(ours).items()},
    }
