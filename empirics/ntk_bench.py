"""Benchmarks of the closed-form empirical NTK: against the torch.func reference, its matmul floor and
neural-tangents (where jax and neural-tangents are importable), in one process.

Imported by ``malleability bench ntk`` and ``benchmarks/bench_ntk.py``; nothing here is used by an experiment.
"""

from __future__ import annotations

import math

import torch

from malleability.empirics.ntk import _int_gram_ok, empirical_ntk, empirical_ntk_reference
from malleability.empirics.timing import median_time
from malleability.errors import require


def _neural_tangents_time(z: torch.Tensor, W: torch.Tensor, repeats: int) -> dict:
    """neural-tangents' structured-derivatives NTK of the same network, jitted and warm.

    W is passed in neural-tangents' own (d, m) layout (with ``x @ W.T`` inside the function it
    falls back to Jacobians). Both the symmetric call (x2=None) and x2=x are timed; the
    faster counts. With one torch thread XLA is asked for one thread too, if jax is imported
    here first. Raises ImportError when jax or neural-tangents is missing.
    """
    import os
    import sys

    threads = torch.get_num_threads()
    if threads == 1 and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt

    float64 = z.dtype == torch.float64
    if float64:
        jax.config.update("jax_enable_x64", True)
    jdt = jnp.float64 if float64 else jnp.float32
    x = jnp.asarray(z.numpy(), dtype=jdt)
    params = jnp.asarray(W.T.contiguous().numpy(), dtype=jdt)
    m = W.shape[0]
    a = jnp.ones(m, dtype=jdt)

    def f(p, xs):
        return jax.nn.relu(xs @ p) @ a / math.sqrt(m)

    fn = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0,
                                     implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES))
    best, K = None, None
    for x2 in (None, x):
        K = fn(x, x2, params).block_until_ready()  # compile and warm up
        t = median_time(lambda: fn(x, x2, params).block_until_ready(), repeats)
        best = t if best is None else min(best, t)
    return {"time_s": best, "K": torch.from_numpy(jax.device_get(K).copy()),
            "threads": 1 if threads == 1 else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                              else os.cpu_count()),
            "versions": {"jax": jax.__version__, "neural_tangents": getattr(nt, "__version__", None)}}


def exact_ntk_rows(z: torch.Tensor, W: torch.Tensor, rows: int) -> "numpy.ndarray":
    """Rows [0, rows) of the ±1 two-layer NTK in extended precision, as the accuracy oracle.

    The pattern counts S Sᵀ are integers <= m, exact in a float64 product of 0/1 matrices; the
    z Gram is accumulated in numpy's longdouble (64-bit mantissa on x86, 11 bits beyond float64),
    so K_oracle carries rounding well below float64's own and both the closed form and the
    torch.func reference are measured against it. Patterns come from the float64 product (the
    exact sign but for |w·z| near float64's rounding, where the reference decides the same way).
    """
    import numpy as np

    rows = min(int(rows), z.shape[0])
    S = (z.double() @ W.double().T > 0).double()
    counts = (S[:rows] @ S.T).numpy()
    zl = z.double().numpy().astype(np.longdouble)
    gram = zl[:rows] @ zl.T
    return gram * counts.astype(np.longdouble) / W.shape[0]


def _relative(diff, ref) -> float:
    """max |K − K_ref| over max |K_ref|; absolute where K_ref is all zero (e.g. m = 1 with its unit inactive),
    where the quotient would be 0/0 = nan."""
    diff, ref = float(diff), float(ref)
    return diff / ref if ref > 0 else diff


def _max_rel_error(K: torch.Tensor, oracle) -> float:
    import numpy as np

    return _relative(np.abs(K.double().numpy().astype(np.longdouble) - oracle).max(), np.abs(oracle).max())


