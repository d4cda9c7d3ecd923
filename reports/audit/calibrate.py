"""Refitting the cost model: time scaled-down cells of every kind on one thread and fit the coefficients.

    python -c "from malleability.reports.audit.calibrate import calibrate; print(calibrate()['coefficients'])"
"""

from __future__ import annotations

import time

from malleability.reports.audit.cost_model import COEFFICIENTS, cell_seconds, features, precision_factor


def time_cells(cells) -> list[float]:
    """Seconds of each cell run in this process (the caller sets the thread count)."""
    out = []
    for cell in cells:
        t = time.perf_counter()
        cell.fn(cell.config)
        out.append(time.perf_counter() - t)
    return out


def fit(cells, seconds) -> dict[str, tuple[float, ...]]:
    """Non-negative least squares of the seconds on the features, per kind (kinds not timed keep their constants).

    Rows are weighted by 1/seconds so the fit is in relative error: a cheap cell counts as much
    as a costly one. A cell trained in float64 counts in float32 seconds (divided by its precision factor).
    """
    import numpy as np
    from scipy.optimize import nnls

    out = dict(COEFFICIENTS)
    for kind in {c.kind for c in cells}:
        rows = [(features(c), s / precision_factor(c)) for c, s in zip(cells, seconds) if c.kind == kind]
        A = np.array([f for f, _ in rows], dtype=float)
        b = np.array([s for _, s in rows], dtype=float)
        w = 1.0 / np.maximum(b, 1e-3)
        scale = np.maximum(A.max(axis=0), 1e-300)  # columns of very different magnitude
        x, _ = nnls(A / scale * w[:, None], b * w)
        out[kind] = tuple(float(v) for v in x / scale)
    return out


def calibration_cells(data_root: str | None = None) -> list:
    """Scaled-down cells of every kind: theory, widths, ntk-distance, flip-rate (plain, adversarial, null floor)."""
    from malleability.reports.audit.plan import plan_cells
    from malleability.reports.audit.scales import get_scale

    cells = []
    # epochs high enough that per-step costs separate from per-flop ones (they dominate small widths at 500 epochs)
    sizes = [("ntk.n=48", "ntk.widths=16,256", "ntk.epochs=60", "flip.n=60", "flip.width=16", "flip.epochs=40"),
             ("ntk.n=120", "ntk.widths=64,1024", "ntk.epochs=25", "flip.n=150", "flip.width=128", "flip.epochs=20",
              "ntk.tasks=mnist,cifar10", "flip.tasks_10class=mnist,cifar10"),
             ("ntk.n=300", "ntk.widths=16,512", "ntk.epochs=20", "flip.n=300", "flip.width=256", "flip.epochs=10")]
    for i, size in enumerate(sizes):
        over = [*size, "flip.adv_training=true", "flip.adv_train_steps=3", "flip.null_eps=" + ("1e-6" if i != 1 else "none"),
                "flip.attacks=fgsm,noise", "ntk.protocols=paper,lazy", "flip.protocols=paper,lazy",
                "widths.n=" + ("20,40" if i == 0 else "100,300"),
                "k_layer.n=" + ("8,12" if i == 0 else "20,30,150" if i == 1 else "40,120"), "k_layer.measure_max_n=40",
                # both row lengths: the float64 features and the exact Gram scale with d
                "k_layer.datasets=" + ("mnist,cifar10" if i == 1 else "mnist")]
        plan = plan_cells(get_scale("tiny", over), data_root=data_root)
        cells.extend(c for c in plan.cells if c.kind != "theory" or i == 0)
    return cells


def calibrate(data_root: str | None = None) -> dict:
    """Time the calibration cells on one thread and fit the coefficients: {coefficients, cells, seconds}."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cells = calibration_cells(data_root)
        time_cells(cells[:3])  # warm-up: imports, data loading and first-call allocations are not a cell's cost
        seconds = time_cells(cells)
    finally:
        torch.set_num_threads(threads)
    coef = fit(cells, seconds)
    return {"coefficients": coef, "cells": [c.describe() for c in cells], "seconds": seconds,
            "predicted": [cell_seconds(c, coef) for c in cells]}
