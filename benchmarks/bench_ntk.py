#!/usr/bin/env python
"""Closed-form empirical NTK vs the torch.func reference, its matmul floor and neural-tangents.

Goals at n=1024, d=784, m=4096, float64, 1 and 2 threads: ratio_to_floor <= 1.2,
speedup_vs_neural_tangents >= 1.5 (where jax and neural-tangents are importable; run with a
Python that has them, never required by the tests) and a max relative error <= 1e-12, measured as
max_rel_error against an extended-precision oracle (max_rel_diff, against torch.func, is as large as
torch.func's own float64 rounding, reference_max_rel_error).

    python benchmarks/bench_ntk.py                      # m = 1024 and 4096, 1 and 2 threads
    python benchmarks/bench_ntk.py --m 4096 --threads 1 --json
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--m", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference-budget", type=float, default=0.0,
                   help="seconds; 0 times the reference on 128 rows and scales")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from malleability.empirics.ntk_bench import benchmark_ntk

    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for m in args.m:
            res = benchmark_ntk(1024, 784, m, args.dtype, repeats=args.repeats,
                                reference_budget_s=args.reference_budget)
            results.append(res)
            if args.json:
                continue
            nt = (f"{res['speedup_vs_neural_tangents']:.2f}x (target >= 1.5)"
                  if res["speedup_vs_neural_tangents"] is not None else f"n/a ({res['neural_tangents_reason']})")
            print(f"n=1024 d=784 m={m} {args.dtype}, {res['threads']} threads: closed form {res['closed_form_s']:.4f} s; "
                  f"speedup_vs_reference {res['speedup_vs_reference']:.0f}x; "
                  f"ratio_to_floor {res['ratio_to_floor']:.2f} (target <= 1.2); speedup_vs_neural_tangents {nt}; "
                  f"max_rel_error {res['max_rel_error']:.1e} (torch.func's own {res['reference_max_rel_error']:.1e})")
    if args.json:
        print(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
