#!/usr/bin/env python
"""Closed-form empirical NTK vs the torch.func Jacobian contraction, same inputs, one process.

Targets (issue 3): at n=1024, d=784, m=1024, float64, on 2 cores the closed form is >= 50x
faster than the reference with max_rel_diff <= 1e-10; at m=4096 the closed form runs within
3x of its own matrix products' floor at this machine's measured GEMM rate.

    python benchmarks/bench_ntk.py            # both configurations, prints the numbers
    python benchmarks/bench_ntk.py --json
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference-budget", type=float, default=60.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from malleability.empirics.ntk import benchmark_ntk

    torch.set_num_threads(args.threads)
    results = []
    for m in (1024, 4096):
        res = benchmark_ntk(1024, 784, m, "float64", repeats=args.repeats,
                            reference_budget_s=args.reference_budget if m == 1024 else 0.0)
        results.append(res)
        if not args.json:
            scaled = f" (scaled from a {res['reference_scaled_from_rows']}-row block)" if res["reference_scaled_from_rows"] else ""
            print(f"n=1024 d=784 m={m} float64, {res['threads']} threads: closed form {res['closed_form_s']:.4f} s, "
                  f"reference {res['reference_s']:.2f} s{scaled}, speedup {res['speedup']:.0f}x (target >= 50), "
                  f"max_rel_diff {res['max_rel_diff']:.1e} (target <= 1e-10)")
            print(f"    matmul floor {res['matmul_floor_s']:.4f} s at {res['gemm_gflops']:.1f} GFLOP/s; "
                  f"closed form / floor = {res['closed_form_over_floor']:.2f} (target <= 3 at m=4096)")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
