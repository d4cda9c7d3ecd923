"""Cost of automatic precision (malleability.theory.conditioning.condition_numbers) against plain float64.

Plain float64: one SVD of X (the same routine) and κ(G³) = (s_1/s_r)^6 — what you would write by hand.
Automatic: the same SVD, the error bound, and an mpmath SVD only where float64 cannot be trusted.
Both run in this process, on the same matrices; the script prints time ratios (goal: under
1.5x where float64 suffices) and, where it does not, how wrong plain float64 (and the naive
κ of the formed G³) are against the automatic answer.

    python benchmarks/bench_precision.py [--repeats R]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from malleability.properties import generators as gen
from malleability.theory.conditioning import condition_numbers, singular_values


def plain_float64(x):
    s = singular_values(x)  # the same float64 SVD routine: the ratio measures the overhead only
    r = int(np.count_nonzero(s > max(x.shape) * np.finfo(float).eps * s[0]))
    return (s[0] / s[r - 1]) ** 6


def best_of(fn, repeats):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    cases = [
        ("float64 suffices: data-like 1000x784", gen.data_like_matrix(rng, n=1000, d=784)),
        ("float64 suffices: 500x300, κ(X)=1e3", gen.conditioned_matrix(rng, n=500, d=300, kappa_x=1e3)),
        ("float64 suffices: 20x20, κ(X)=1e4 (κ(G³)=1e24)", gen.conditioned_matrix(rng, n=20, d=20, kappa_x=1e4)),
        ("float64 fails: 20x20, κ(X)=1e9 (κ(G³)=1e54)", gen.conditioned_matrix(rng, n=20, d=20, kappa_x=1e9)),
        ("float64 fails: 40x30, κ(X)=1e11", gen.conditioned_matrix(rng, n=40, d=30, kappa_x=1e11)),
    ]
    print(f"{'case':<52}{'plain ms':>10}{'auto ms':>10}{'ratio':>8}  precision        rel.err(plain)  rel.err(naive cond(G^3))")
    for name, x in cases:
        tp, plain = best_of(lambda: plain_float64(x), args.repeats)
        ta, auto = best_of(lambda: condition_numbers(x, powers=(1, 3)), args.repeats)
        ref = float(auto["pseudo_kappa_G3"])
        g = x @ x.T
        naive = np.linalg.cond(g @ g @ g) if x.shape[0] <= 1000 else float("nan")
        print(f"{name:<52}{tp * 1e3:>10.3f}{ta * 1e3:>10.3f}{ta / tp:>8.2f}  {auto['precision']:<16} "
              f"{abs(plain - ref) / ref:>14.2e}  {abs(naive - ref) / ref:>14.2e}")


if __name__ == "__main__":
    main()