def _gemm_fn(shape: tuple[int, int, int], dtype: torch.dtype, gen):
    """One (p, q)x(q, r) product in dtype as a callable (int8: torch._int_mm, or float32 without int8 GEMM)."""
    p, q, r = shape
    if dtype == torch.int8:
        A = torch.randint(0, 2, (p, q), generator=gen, dtype=torch.int8)
        Bt = torch.randint(0, 2, (r, q), generator=gen, dtype=torch.int8).T.contiguous()
        if q >= 8 and _int_gram_ok():
            return lambda: torch._int_mm(A, Bt)
        A32, B32 = A.float(), Bt.float()
        return lambda: A32 @ B32
    A = torch.randn(p, q, generator=gen, dtype=torch.float64).to(dtype)
    B = torch.randn(r, q, generator=gen, dtype=torch.float64).to(dtype)
    return lambda: A @ B.T


def _numpy_fn(shape: tuple[int, int, int], dtype: torch.dtype, gen, *, symmetric: bool = False):
    """The same product through numpy's BLAS; ``symmetric``: A Aᵀ of a (p, q) A, which numpy hands to syrk."""
    from malleability.empirics.blas import blas_threads

    p, q, r = shape
    A = torch.randn(p, q, generator=gen, dtype=torch.float64).to(dtype).numpy()
    B = A if symmetric else torch.randn(r, q, generator=gen, dtype=torch.float64).to(dtype).numpy()

    def fn():
        with blas_threads():
            return A @ B.T
    return fn


def _fastest(candidates: dict, repeats: int):
    """(name, fn, share) of the candidate with the least share · time: the floor takes the best backend here."""
    best = None
    for name, (fn, share) in candidates.items():
        fn()
        cost = share * median_time(fn, max(3, int(repeats)))
        if best is None or cost < best[0]:
            best = (cost, name, fn, share)
    return best[1:]


def _paired_floor_rounds(closed, products: dict, halves: dict, rounds: int) -> dict:
    """Time the closed form and the floor's products in alternation, ``rounds`` times.

    On a host whose GEMM rate drifts (148-217 GFLOP/s within an hour on one Xeon), timing the
    closed form and its floor minutes apart moves their ratio by 30%; each round here times both
    within a fraction of a second, so the per-round ratios share the host's state. ``halves``:
    the share of each full product the minimal algorithm needs (a symmetric Gram: (n+1)/2n).
    Returns the median closed-form time, floor and per-round ratio.
    """
    import statistics
    import time

    t_closed, floors, ratios, times = [], [], [], {k: [] for k in products}
    for _ in range(max(1, int(rounds))):
        t0 = time.perf_counter()
        closed()
        tc = time.perf_counter() - t0
        floor = 0.0
        for key, fn in products.items():
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
            times[key].append(t)
            floor += t * halves[key]
        t_closed.append(tc)
        floors.append(floor)
        ratios.append(tc / floor)
    return {"closed_s": statistics.median(t_closed), "floor_s": statistics.median(floors),
            "ratio": statistics.median(ratios), "ratios": ratios,
            "product_s": {k: statistics.median(v) for k, v in times.items()}}


