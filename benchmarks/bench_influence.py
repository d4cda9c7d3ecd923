"""Closed-form leave-one-out influence against brute-force KRR refits, in one process.

Targets at n = 500: speedup >= 100x, max_rel_diff <= 1e-8. Same as
``malleability bench influence --n 500``.

    python benchmarks/bench_influence.py [--n 500] [--n-test 100] [--outputs 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json

from malleability.empirics.influence import benchmark_loo


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--outputs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    res = benchmark_loo(args.n, args.n_test, args.outputs, repeats=args.repeats, seed=args.seed)
    print(json.dumps(res, indent=2))
    ok = res["speedup"] >= 100 and res["max_rel_diff"] <= 1e-8
    print(f"n={res['n']}: closed form {res['closed_form_s'] * 1e3:.1f} ms, {res['n']} refits "
          f"{res['bruteforce_s']:.2f} s, speedup {res['speedup']:.0f}x, max_rel_diff {res['max_rel_diff']:.2e} "
          f"({'meets' if ok else 'misses'} the n=500 targets: >= 100x, <= 1e-8)")


if __name__ == "__main__":
    main()
