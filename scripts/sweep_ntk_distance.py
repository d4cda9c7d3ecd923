#!/usr/bin/env python
"""Full-scale NTK-distance sweep (paper protocol): runs unchanged on a GPU (``--device auto``).

Defaults reproduce the paper's Table 1 grid: widths 4..4096 (powers of 2), both models,
500 epochs, Adam lr 1e-3, batch 128, weight decay 1e-3, init N(0, 0.01²). Each finished cell
is appended as one JSON line to ``--out`` (flushed), so an interrupted sweep loses nothing;
rerunning the same command skips the cells already in the file. At the end the slopes and
mean/spread summary are written to ``<out>.summary.json``.

Example (GPU):
    python scripts/sweep_ntk_distance.py --dataset mnist --n 1000 --seeds 3 --out results/ntk_mnist.jsonl
Scaled-down check (CPU):
    python scripts/sweep_ntk_distance.py --dataset mnist --n 200 --widths 16,64 --seeds 1 --epochs 2 --out /tmp/x.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--classes", default=None)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--widths", default="default", help="comma list, or 'default' = 4..4096")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--models", default="relu,mlp-attn")
    p.add_argument("--protocol", default="paper", choices=["paper", "lazy"])
    p.add_argument("--epochs", type=int, default=None, help="default: the protocol's (500)")
    p.add_argument("--loss", default="auto", choices=["auto", "ce", "mse-ovr", "mse"])
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--kernel-points", type=int, default=None)
    p.add_argument("--function-kernel", default="infinite", choices=["infinite", "init"])
    p.add_argument("--out", required=True, help="JSONL file, appended cell by cell")
    args = p.parse_args(argv)

    from malleability.empirics.data import DataConfig, load_dataset, parse_classes
    from malleability.empirics.ntk_distance import fit_slopes, parse_widths, run_ntk_distance_cell, summarise, sweep_configs
    from malleability.empirics.training import TrainConfig, resolve_device
    from malleability.errors import MalleabilityError
    from malleability.provenance import provenance

    try:
        data = DataConfig(dataset=args.dataset, n=args.n, n_test=args.n_test,
                          classes=parse_classes(args.classes, args.dataset), seed=args.data_seed, data_root=args.data_root)
        load_dataset(data)
        train = TrainConfig(protocol=args.protocol, epochs=args.epochs, loss=args.loss,
                            device=resolve_device(args.device), dtype=args.dtype)
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        configs = sweep_configs(data, train, models, parse_widths(args.widths), args.seeds,
                                kernel_points=args.kernel_points, function_kernel=args.function_kernel)
    except MalleabilityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    rows, done = [], set()
    if os.path.exists(args.out):
        with open(args.out) as fh:
            for line in fh:
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by an interruption: that cell is rerun
                    rows.append(row)
                    done.add(json.dumps(row["config"], sort_keys=True))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    todo = [c for c in configs if json.dumps(c.to_dict(), sort_keys=True) not in done]
    print(f"{len(configs)} cells, {len(configs) - len(todo)} already done, device {train.device}", file=sys.stderr)
    t0 = time.perf_counter()
    with open(args.out, "a") as fh:
        for i, cfg in enumerate(todo):
            print(f"[{i + 1}/{len(todo)}] {cfg.model} width={cfg.width} seed={cfg.train.seed} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            row = run_ntk_distance_cell(cfg)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            rows.append(row)
    keys = {json.dumps(c.to_dict(), sort_keys=True) for c in configs}
    mine = [r for r in rows if json.dumps(r["config"], sort_keys=True) in keys]
    summary = {"slopes": fit_slopes(mine), "summary": summarise(mine), "n_rows": len(mine), "provenance": provenance()}
    with open(args.out + ".summary.json", "w") as fh:
        json.dump(summary, fh, indent=1)
    for ds_name, by_model in summary["slopes"].items():
        for model, fits in by_model.items():
            for name, fit in fits.items():
                print(f"{ds_name} {model} {name}: slope {fit['slope']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