def benchmark_ntk(n: int = 1024, d: int = 784, m: int = 1024, dtype: str = "float64", *, repeats: int = 3,
                  reference_budget_s: float = 60.0, seed: int = 0, neural_tangents: bool = True) -> dict:
    """Closed form vs the ``torch.func`` Jacobian contraction (and neural-tangents where importable).

    ``speedup_vs_reference`` (alias ``speedup``) = median reference time / median closed-form
    time. The reference runs on all n rows when a timed 128-row block predicts under
    ``reference_budget_s``; otherwise its time is the block's time scaled by the number of
    64-row chunk pairs it computes (c(c+1)/2 for c chunks) and ``reference_scaled_from_rows``
    says so. ``max_rel_diff`` = max |K − K_ref| / max |K_ref| over the entries computed (absolute
    where K_ref is all zero). Because
    the reference's own float64 rounding (a sum over m·d products per entry) is larger than the
    closed form's, both are also measured against an extended-precision oracle on the first
    ``oracle_rows`` rows (:func:`exact_ntk_rows`): ``max_rel_error`` (ours) and
    ``reference_max_rel_error`` (torch.func's), each max |K − K_oracle| / max |K_oracle|.

    ``ratio_to_floor`` (alias ``closed_form_over_floor``) = closed-form time / ``matmul_floor_s``
    (the median over rounds that time both in alternation, :func:`_paired_floor_rounds`; the
    per-round ratios are in ``ratio_to_floor_rounds``), where the floor is
    the minimal algorithm's products at the rates measured here, each on a product of the same
    shape and operand type by the fastest backend found (``floor_backends``): the pattern product
    2·n·d·m (float32, the screening, in a float64 run; the run's dtype otherwise; torch or numpy,
    z Wᵀ or W zᵀ), the symmetric pattern Gram n(n+1)·m as int8 (float32 without int8 GEMM; half a
    full product's time, or numpy's float32 syrk, whichever is the less) and the symmetric z Gram n(n+1)·d in the run's dtype (half a full GEMM or
    numpy's syrk, whichever is the less). Elementwise work and the recheck of near-zero
    pre-activations are not in the floor.

    ``speedup_vs_neural_tangents``: neural-tangents time / closed-form time, or None with
    ``neural_tangents_reason`` when jax or neural-tangents is not importable.
    """
    require(min(int(n), int(d), int(m)) >= 1, "n, d and m must be >= 1")
    require(int(repeats) >= 1, "repeats must be >= 1")
    require(dtype in ("float32", "float64"), f"unknown dtype {dtype!r}")
    n, d, m = int(n), int(d), int(m)
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    z = (z / z.norm(dim=1, keepdim=True)).to(dt)
    W = torch.randn(m, d, generator=gen, dtype=torch.float64).to(dt)
    K = empirical_ntk(z, z, W)
    t_closed = median_time(lambda: empirical_ntk(z, z, W), repeats)
    chunk = 64
    empirical_ntk_reference(z[:2], z[:2], W, chunk_size=chunk)  # warm up torch.func's tracing
    block = min(n, 2 * chunk)
    zb = z[:block]
    t_block = median_time(lambda: empirical_ntk_reference(zb, zb, W, chunk_size=chunk), 1)

    def pairs(rows: int) -> int:  # chunk pairs (j >= i) the symmetric reference computes
        c = -(-rows // chunk)
        return c * (c + 1) // 2

    estimate = t_block * pairs(n) / pairs(block)
    if block == n or estimate <= reference_budget_s:
        holder = {}
        t_ref = median_time(lambda: holder.setdefault("K", empirical_ntk_reference(z, z, W, chunk_size=chunk)), 1)
        K_ref, K_cmp, scaled_from = holder["K"], K, None
    else:
        K_ref = empirical_ntk_reference(zb, zb, W, chunk_size=chunk)
        K_cmp, t_ref, scaled_from = K[:block, :block], estimate, block
    max_rel_diff = _relative((K_cmp - K_ref).abs().max(), K_ref.abs().max())
    oracle_rows = min(n, 256)
    oracle = exact_ntk_rows(z, W, oracle_rows)
    max_rel_error = _max_rel_error(K[:oracle_rows], oracle)
    ref_rows = min(oracle_rows, K_ref.shape[0])
    reference_max_rel_error = _max_rel_error(K_ref[:ref_rows], oracle[:ref_rows, :K_ref.shape[1]])
    pattern_dt = torch.float32 if dt == torch.float64 else dt
    flops = {"pattern": 2.0 * n * d * m, "pattern_gram": float(n * (n + 1) * m), "z_gram": float(n * (n + 1) * d)}
    sym_share = (n + 1) / (2.0 * n)  # the distinct entries' share of a full (n, ., n) product
    # Each product's floor is the fastest way this machine offers, whichever backend: torch's
    # GEMM, numpy's (OpenBLAS) GEMM in either orientation (W zᵀ ran 20% above z Wᵀ at m = 1024 on a
    # Xeon), and for the z Gram half a full GEMM or numpy's syrk, timed whole.
    choice = {
        "pattern": _fastest({f"{lib} {sh}": ((_gemm_fn if lib == "torch" else _numpy_fn)(sh, pattern_dt, gen), 1.0)
                             for lib in ("torch", "numpy") for sh in ((n, d, m), (m, d, n))}, repeats),
        "pattern_gram": _fastest({("torch int8, half" if m >= 8 and _int_gram_ok() else "torch float32, half"):
                                  (_gemm_fn((n, m, n), torch.int8, gen), sym_share),
                                  "numpy float32 syrk": (_numpy_fn((n, m, n), torch.float32, gen, symmetric=True), 1.0)},
                                 repeats),
        "z_gram": _fastest({"torch gemm, half": (_gemm_fn((n, d, n), dt, gen), sym_share),
                            "numpy syrk": (_numpy_fn((n, d, n), dt, gen, symmetric=True), 1.0)}, repeats),
    }
    products = {k: v[1] for k, v in choice.items()}
    halves = {k: v[2] for k, v in choice.items()}
    paired = _paired_floor_rounds(lambda: empirical_ntk(z, z, W), products, halves, max(3, int(repeats)))
    # effective rates: the minimal algorithm's flops over the floor's time for each
    rates = {k: flops[k] / (halves[k] * paired["product_s"][k]) for k in flops}
    floor = paired["floor_s"]
    res = {
        "n": n, "d": d, "m": m, "dtype": dtype, "repeats": int(repeats),
        "threads": torch.get_num_threads(),
        "closed_form_s": t_closed,
        "closed_form_paired_s": paired["closed_s"],
        "reference_s": t_ref,
        "reference_scaled_from_rows": scaled_from,
        "speedup_vs_reference": t_ref / t_closed,
        "max_rel_diff": max_rel_diff,
        "max_rel_error": max_rel_error,
        "reference_max_rel_error": reference_max_rel_error,
        "oracle_rows": oracle_rows,
        "floor_flops": flops,
        "floor_gflops_rates": {k: v / 1e9 for k, v in rates.items()},
        "floor_backends": {k: v[0] for k, v in choice.items()},
        "int8_gemm": bool(m >= 8 and _int_gram_ok()),
        "matmul_floor_s": floor,
        "ratio_to_floor": paired["ratio"],
        "ratio_to_floor_rounds": paired["ratios"],
        "floor_timing": "closed form and floor products timed in alternation; ratio = median of per-round ratios",
        # older names of the same numbers
        "speedup": t_ref / t_closed,
        "closed_form_over_floor": paired["ratio"],
        "closed_form_flops": sum(flops.values()),
        "gemm_gflops": rates["pattern"] / 1e9,
    }
    res.update({"neural_tangents_s": None, "speedup_vs_neural_tangents": None,
                "neural_tangents_max_rel_diff": None, "neural_tangents_threads": None,
                "neural_tangents_versions": None, "neural_tangents_reason": None})
    if not neural_tangents:
        res["neural_tangents_reason"] = "not requested"
        return res
    try:
        nt_res = _neural_tangents_time(z, W, repeats)
    except ImportError as exc:
        res["neural_tangents_reason"] = f"jax/neural-tangents not importable: {exc}"
        return res
    K_nt = nt_res["K"].to(K.dtype).reshape(K.shape)
    res.update({"neural_tangents_s": nt_res["time_s"], "speedup_vs_neural_tangents": nt_res["time_s"] / t_closed,
                "neural_tangents_max_rel_diff": _relative((K - K_nt).abs().max(), K_nt.abs().max()),
                "neural_tangents_threads": nt_res["threads"], "neural_tangents_versions": nt_res["versions"]})
    return res
