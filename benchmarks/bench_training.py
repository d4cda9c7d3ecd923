#!/usr/bin/env python
"""The paper-protocol training step against its matmul floor, and batched seeds against a per-seed loop.

Goals: at n = 600, batch 128, Adam, 5 seeds, one thread, each step within 1.3x of its own
matrix products timed alone, and >= 1.5x from batching the seeds at m = 16. The machine may
be shared: the whole measurement is repeated ``--rounds`` times and each number's median kept.

    python benchmarks/bench_training.py                 # m = 16, 256, 4096
    python benchmarks/bench_training.py --widths 16,64 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

KEYS = ("step_s", "reference_step_s", "batched_step_s", "floor_s", "ratio_to_floor", "reference_ratio_to_floor",
        "speedup_batched", "speedup_batched_vs_reference")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--widths", default="16,256,4096")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from malleability.empirics.training_batched import benchmark_training

    torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    rounds = [benchmark_training(widths, epochs=args.epochs) for _ in range(max(1, args.rounds))]
    rows = []
    for i, m in enumerate(widths):
        row = {"width": m}
        for k in KEYS:
            vals = [r["widths"][i][k] for r in rounds if r["widths"][i][k] is not None]
            row[k] = statistics.median(vals) if vals else None
            row[k + "_all"] = vals
        rows.append(row)
    if args.json:
        print(json.dumps({"threads": args.threads, "rounds": len(rounds), "widths": rows}, indent=1))
        return 0
    for r in rows:
        print(f"m={r['width']}: ratio_to_floor {r['ratio_to_floor']:.2f} (goal <= 1.3; train_model "
              f"{r['reference_ratio_to_floor']:.2f}), speedup_batched {r['speedup_batched']:.2f}x "
              f"(goal >= 1.5 at m=16), medians of {len(rounds)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
