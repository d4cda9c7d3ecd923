"""Refitting the cost model: time scaled-down cells of every kind on one thread and fit the coefficients.

    python -c "from malleability.reports.audit.calibrate import calibrate; print(calibrate()['coefficients'])"

A GPU's coefficients come from cells already run there: :func:`cells_from_rows` turns the rows of
``ntk-distance``/``flip-rate --json`` documents into priced cells and :func:`fit_device` fits them
(``scripts/gpu_slice_report.py`` prints that fit for the slices it merges).
"""

from __future__ import annotations

import time

from malleability.reports.audit.cost_model import COEFFICIENTS, DEVICE_FIT_BASE, cell_seconds, features, precision_factor


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
    out = dict(COEFFICIENTS)
    for kind in {c.kind for c in cells}:
        A, b = _design([(c, s) for c, s in zip(cells, seconds) if c.kind == kind])
        out[kind] = tuple(float(v) for v in _nnls_relative(A, b, b))
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


# --------------------------------------------------------------------------------------------
# a device's coefficients from cells measured there


def cells_from_rows(kind: str, rows: list[dict]) -> list[tuple[object, float]]:
    """(cell, seconds) for the rows of a ``malleability ntk-distance|flip-rate --json`` document.

    Each row's config is rebuilt from the row's own fields (data set, sizes, protocol, model, width,
    attack, adversarial training, null floor), so :func:`features` prices it as the planner's cell of the
    same settings; its seconds are the row's ``timing_s.total`` (the cell's own computation).
    """
    from types import SimpleNamespace

    from malleability.empirics.data import DataConfig
    from malleability.empirics.experiments.flip_rate.config import FlipRateConfig
    from malleability.empirics.experiments.ntk_distance import NTKDistanceConfig
    from malleability.empirics.training import TrainConfig
    from malleability.errors import require

    require(kind in ("ntk-distance", "flip-rate"), f"no measured rows of kind {kind!r}: ntk-distance or flip-rate")
    out = []
    for row in rows:
        ts = row["train_settings"] if kind == "ntk-distance" else row["train"]
        train = TrainConfig(protocol=ts["protocol"], epochs=int(ts["epochs"]), seed=int(ts["seed"]),
                            device=ts["device"], dtype=ts["dtype"], batch_size=ts["batch_size"])
        data = DataConfig(dataset=row["dataset"], n=int(row["n_train"]), n_test=int(row["n_test"]),
                          classes=row.get("classes"), seed=int(row.get("data_seed", 0)))
        if kind == "ntk-distance":
            cfg = NTKDistanceConfig(data=data, train=train, model=row["model"],
                                    model_options=row.get("model_options") or {}, width=int(row["width"]))
        else:
            adv = row.get("adv_train_params") or {}
            floor = row.get("numerical_floor") or {}
            cfg = FlipRateConfig(data=data, train=train, model=row["model"], model_options=row.get("model_options") or {},
                                 attack=row["attack"], eps=float(row["eps"]), width=int(row["width"]),
                                 adv_train=bool(row["adv_train"]), adv_train_steps=int(adv.get("steps", 10)),
                                 null_eps=floor.get("null_eps"))
        out.append((SimpleNamespace(kind=kind, config=cfg), float(row["timing_s"]["total"])))
    return out


# What each column of a kind's features prices: a cell's fixed cost ("cell"), a per-step cost of an
# optimizer or attack step ("step": dispatch- or launch-bound) or arithmetic ("work"); see cost_model.
COLUMN_CLASS = {
    "ntk-distance": ("cell", "step", "work", "work", "work", "work"),
    "flip-rate": ("cell", "step", "work", "step", "work", "work", "work", "work", "work", "work"),
}
# flip-rate columns priced by the same work in an ntk-distance cell: one training's steps and arithmetic
# (T · steps, T · n · epochs · m · d) and its kernels (T · n² · (m + d) against (n + n_test)² · (m + d)).
_FLIP_FROM_NTK = {1: 1, 2: 2, 5: 3}


def fit_device(ntk: list[tuple[object, float]], flip: list[tuple[object, float]] = (), *,
               base: dict | None = None) -> dict:
    """ntk-distance and flip-rate coefficients of a device from cells measured on it: (cell, seconds) pairs.

    ntk-distance: non-negative least squares in relative error (as :func:`fit`) on the columns its
    cells exercise. flip-rate: the training and kernel columns are the ntk-distance fit's
    (:data:`_FLIP_FROM_NTK`: the same training loop and kernels) and the fixed cost is fitted to the
    seconds those leave, since a few flip cells of one size cannot separate more. Every other column
    (trainable projections, adversarial training, transductive attention) is ``base``'s (the CPU's,
    :data:`DEVICE_FIT_BASE` by default)
    scaled by the device's measured ratio for its class (:data:`COLUMN_CLASS`): ntk-distance's step
    coefficient over the CPU's for a step column, its arithmetic coefficient over the CPU's for a work
    column. Returns {kind: coefficients, "ratios": {"step": ..., "work": ...}}.
    """
    import numpy as np

    from malleability.errors import require

    base = dict(DEVICE_FIT_BASE if base is None else base)
    ntk, flip = list(ntk), list(flip)
    require(len(ntk) >= 4, f"a device fit needs ntk-distance cells of several widths and protocols, got {len(ntk)}")
    A, b = _design(ntk)
    used = np.flatnonzero(np.abs(A).max(axis=0) > 0)
    require(1 in used and 2 in used, "the ntk-distance cells exercise no training steps")
    cpu = np.array(base["ntk-distance"], dtype=float)
    fitted = np.zeros(len(cpu))
    fitted[used] = _nnls_relative(A[:, used], b, b)
    require(cpu[1] > 0 and cpu[2] > 0, "the base coefficients price no training steps")
    ratios = {"step": float(fitted[1] / cpu[1]), "work": float(fitted[2] / cpu[2])}
    scale = {"cell": 1.0, **ratios}
    ntk_coef = [float(fitted[j]) if j in used else float(cpu[j] * scale[cls])
                for j, cls in enumerate(COLUMN_CLASS["ntk-distance"])]
    out = {"ntk-distance": tuple(ntk_coef), "ratios": ratios}
    if flip:
        cpu_flip = base["flip-rate"]
        coef = [float(ntk_coef[_FLIP_FROM_NTK[j]]) if j in _FLIP_FROM_NTK else float(cpu_flip[j] * scale[cls])
                for j, cls in enumerate(COLUMN_CLASS["flip-rate"])]
        A, b = _design(flip)
        rest = b - A[:, 1:] @ np.array(coef[1:])
        coef[0] = float(_nnls_relative(A[:, :1], rest, b)[0])
        out["flip-rate"] = tuple(coef)
    return out


def _design(pairs):
    """Feature rows and float32-equivalent seconds of (cell, seconds) pairs."""
    import numpy as np

    A = np.array([features(c) for c, _ in pairs], dtype=float)
    b = np.array([s / precision_factor(c) for c, s in pairs], dtype=float)
    return A, b


def _nnls_relative(A, rhs, seconds):
    """argmin over x >= 0 of Σ ((A x - rhs) / seconds)²: each cell counts by its relative error."""
    import numpy as np
    from scipy.optimize import nnls

    w = 1.0 / np.maximum(seconds, 1e-3)
    scale = np.maximum(A.max(axis=0), 1e-300)  # columns of very different magnitude
    x, _ = nnls(A / scale * w[:, None], rhs * w)
    return x / scale
