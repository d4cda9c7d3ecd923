"""The audit: scales, the list of cells per scale, orchestration, summaries and verdicts.

``run_audit`` plans every cell of a :class:`Scale` (theory claims, κ of the data sets,
NTK distance vs width, flip-rate tables), runs them through an executor with the on-disk
cache (:mod:`malleability.reports.cache`), writes ``results.json`` atomically and renders
the report (:mod:`malleability.reports.render`).

Cell kinds (each a top-level function of a frozen config, so picklable for any executor):

* ``theory``  -> ``malleability.theory.check_claims([claim], profile)`` (helper T)
* ``kappa``   -> ``malleability.empirics.widths.width_report(data, eps)`` (helper E1);
  falls back to ``malleability.theory.conditioning.condition_numbers`` on the unit-row
  data and the attention features when ``widths`` is not available
* ``ntk``     -> ``malleability.empirics.ntk_distance.run_ntk_distance_cell`` (helper E1)
* ``flip``    -> ``malleability.empirics.malleability.run_flip_rate_cell`` (helper E2)

A kind whose module cannot be imported is not run: its cells appear in the report as
missing, with the reason. A cell that raises is also shown as missing, with its error.

Scales: ``quick`` (CI-sized), ``default`` (the CPU reference run), ``paper`` (the paper's
widths and sizes, for a GPU), and the hidden ``tiny`` (tests only). Any field of a scale
can be changed with the hidden CLI option ``--override field=value`` (repeatable; tuples
as comma lists), which is recorded in results.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from malleability.errors import MalleabilityError, require
from malleability.reports import paper_numbers as P
from malleability.reports.cache import CellCache, atomic_write_json, code_version, config_to_jsonable
from malleability.reports.executor import Cell, default_workers, make_executor, run_cells

SCHEMA = "malleability-audit/1"
CLAIM_IDS = ("thm4.1", "thm4.7", "thm4.7-width", "k-layer", "prop4.5")

# Task name -> (dataset, classes as spec). Binary tasks follow the paper's Table 3.
TASKS = {
    "mnist": ("mnist", None),
    "cifar10": ("cifar10", None),
    "fashion-mnist": ("fashion-mnist", None),
    "mnist-3v8": ("mnist", "3,8"),
    "cifar10-cars-planes": ("cifar10", "automobile,airplane"),
}


def _h(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class Scale:
    """How big an audit is. Every field is recorded in results.json."""

    name: str = field(metadata=_h("scale name"))
    description: str = field(default="", metadata=_h("what this scale is for"))
    theory_profile: str = field(default="quick", metadata=_h("profile passed to theory.check_claims"))
    theory_claims: tuple[str, ...] = field(default=CLAIM_IDS, metadata=_h("claim ids checked (one cell each)"))
    kappa_tasks: tuple[str, ...] = field(default=("mnist", "fashion-mnist", "cifar10"), metadata=_h("data sets whose κ is measured"))
    kappa_n: tuple[int, ...] = field(default=(500, 1000), metadata=_h("training-set sizes n at which κ is measured"))
    width_eps: float = field(default=0.1, metadata=_h("ε in the predicted width m = Ω(κ⁶/ε²)"))
    ntk_tasks: tuple[str, ...] = field(default=("mnist", "cifar10"), metadata=_h("data sets of the NTK-distance sweep"))
    ntk_n: int = field(default=256, metadata=_h("training samples of the NTK-distance sweep"))
    ntk_n_test: int = field(default=128, metadata=_h("test samples of the NTK-distance sweep"))
    ntk_widths: tuple[int, ...] = field(default=(16, 64, 256, 1024), metadata=_h("widths m of the sweep"))
    ntk_seeds: int = field(default=2, metadata=_h("seeds per (model, data set, width)"))
    ntk_epochs: int = field(default=20, metadata=_h("training epochs (paper: 500)"))
    ntk_protocol: str = field(default="paper", metadata=_h("'paper' (Adam) or 'lazy' (full-batch GD, NTK init)"))
    flip_tasks_10class: tuple[str, ...] = field(default=("mnist", "cifar10"), metadata=_h("Table 2 data sets"))
    flip_tasks_binary: tuple[str, ...] = field(default=("mnist-3v8", "cifar10-cars-planes"), metadata=_h("Table 3 tasks"))
    flip_attacks: tuple[str, ...] = field(default=("fgsm", "pgd", "mim", "noise"), metadata=_h(
        "attacks of Tables 2 and 3; 'noise' is our control (random signs of the same ℓ∞ budget, no model), "
        "never part of a verdict"))
    flip_eps: float = field(default=0.3, metadata=_h("ℓ∞ budget ε (paper: 0.3)"))
    flip_n: int = field(default=500, metadata=_h("training samples of the flip-rate cells"))
    flip_n_test: int = field(default=100, metadata=_h("test samples of the flip-rate cells"))
    flip_width: int = field(default=256, metadata=_h("network width m of the flip-rate cells"))
    flip_epochs: int = field(default=10, metadata=_h("training epochs of the flip-rate cells (paper: 500)"))
    flip_seeds: int = field(default=3, metadata=_h("seeds per flip-rate cell"))
    flip_adv_training: bool = field(default=True, metadata=_h("run Table 4 (PGD adversarial training vs standard)"))
    flip_eps_sweep: tuple[float, ...] = field(default=(0.1, 0.2, 0.3, 0.5), metadata=_h(
        "ℓ∞ budgets ε of the ε sweep (paper's protocol: 0.1, 0.2, 0.3, 0.5; the paper reports no numbers for it); "
        "standard training, flip_seeds seeds, the flip_* sizes; information only, never part of a verdict; empty: "
        "no sweep"))
    flip_eps_sweep_tasks: tuple[str, ...] = field(default=("mnist",), metadata=_h("data sets of the ε sweep"))
    flip_eps_sweep_attacks: tuple[str, ...] = field(default=("pgd", "noise"), metadata=_h(
        "attacks of the ε sweep ('noise': the control, so PGD's excess over noise can be read per ε)"))
    dtype: str = field(default="float32", metadata=_h("training precision"))


SCALES: dict[str, Scale] = {
    "quick": Scale(
        name="quick",
        description="CI-sized: every table at a small size, a few minutes on 2 cores; trends only",
        kappa_n=(500, 1000),
        ntk_n=256,
        ntk_n_test=128,
        ntk_widths=(16, 64, 256, 1024, 4096),
        ntk_seeds=2,
        ntk_epochs=20,
        flip_n=300,
        flip_n_test=75,
        flip_width=128,
        flip_epochs=20,
        flip_seeds=3,
    ),
    "default": Scale(
        name="default",
        description="the CPU reference run (about 30-45 minutes on 2 cores)",
        kappa_n=(500, 1000, 2000),
        ntk_n=500,
        ntk_n_test=200,
        ntk_widths=(16, 64, 256, 1024, 4096),
        ntk_seeds=5,
        ntk_epochs=30,
        # Fashion-MNIST: the paper's supplement (no numbers available); shown beside Table 2
        flip_tasks_10class=("mnist", "cifar10", "fashion-mnist"),
        # n + n_test <= 762: the CIFAR-10 cars-vs-planes images of the offline 4000-image subset
        flip_n=600,
        flip_n_test=150,
        flip_width=256,
        flip_epochs=25,
        flip_seeds=4,
        # ε sweep: 3 new budgets (ε = 0.3 is Table 2's cells) x pgd,noise x 2 models x 4 seeds x 2 data sets
        # = 96 cells, about 0.6 s (MNIST) / 2.7 s (CIFAR-10) each in the reference run: ~1.5 min on 2 cores
        flip_eps_sweep_tasks=("mnist", "cifar10"),
    ),
    "paper": Scale(
        name="paper",
        description="the paper's widths (4..4096) and protocol (500 epochs); meant for a GPU and the full data sets",
        theory_profile="thorough",
        kappa_n=(1000, 2000, 4000),
        ntk_n=1000,
        ntk_n_test=500,
        ntk_widths=(4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
        ntk_seeds=5,
        ntk_epochs=500,
        flip_tasks_10class=("mnist", "cifar10", "fashion-mnist"),
        flip_n=1000,
        flip_n_test=200,
        flip_width=1024,
        flip_epochs=500,
        flip_seeds=5,
        flip_eps_sweep_tasks=("mnist", "cifar10"),
    ),
    # Hidden (not in --help): the smallest audit that still runs every real cell, for tests.
    "tiny": Scale(
        name="tiny",
        description="tests only: every kind of cell at a toy size; numbers mean nothing",
        theory_claims=("thm4.1",),
        kappa_tasks=("mnist",),
        kappa_n=(20, 40),
        ntk_tasks=("mnist",),
        ntk_n=24,
        ntk_n_test=8,
        ntk_widths=(8, 32),
        ntk_seeds=1,
        ntk_epochs=1,
        flip_tasks_10class=("mnist",),
        flip_tasks_binary=(),
        flip_attacks=("fgsm", "noise"),
        flip_n=30,
        flip_n_test=6,
        flip_width=16,
        flip_epochs=1,
        flip_seeds=1,
        flip_adv_training=False,
        flip_eps_sweep=(0.1, 0.3),  # 0.3 is already a Table 2 cell: one new cell per model
        flip_eps_sweep_attacks=("noise",),
    ),
}
PUBLIC_SCALES = ("quick", "default", "paper")


def scale_help() -> dict[str, dict[str, str]]:
    """Each field of Scale with its help text (for docs and results.json)."""
    return {f.name: {"help": f.metadata.get("help", ""), "type": str(f.type)} for f in dataclasses.fields(Scale)}


def _coerce(value: str, current: Any, name: str) -> Any:
    try:
        if isinstance(current, bool):
            low = value.strip().lower()
            require(low in ("1", "0", "true", "false", "yes", "no"), f"--override {name}: expected true/false, got {value!r}")
            return low in ("1", "true", "yes")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):
            items = [v.strip() for v in value.split(",") if v.strip()]
            if current and isinstance(current[0], int):
                return tuple(int(v) for v in items)
            if current and isinstance(current[0], float) or name.endswith("_sweep"):
                return tuple(float(v) for v in items)
            if name.endswith(("_n", "_widths")):
                return tuple(int(v) for v in items)
            return tuple(items)
        return value
    except ValueError:
        raise MalleabilityError(f"--override {name}={value}: cannot parse as {type(current).__name__}") from None


def get_scale(name: str, overrides: tuple[str, ...] | list[str] = ()) -> Scale:
    """The named scale with ``field=value`` overrides applied and validated."""
    require(name in SCALES, f"unknown scale {name!r}: choose one of {', '.join(PUBLIC_SCALES)}")
    scale = SCALES[name]
    names = {f.name for f in dataclasses.fields(Scale)}
    changes: dict[str, Any] = {}
    for item in overrides:
        require("=" in item, f"--override expects field=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        require(key in names and key != "name", f"--override: unknown scale field {key!r}")
        changes[key] = _coerce(value, getattr(scale, key), key)
    scale = dataclasses.replace(scale, **changes)
    validate_scale(scale)
    return scale


def validate_scale(scale: Scale) -> None:
    for claim in scale.theory_claims:
        require(claim in CLAIM_IDS, f"unknown claim id {claim!r}: choose from {', '.join(CLAIM_IDS)}")
    for task in (*scale.kappa_tasks, *scale.ntk_tasks, *scale.flip_tasks_10class, *scale.flip_tasks_binary,
                 *scale.flip_eps_sweep_tasks):
        require(task in TASKS, f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    for name in ("ntk_n", "ntk_seeds", "ntk_epochs", "flip_n", "flip_width", "flip_epochs", "flip_seeds"):
        require(getattr(scale, name) >= 1, f"{name} must be >= 1, got {getattr(scale, name)}")
    require(all(m >= 1 for m in scale.ntk_widths), "widths must be >= 1")
    require(all(n >= 2 for n in scale.kappa_n), "kappa_n values must be >= 2")
    require(math.isfinite(scale.flip_eps) and scale.flip_eps >= 0, f"flip_eps must be >= 0 and finite, got {scale.flip_eps}")
    for eps in scale.flip_eps_sweep:
        require(math.isfinite(eps) and eps >= 0, f"flip_eps_sweep values must be finite and >= 0, got {eps}")
    require(len(set(scale.flip_eps_sweep)) == len(scale.flip_eps_sweep), f"repeated ε in flip_eps_sweep {scale.flip_eps_sweep}")
    if scale.flip_eps_sweep_attacks:
        from malleability.empirics.attacks import ATTACK_NAMES

        for attack in scale.flip_eps_sweep_attacks:
            require(attack in ATTACK_NAMES, f"unknown attack {attack!r} in flip_eps_sweep_attacks: choose from "
                    f"{', '.join(ATTACK_NAMES)}")
    require(scale.width_eps > 0, f"width_eps must be > 0, got {scale.width_eps}")
    require(scale.theory_profile in ("quick", "thorough"), f"theory_profile must be quick or thorough, got {scale.theory_profile!r}")
    require(scale.ntk_protocol in ("paper", "lazy"), f"ntk_protocol must be paper or lazy, got {scale.ntk_protocol!r}")
    require(scale.dtype in ("float32", "float64"), f"dtype must be float32 or float64, got {scale.dtype!r}")


# --------------------------------------------------------------------------- cell kinds


@dataclass(frozen=True)
class TheoryCellConfig:
    claim: str = field(metadata=_h("claim id"))
    profile: str = field(default="quick", metadata=_h("check_claims profile"))


@dataclass(frozen=True)
class KappaCellConfig:
    data: Any = field(metadata=_h("DataConfig of the data set (n = the largest size)"))
    eps: float = field(default=0.1, metadata=_h("ε of the predicted width"))
    task: str = field(default="", metadata=_h("task name"))
    ns: tuple[int, ...] = field(default=(), metadata=_h("sizes n (prefixes of the seeded subset) at which κ is measured"))


def run_theory_cell(cfg: TheoryCellConfig) -> dict:
    from malleability.theory import check_claims

    results = check_claims([cfg.claim], profile=cfg.profile)
    require(len(results) == 1, f"check_claims returned {len(results)} results for {cfg.claim}")
    return config_to_jsonable(results[0].to_dict())


def _as_float(value) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f


def run_kappa_cell(cfg: KappaCellConfig) -> dict:
    """κ of the data as each model sees it (per n), and the widths the paper's formulas predict."""
    from malleability.empirics.widths import width_report

    rep = width_report(cfg.data, cfg.eps, ns=cfg.ns or None)
    return {"source": "empirics.widths.width_report", "report": config_to_jsonable(rep)}


def run_ntk_cell(cfg) -> dict:
    from malleability.empirics.ntk_distance import run_ntk_distance_cell

    return config_to_jsonable(run_ntk_distance_cell(cfg))


def run_flip_cell(cfg) -> dict:
    from malleability.empirics.malleability import run_flip_rate_cell

    return config_to_jsonable(run_flip_rate_cell(cfg))


KIND_MODULES = {
    "theory": "malleability.theory",
    "kappa": "malleability.empirics.widths",
    "ntk": "malleability.empirics.ntk_distance",
    "flip": "malleability.empirics.malleability",
}


def _kind_available(kind: str) -> str | None:
    """None when the kind can run, else why not."""
    import importlib

    try:
        module = importlib.import_module(KIND_MODULES[kind])
    except ImportError as exc:
        return f"{KIND_MODULES[kind]} is not available ({exc})"
    needed = {"theory": "check_claims", "ntk": "run_ntk_distance_cell", "flip": "run_flip_rate_cell", "kappa": "width_report"}[kind]
    if not hasattr(module, needed):
        return f"{KIND_MODULES[kind]}.{needed} is not available"
    return None


# --------------------------------------------------------------------------- planning


def _data_config(task: str, n: int, n_test: int, seed: int, data_root: str | None):
    from malleability.empirics.data import DataConfig, parse_classes

    dataset, spec = TASKS[task]
    return DataConfig(dataset=dataset, n=n, n_test=n_test, classes=parse_classes(spec, dataset), seed=seed,
                      data_root=data_root)


def _train_config(scale: Scale, epochs: int, seed: int, device: str, protocol: str = "paper"):
    from malleability.empirics.training import TrainConfig

    return TrainConfig(protocol=protocol, epochs=epochs, seed=seed, device=device, dtype=scale.dtype)


@dataclass
class Plan:
    cells: list[Cell]
    missing: list[dict]  # {kind, label, why}


def plan_cells(scale: Scale, *, device: str = "cpu", data_root: str | None = None) -> Plan:
    """Every cell of a scale (pure: builds configs, runs nothing)."""
    cells: list[Cell] = []
    missing: list[dict] = []

    def unavailable(kind: str, labels: list[str]) -> bool:
        why = _kind_available(kind)
        if why is not None:
            missing.extend({"kind": kind, "label": label, "why": why} for label in labels)
            return True
        return False

    # theory
    labels = [f"theory {c}" for c in scale.theory_claims]
    if not unavailable("theory", labels):
        for claim, label in zip(scale.theory_claims, labels):
            cells.append(Cell("theory", TheoryCellConfig(claim, scale.theory_profile), run_theory_cell, label,
                              tags={"claim": claim}))
    # kappa
    labels = [f"kappa {t} n={','.join(map(str, scale.kappa_n))}" for t in scale.kappa_tasks]
    if not unavailable("kappa", labels):
        for task, label in zip(scale.kappa_tasks, labels):
            cfg = KappaCellConfig(_data_config(task, max(scale.kappa_n), 0, 0, data_root), scale.width_eps, task,
                                  tuple(sorted(scale.kappa_n)))
            cells.append(Cell("kappa", cfg, run_kappa_cell, label, tags={"task": task}))
    # ntk
    combos = [(t, model, m, s) for t in scale.ntk_tasks for model in ("relu", "mlp-attn")
              for m in scale.ntk_widths for s in range(scale.ntk_seeds)]
    labels = [f"ntk {t} {model} m={m} seed={s}" for t, model, m, s in combos]
    if not unavailable("ntk", labels):
        from malleability.empirics.ntk_distance import NTKDistanceConfig

        for (task, model, m, s), label in zip(combos, labels):
            cfg = NTKDistanceConfig(
                data=_data_config(task, scale.ntk_n, scale.ntk_n_test, s, data_root),
                train=_train_config(scale, scale.ntk_epochs, s, device, scale.ntk_protocol),
                model=model,
                width=m,
            )
            cells.append(Cell("ntk", cfg, run_ntk_cell, label,
                              tags={"task": task, "model": model, "width": m, "seed": s}))
    # flip rates: Table 2, Table 3 (standard training), Table 4 (PGD with adversarial training)
    combos = []
    for table, tasks in (("table2", scale.flip_tasks_10class), ("table3", scale.flip_tasks_binary)):
        for task in tasks:
            for attack in scale.flip_attacks:
                combos.extend((table, task, attack, False, model, s) for model in ("relu", "mlp-attn")
                              for s in range(scale.flip_seeds))
    if scale.flip_adv_training:
        for task in scale.flip_tasks_10class:
            combos.extend(("table4", task, "pgd", True, model, s) for model in ("relu", "mlp-attn")
                          for s in range(scale.flip_seeds))
    combos = [(*c, scale.flip_eps) for c in combos]
    # the ε sweep (standard training; no paper numbers): its ε = flip_eps cells of Table 2's tasks and attacks
    # are Table 2's own cells (same config, same cache key), so they are planned once, under Table 2
    for task in scale.flip_eps_sweep_tasks:
        for eps in scale.flip_eps_sweep:
            for attack in scale.flip_eps_sweep_attacks:
                combos.extend(("eps-sweep", task, attack, False, model, s, float(eps)) for model in ("relu", "mlp-attn")
                              for s in range(scale.flip_seeds))
    seen: set = set()
    unique = []
    for c in combos:
        ident = c[1:]  # (task, attack, adv, model, seed, eps) fixes the config; the table is only a tag
        if ident not in seen:
            seen.add(ident)
            unique.append(c)
    combos = unique
    labels = [f"flip {task} {model} {attack}{' adv-train' if adv else ''}"
              f"{f' eps={eps:g}' if table == 'eps-sweep' else ''} seed={s}"
              for table, task, attack, adv, model, s, eps in combos]
    if combos and not unavailable("flip", labels):
        from malleability.empirics.malleability import FlipRateConfig

        for (table, task, attack, adv, model, s, eps), label in zip(combos, labels):
            cfg = _flip_config(FlipRateConfig, scale, task, attack, adv, model, s, device, data_root, eps)
            cells.append(Cell("flip", cfg, run_flip_cell, label, tags={
                "table": table, "task": task, "attack": attack, "adv_train": adv, "model": model, "seed": s,
                "eps": eps}))
    return Plan(cells, missing)


def _flip_config(cls, scale, task, attack, adv, model, seed, device, data_root, eps=None):
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = dict(
        data=_data_config(task, scale.flip_n, scale.flip_n_test, seed, data_root),
        train=_train_config(scale, scale.flip_epochs, seed, device),
        model=model,
        attack=attack,
        eps=scale.flip_eps if eps is None else eps,
    )
    if "adv_train" in names:
        kwargs["adv_train"] = adv
    if "width" in names:
        kwargs["width"] = scale.flip_width
    return cls(**{k: v for k, v in kwargs.items() if k in names})


# Rough seconds per cell on one core of this kind of machine, for the up-front estimate only.
_COST_S = {"theory": 5.0, "kappa": 10.0}


def _dim(cfg) -> int:
    return 3072 if cfg.data.dataset == "cifar10" else 784


def estimate_seconds(cells: list[Cell], workers: int) -> float:
    """A rough CPU estimate from timings measured on this project's 2-core machine (one thread per cell)."""
    total = 0.0
    for cell in cells:
        cfg = cell.config
        if cell.kind in _COST_S:
            total += _COST_S[cell.kind]
        elif cell.kind == "ntk":
            total += 0.3 + 2.5e-10 * cfg.data.n * (cfg.train.epochs or 500) * cfg.width * _dim(cfg)
        elif cell.kind == "flip":
            rate = 1.4e-8 if getattr(cfg, "adv_train", False) else 6e-10
            total += 0.3 + rate * cfg.data.n * (cfg.train.epochs or 500) * getattr(cfg, "width", 256) * _dim(cfg)
        else:
            total += 5.0
    return total / max(1, workers)


# --------------------------------------------------------------------------- summaries


def _t975(df: int) -> float:
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
    return table.get(df, 1.96 if df > 30 else 2.042 if df > 20 else 2.1)


def describe(values: list[float]) -> dict:
    """Mean, sample std and a 95% t-interval over seeds (interval null with one seed)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    k = len(vals)
    if k == 0:
        return {"n_seeds": 0, "mean": None, "std": None, "ci95": None, "values": []}
    mean = sum(vals) / k
    if k == 1:
        return {"n_seeds": 1, "mean": mean, "std": None, "ci95": None, "values": vals}
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (k - 1))
    half = _t975(k - 1) * std / math.sqrt(k)
    return {"n_seeds": k, "mean": mean, "std": std, "ci95": [mean - half, mean + half], "values": vals}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if b == 0:
        return math.inf if a > 0 else None
    return a / b


def ratio_interval(num: list[float], den: list[float], *, seed: int = 0, draws: int = 2000) -> list[float] | None:
    """95% percentile bootstrap interval of mean(num)/mean(den), resampling seeds (seeded)."""
    import random

    if len(num) < 2 or len(den) < 2:
        return None
    rng = random.Random(seed)
    out = []
    for _ in range(draws):
        a = sum(rng.choice(num) for _ in num) / len(num)
        b = sum(rng.choice(den) for _ in den) / len(den)
        if b > 0:
            out.append(a / b)
    if len(out) < draws // 2:
        return None
    out.sort()
    return [out[int(0.025 * len(out))], out[int(0.975 * len(out)) - 1]]


def _fit(widths: list[float], values: list[float]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept) of log value against log width."""
    pts = [(math.log(w), math.log(v)) for w, v in zip(widths, values) if v is not None and v > 0 and w > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return b, my - b * mx


def measured_width(fit: tuple[float, float] | None, eps: float) -> float | None:
    """Width at which the fitted power law reaches eps (None unless the distance shrinks with width)."""
    if fit is None or fit[0] >= 0:
        return None
    b, a = fit
    return math.exp((math.log(eps) - a) / b)


def _numeric_items(d: dict) -> dict[str, float]:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


def summarise_ntk(cells: list[dict]) -> dict:
    rows = [c for c in cells if c["kind"] == "ntk" and c["status"] != "failed" and c.get("result")]
    groups: dict[tuple, dict[str, list[float]]] = {}
    for c in rows:
        t = c["tags"]
        dist = _numeric_items(c["result"].get("distance", {}))
        for name, v in dist.items():
            groups.setdefault((t["task"], t["model"], name), {}).setdefault(str(t["width"]), []).append(v)
    readings = sorted({k[2] for k in groups})
    table = []
    slopes = []
    for (task, model, name), by_width in sorted(groups.items()):
        widths = sorted(int(w) for w in by_width)
        stats = {str(w): describe(by_width[str(w)]) for w in widths}
        fit = _fit(widths, [stats[str(w)]["mean"] for w in widths])
        slopes.append({"task": task, "model": model, "reading": name, "slope": fit[0] if fit else None,
                       "intercept": fit[1] if fit else None, "widths": widths})
        for w in widths:
            table.append({"task": task, "model": model, "reading": name, "width": w, **stats[str(w)],
                          "paper": P.paper_ntk_distance(model, task, w) if name == PRIMARY_NTK_READING else None})
    return {"readings": readings, "primary_reading": PRIMARY_NTK_READING, "rows": table, "slopes": slopes}


PRIMARY_NTK_READING = "after_vs_init_absolute"  # unnormalised, like the paper's magnitudes (45.1, 246.2)


def summarise_flip(cells: list[dict]) -> dict:
    rows = [c for c in cells if c["kind"] == "flip" and c["status"] != "failed" and c.get("result")]
    groups: dict[tuple, dict[str, list[float]]] = {}
    for c in rows:
        t = c["tags"]
        if t["table"] == EPS_SWEEP:  # several ε per group: summarised by summarise_eps_sweep
            continue
        key = (t["table"], t["task"], t["attack"], bool(t["adv_train"]), t["model"])
        res = c["result"]
        for metric in ("flip_rate", "spearman", "topk_overlap"):
            v = res.get(metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                groups.setdefault(key, {}).setdefault(metric, []).append(float(v))
    out = []
    for (table, task, attack, adv, model), metrics in sorted(groups.items()):
        out.append({"table": table, "task": task, "attack": attack, "adv_train": adv, "model": model,
                    **{m: describe(v) for m, v in metrics.items()}})
    flip = {"rows": out}
    flip["noise_control"] = noise_control(flip)
    return flip


EPS_SWEEP = "eps-sweep"
EPS_SWEEP_NOTE = ("ε sweep (the paper's protocol lists ε ∈ {0.1, 0.2, 0.3, 0.5} but reports no numbers for it): "
                  "standard training, same sizes and seeds as Table 2; the ε = 0.3 points are Table 2's own cells. "
                  "Information only, never part of a verdict")


def _cell_eps(c: dict) -> float | None:
    eps = c["tags"].get("eps")
    if eps is None:
        eps = (c.get("config") or {}).get("eps")
    return _as_float(eps)


def summarise_eps_sweep(cells: list[dict]) -> dict:
    """Flip rate against ε per (task, attack, model), standard training, from the cells tagged ``eps-sweep``
    plus the Table 2/3 cells (ε = flip_eps) of the same task and attack (planned once, under their table).

    Rows: mean ± spread over seeds per ε; ratios: MLP-Attn/ReLU per (task, attack, ε) with a bootstrap
    interval; excess: each attack's mean flip rate minus that of the noise control, per (task, model, ε).
    Pure function of the cell records (``report`` recomputes it for results written before the sweep).
    """
    flips = [c for c in cells if c["kind"] == "flip" and c["status"] != "failed" and c.get("result")
             and not c["tags"].get("adv_train")]
    sweep = {(c["tags"]["task"], c["tags"]["attack"]) for c in flips if c["tags"]["table"] == EPS_SWEEP}
    values: dict[tuple, list[float]] = {}
    for c in flips:
        t = c["tags"]
        if (t["task"], t["attack"]) not in sweep or t["table"] not in (EPS_SWEEP, "table2", "table3"):
            continue
        eps, v = _cell_eps(c), c["result"].get("flip_rate")
        if eps is None or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        values.setdefault((t["task"], t["attack"], t["model"], eps), []).append(float(v))
    rows = [{"task": task, "attack": attack, "model": model, "eps": eps, "flip_rate": describe(vals)}
            for (task, attack, model, eps), vals in sorted(values.items())]
    ratios, excess = [], []
    for task, attack, eps in sorted({(k[0], k[1], k[3]) for k in values}):
        num, den = values.get((task, attack, "mlp-attn", eps), []), values.get((task, attack, "relu", eps), [])
        if num and den:
            ratios.append({"task": task, "attack": attack, "eps": eps,
                           "ratio": ratio(describe(num)["mean"], describe(den)["mean"]),
                           "ci95": ratio_interval(num, den)})
        if attack == NOISE:
            continue
        for model in ("relu", "mlp-attn"):
            a, n = values.get((task, attack, model, eps)), values.get((task, NOISE, model, eps))
            if a and n:
                excess.append({"task": task, "attack": attack, "model": model, "eps": eps,
                               "excess": describe(a)["mean"] - describe(n)["mean"]})
    return {"eps": sorted({k[3] for k in values}), "rows": rows, "ratios": ratios, "excess_over_noise": excess,
            "note": EPS_SWEEP_NOTE}


NOISE = "noise"
NOISE_NOTE = ("noise control: the same rows replaced by random-sign noise of the same ℓ∞ budget (each coordinate "
              "±ε, clipped to [0, 1]; the model is never consulted), then the same retrain; not in the paper and "
              "never part of a verdict. excess = mean flip rate (attack) − mean flip rate (noise), same data set, "
              "model and table")


def noise_control(flip: dict) -> list[dict]:
    """Per (table, task) with noise cells (standard training): the noise flip rate of each model, its
    MLP-Attn/ReLU ratio, and each paper attack's excess over noise (difference of mean flip rates).

    Pure function of ``flip['rows']`` (so ``report`` can recompute it for results written before it existed).
    """
    def mean(table, task, attack, model):
        return describe(_flip_values(flip, table, task, attack, False, model))["mean"]

    out = []
    for table, task in sorted({(r["table"], r["task"]) for r in flip["rows"]
                               if r["attack"] == NOISE and not r["adv_train"]}):
        entry = {"table": table, "task": task, "noise": {}, "excess": {}}
        for model in ("relu", "mlp-attn"):
            noise = mean(table, task, NOISE, model)
            entry["noise"][model] = noise
            entry["excess"][model] = {a: (m - noise if m is not None and noise is not None else None)
                                      for a in P.ATTACKS for m in [mean(table, task, a, model)]}
        entry["noise_ratio"] = ratio(entry["noise"]["mlp-attn"], entry["noise"]["relu"])
        out.append(entry)
    return out


def _flip_values(flip: dict, table: str, task: str, attack: str, adv: bool, model: str) -> list[float]:
    for r in flip["rows"]:
        if (r["table"], r["task"], r["attack"], r["adv_train"], r["model"]) == (table, task, attack, adv, model):
            return r.get("flip_rate", {}).get("values", [])
    return []


def summarise_kappa(cells: list[dict]) -> dict:
    """Flatten κ cells into rows {task, n, features, kappa_G, pseudo_kappa_G, kappa_d, log10 predicted widths}."""
    out = []
    for c in cells:
        if c["kind"] != "kappa" or c["status"] == "failed" or not c.get("result"):
            continue
        for row in kappa_readings(c["result"]):
            out.append({"task": c["tags"]["task"], **row})
    return {"rows": out}


def kappa_readings(result: dict) -> list[dict]:
    """Rows per (n, view) from a width_report: the three κ readings and the predicted widths (as log10).

    Predicted v1 uses κ(G) when G is nonsingular, else the pseudo-κ (named in ``v1_reading``);
    v2 uses κ_d, as the paper's v2 states.
    """
    rows = []
    for entry in (result.get("report") or {}).get("per_n", []):
        for view, body in (entry.get("views") or {}).items():
            cond = body.get("conditioning", {})
            pred = body.get("predicted", {})
            v1_reading = "kappa_G" if _as_float(cond.get("log10_kappa_G")) is not None else "pseudo_kappa_G"
            rows.append({
                "n": entry.get("n"), "d": entry.get("d"), "features": view,
                "kappa_G": _as_float(cond.get("kappa_G")), "pseudo_kappa_G": _as_float(cond.get("pseudo_kappa_G")),
                "kappa_d": _as_float(cond.get("kappa_d")),
                "log10_kappa_G": _as_float(cond.get("log10_kappa_G")),
                "log10_pseudo_kappa_G": _as_float(cond.get("log10_pseudo_kappa_G")),
                "log10_kappa_d": _as_float(cond.get("log10_kappa_d")),
                "precision": cond.get("precision"), "rank": cond.get("rank"),
                "v1_reading": v1_reading,
                "log10_v1": _as_float(((pred.get(v1_reading) or {}).get("v1") or {}).get("log10_width")),
                "log10_v2": _as_float(((pred.get("kappa_d") or {}).get("v2") or {}).get("log10_width")),
            })
    return rows


# --------------------------------------------------------------------------- verdicts

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
UNDER_A_READING = "holds only under a reading"
NOT_RUN = "not run"

CRITERIA = {
    "theory": "the theory checker's verdict over all readings (exact rationals, float64, mpmath): holds -> reproduced; "
              "fails -> not reproduced; depends -> holds only under a reading (named)",
    "ntk-trend": "direction of change with width: the sign of our fitted log-log slope of the mean distance "
                 "equals the sign of the paper's slope (its m=16 and m=4096 points), for every model and data set; "
                 "judged per distance reading, magnitudes not compared because the paper's formula is unknown",
    "ntk-values": "paper value inside our 95% interval over seeds at the same width (reading after_vs_init_absolute)",
    "flip-ratio": "for every data set and attack, our MLP-Attn/2L-ReLU ratio of mean flip rates is within a "
                  "factor 2 of the paper's ratio",
    "flip-values": "per number: paper value inside our 95% interval over seeds",
    "adv-ratio": "for every data set and model, our adversarial/standard ratio of mean PGD flip rates is within a "
                 "factor 2 of the paper's ratio",
    "headline": "every 10-class MLP-Attn/2L-ReLU ratio of mean flip rates lies in [6, 9] (v1) -> reproduced; "
                "all in [2, 9] (v2's wording) but not [6, 9] -> holds only under a reading (v2); else not reproduced",
    "kappa": "same order of magnitude as the paper's κ(G) (|log10(ours/paper)| <= 1) on the unit-row data, judged per "
             "reading (kappa_G, pseudo_kappa_G, kappa_d) at every measured n",
}


def _combine(per_reading: dict[str, bool | None]) -> tuple[str, list[str]]:
    judged = {k: v for k, v in per_reading.items() if v is not None}
    if not judged:
        return NOT_RUN, []
    holding = sorted(k for k, v in judged.items() if v)
    if len(holding) == len(judged):
        return REPRODUCED, holding
    if holding:
        return UNDER_A_READING, holding
    return NOT_REPRODUCED, []


def verdicts(cells: list[dict], summary: dict, missing: list[dict]) -> list[dict]:
    out = []
    theory_cells = {c["tags"]["claim"]: c for c in cells if c["kind"] == "theory"}
    missing_theory = {m["label"].split(" ", 1)[1]: m["why"] for m in missing if m["kind"] == "theory"}
    for claim in CLAIM_IDS:
        c = theory_cells.get(claim)
        row = {"claim": claim, "criterion": CRITERIA["theory"], "source": "theory.check_claims"}
        if c is None or c["status"] == "failed" or not c.get("result"):
            why = (c or {}).get("error") or missing_theory.get(claim) or "not in this scale"
            out.append({**row, "statement": "", "verdict": NOT_RUN, "detail": why})
            continue
        res = c["result"]
        v = res.get("verdict")
        holding = [r["name"] for r in res.get("readings", []) if r.get("verdict") == "holds"]
        failing = [r["name"] for r in res.get("readings", []) if r.get("verdict") == "fails"]
        verdict = {"holds": REPRODUCED, "fails": NOT_REPRODUCED, "depends": UNDER_A_READING}.get(v, f"undetermined ({v})")
        detail = f"checker verdict {v}; holds under: {', '.join(holding) or 'none'}; fails under: {', '.join(failing) or 'none'}"
        out.append({**row, "statement": res.get("statement", ""), "verdict": verdict, "detail": detail,
                    "readings_holding": holding})

    # NTK: non-convergence of MLP-Attn vs ReLU (direction of the trend)
    ntk = summary["ntk"]
    per_reading: dict[str, bool | None] = {}
    details = []
    for reading in ntk["readings"]:
        oks = []
        for s in ntk["slopes"]:
            if s["reading"] != reading or s["slope"] is None:
                continue
            paper = P.NTK_DISTANCE_TABLE["values"].get((s["model"], s["task"]))
            if paper is None:
                continue
            paper_slope = math.log(paper[-1] / paper[0]) / math.log(4096 / 16)
            oks.append((s["slope"] > 0) == (paper_slope > 0))
        per_reading[reading] = all(oks) if oks else None
        details.append(f"{reading}: {'agrees' if per_reading[reading] else 'disagrees' if oks else 'n/a'} "
                       f"({sum(oks)} of {len(oks)} model/data pairs)")
    for s in ntk["slopes"]:  # the default reading's slopes, beside the paper's
        paper = P.NTK_DISTANCE_TABLE["values"].get((s["model"], s["task"]))
        if s["reading"] == PRIMARY_NTK_READING and paper and s["slope"] is not None:
            paper_slope = math.log(paper[-1] / paper[0]) / math.log(4096 / 16)
            details.append(f"{s['task']} {s['model']} slope ({PRIMARY_NTK_READING}): ours {s['slope']:+.2f}, "
                           f"paper {paper_slope:+.2f}")
    verdict, holding = _combine(per_reading)
    judged_pairs = {(s["task"], s["model"]) for s in ntk["slopes"] if s["slope"] is not None
                    and (s["model"], s["task"]) in P.NTK_DISTANCE_TABLE["values"]}
    verdict = _partial(verdict, len(judged_pairs), len(P.NTK_DISTANCE_TABLE["values"]))
    out.append({"claim": "ntk-trend", "statement": "NTK distance of MLP-Attn does not shrink with width while 2L-ReLU's "
                "does (non-convergent NTK dynamics; Table 1)", "criterion": CRITERIA["ntk-trend"],
                "source": P.NTK_DISTANCE_TABLE["source"], "verdict": verdict, "readings_holding": holding,
                "detail": "; ".join(details) or _missing_why(missing, "ntk")})
    # Table 1 magnitudes
    judged = [r for r in ntk["rows"] if r["paper"] is not None and r["ci95"] is not None]
    inside = [r for r in judged if r["ci95"][0] <= r["paper"] <= r["ci95"][1]]
    v = NOT_RUN if not judged else REPRODUCED if len(inside) == len(judged) else NOT_REPRODUCED
    out.append({"claim": "table1-values", "statement": "Table 1 NTK distance values", "criterion": CRITERIA["ntk-values"],
                "source": P.NTK_DISTANCE_TABLE["source"], "verdict": v,
                "detail": f"{len(inside)} of {len(judged)} paper values inside our interval" if judged else
                (_missing_why(missing, "ntk") or "no measured width among the paper's (16, 1024, 4096) with >= 2 seeds")})

    flip = summary["flip"]
    for table, paper_table, claim, statement in (
        ("table2", P.FLIP_RATE_10CLASS, "table2", "MLP-Attn's influence is several times more malleable (10-class)"),
        ("table3", P.FLIP_RATE_BINARY, "table3", "binary tasks: MNIST 3v8 malleable, CIFAR-10 cars vs planes no effect"),
    ):
        oks, details = [], []
        for (task, model), vals in paper_table["values"].items():
            if model != "mlp-attn":
                continue
            for attack in P.ATTACKS:
                ours_a = describe(_flip_values(flip, table, task, attack, False, "mlp-attn"))["mean"]
                ours_r = describe(_flip_values(flip, table, task, attack, False, "relu"))["mean"]
                ours = ratio(ours_a, ours_r)
                paper = vals[attack] / paper_table["values"][(task, "relu")][attack]
                if ours is None:
                    continue
                ok = ours > 0 and math.isfinite(ours) and 0.5 <= ours / paper <= 2.0
                oks.append(ok)
                details.append(f"{task} {attack}: ours {ours:.2f} vs paper {paper:.2f}")
        v = _partial(NOT_RUN if not oks else REPRODUCED if all(oks) else NOT_REPRODUCED, len(oks),
                     3 * sum(1 for (_t, m) in paper_table["values"] if m == "mlp-attn"))
        out.append({"claim": claim, "statement": statement, "criterion": CRITERIA["flip-ratio"],
                    "source": paper_table["source"], "verdict": v,
                    "detail": (f"{sum(oks)} of {len(oks)} ratios within a factor 2; " + "; ".join(details)) if oks
                    else _missing_why(missing, "flip") or "no cells of this table at this scale"})
    # Table 4
    oks, details = [], []
    for (task, model), vals in P.FLIP_RATE_ADV_TRAINING["values"].items():
        std = describe(_flip_values(flip, "table2", task, "pgd", False, model))["mean"]
        adv = describe(_flip_values(flip, "table4", task, "pgd", True, model))["mean"]
        ours = ratio(adv, std)
        if ours is None:
            continue
        paper = vals["adversarial"] / vals["standard"]
        ok = ours > 0 and math.isfinite(ours) and 0.5 <= ours / paper <= 2.0
        oks.append(ok)
        details.append(f"{task} {model}: ours {ours:.2f} vs paper {paper:.2f}")
    out.append({"claim": "table4", "statement": "adversarial training raises the PGD flip rate of both models",
                "criterion": CRITERIA["adv-ratio"], "source": P.FLIP_RATE_ADV_TRAINING["source"],
                "verdict": _partial(NOT_RUN if not oks else REPRODUCED if all(oks) else NOT_REPRODUCED, len(oks),
                                    len(P.FLIP_RATE_ADV_TRAINING["values"])),
                "detail": (f"{sum(oks)} of {len(oks)} ratios within a factor 2; " + "; ".join(details)) if oks
                else _missing_why(missing, "flip") or "no adversarial-training cells at this scale"})
    # Headline
    ratios = []
    for (task, model) in P.FLIP_RATE_10CLASS["values"]:
        if model != "mlp-attn":
            continue
        for attack in P.ATTACKS:
            r = ratio(describe(_flip_values(flip, "table2", task, attack, False, "mlp-attn"))["mean"],
                      describe(_flip_values(flip, "table2", task, attack, False, "relu"))["mean"])
            if r is not None:
                ratios.append((f"{task} {attack}", r))
    if not ratios:
        v, detail = NOT_RUN, _missing_why(missing, "flip") or "no 10-class flip-rate cells"
    else:
        lo1, hi1 = P.HEADLINE_RATIO["v1"]
        lo2, hi2 = P.HEADLINE_RATIO["v2"]
        in1 = all(lo1 <= r <= hi1 for _, r in ratios)
        in2 = all(lo2 <= r <= hi2 for _, r in ratios)
        v = _partial(REPRODUCED if in1 else UNDER_A_READING if in2 else NOT_REPRODUCED, len(ratios),
                     3 * sum(1 for (_t, m) in P.FLIP_RATE_10CLASS["values"] if m == "mlp-attn"))
        detail = "ratios: " + ", ".join(f"{k} {r:.2f}" for k, r in ratios)
    out.append({"claim": "headline-6-9x", "statement": "attention is 6-9x more malleable than ReLU (v2: 2-9x)",
                "criterion": CRITERIA["headline"], "source": P.HEADLINE_RATIO["source"], "verdict": v,
                "readings_holding": ["v2 (2-9x)"] if v == UNDER_A_READING else [], "detail": detail})
    # kappa
    per_reading = {}
    details = []
    for reading in ("kappa_G", "pseudo_kappa_G", "kappa_d"):
        oks = []
        for r in summary["kappa"]["rows"]:
            paper = P.KAPPA["values"].get(r["task"])
            if paper is None or r["features"] != "relu":  # the paper's κ(G) is of the (unit-row) data
                continue
            ours = r.get(f"log10_{reading}")
            if ours is None:
                oks.append(False)
                details.append(f"{r['task']} n={r['n']} {reading}: infinite (G singular)")
                continue
            oks.append(abs(ours - math.log10(paper)) <= 1)
            details.append(f"{r['task']} n={r['n']} {reading}: 1e{ours:.1f} vs {paper:.3g}")
        per_reading[reading] = all(oks) if oks else None
    verdict, holding = _combine(per_reading)
    out.append({"claim": "kappa-values", "statement": "κ(G) ≈ 1.2e3 (MNIST), ≈ 8.7e3 (CIFAR-10)",
                "criterion": CRITERIA["kappa"], "source": P.KAPPA["source"], "verdict": verdict,
                "readings_holding": holding, "detail": "; ".join(details) or _missing_why(missing, "kappa")})
    return out


def _partial(verdict: str, measured: int, expected: int) -> str:
    """Say so when a verdict rests on only part of the paper's cells."""
    if verdict == NOT_RUN or measured >= expected:
        return verdict
    return f"{verdict} (partial: {measured} of {expected} cells measured)"


def _missing_why(missing: list[dict], kind: str) -> str:
    whys = sorted({m["why"] for m in missing if m["kind"] == kind})
    return "missing: " + "; ".join(whys) if whys else ""


def summarise_widths(ntk: dict, kappa: dict, eps: float) -> dict:
    """Predicted widths (paper's formulas on our κ) beside measured ones (fitted power law reaching ε)."""
    measured = []
    for s in ntk["slopes"]:
        if s["reading"] not in ("init_vs_infinite_relative", "after_vs_infinite_relative", "after_vs_init_relative"):
            continue
        fit = (s["slope"], s["intercept"]) if s["slope"] is not None else None
        mw = measured_width(fit, eps)
        measured.append({"task": s["task"], "model": s["model"], "reading": s["reading"], "eps": eps,
                         "slope": s["slope"], "width": mw, "log10_width": math.log10(mw) if mw else None,
                         "note": None if measured_width(fit, eps) else "distance does not shrink with width: no finite width"})
    predicted = [{"task": r["task"], "n": r["n"], "features": r["features"], "log10_v1": r.get("log10_v1"),
                  "v1_reading": r.get("v1_reading"), "log10_v2": r.get("log10_v2")} for r in kappa["rows"]]
    return {"eps": eps, "measured": measured, "predicted": predicted}


def summarise(cells: list[dict], missing: list[dict], eps: float = 0.1) -> tuple[dict, list[dict]]:
    """Pure: the summaries and verdicts from the cell records (used by audit and by `report`)."""
    summary = {"ntk": summarise_ntk(cells), "flip": summarise_flip(cells), "kappa": summarise_kappa(cells),
               "eps_sweep": summarise_eps_sweep(cells)}
    summary["widths"] = summarise_widths(summary["ntk"], summary["kappa"], eps)
    return summary, verdicts(cells, summary, missing)


# --------------------------------------------------------------------------- orchestration


def default_cache_dir() -> Path:
    """$MALLEABILITY_CACHE_DIR, else $XDG_CACHE_HOME/malleability/audit-cells, else ~/.cache/...."""
    env = os.environ.get("MALLEABILITY_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "malleability" / "audit-cells"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_audit(
    scale: Scale,
    out_dir: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    workers: int | None = None,
    fresh: bool = False,
    data_root: str | None = None,
    executor=None,
    plan: Plan | None = None,
    progress: Callable[[str], None] | None = _stderr,
    render: bool = True,
    overrides: tuple[str, ...] = (),
) -> dict:
    """Run (or resume) the audit and write OUT/results.json (+ the report unless ``render`` is False)."""
    from malleability.provenance import provenance

    say = progress or (lambda _l: None)
    out = Path(out_dir)
    require(not out.exists() or out.is_dir(), f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    cache = CellCache(cache_dir or default_cache_dir(), log=say)
    workers = workers if workers is not None else (1 if device == "cuda" else default_workers())
    require(workers >= 1, f"--workers must be >= 1, got {workers}")
    plan = plan or plan_cells(scale, device=device, data_root=data_root)
    started = time.time()
    say(f"audit: scale {scale.name}, {len(plan.cells)} cells, {workers} worker(s), device {device}, cache {cache.root}")
    for m in sorted({(m['kind'], m['why']) for m in plan.missing}):
        say(f"audit: not run ({m[0]}): {m[1]}")
    code = code_version()  # once per run: every cell of this run is keyed by the same code version
    foreign = cache.count_foreign(sorted({c.kind for c in plan.cells}), code)
    if foreign:
        say(f"cache: ignoring {foreign} entries written by another code version")
    if not fresh:
        quiet = CellCache(cache.root)  # refusals are logged once, by run_cells below
        uncached = [c for c in plan.cells if quiet.get(c.kind, c.config, code) is None]
    else:
        uncached = list(plan.cells)
    _prefetch_data(uncached, say)
    est = estimate_seconds(uncached, workers)
    say(f"audit: {len(uncached)} cells to compute; rough estimate {est / 60:.1f} min on {workers} worker(s) "
        "(from cell timings on a 2-core CPU; a GPU is faster, a busy machine slower)")
    own_executor = executor is None
    executor = executor or make_executor(workers)
    try:
        stats = run_cells(plan.cells, executor, cache, fresh=fresh, progress=say, code=code)
    finally:
        if own_executor:
            executor.shutdown(wait=True, cancel_futures=True)
    records = []
    for o in stats.outcomes:
        entry = o.entry or {}
        records.append({
            "kind": o.cell.kind, "label": o.cell.label, "key": o.key, "status": o.status, "tags": dict(o.cell.tags),
            "config": config_to_jsonable(o.cell.config), "result": compact(_without_duplicates(entry.get("result"))),
            "wall_time_s": entry.get("wall_time_s"), "provenance": entry.get("provenance"),
            "finished_at": entry.get("finished_at"), "error": o.error,
        })
    missing = list(plan.missing) + [
        {"kind": r["kind"], "label": r["label"], "why": f"failed: {r['error']}"} for r in records if r["status"] == "failed"]
    summary, verdict_rows = summarise(records, missing, scale.width_eps)
    results = {
        "schema": SCHEMA,
        "scale": dataclasses.asdict(scale),
        "scale_help": scale_help(),
        "options": {"device": device, "workers": workers, "fresh": fresh, "data_root": data_root,
                    "cache_dir": str(cache.root), "overrides": list(overrides)},
        "code_version": code,
        "provenance": provenance(device=device),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_time_s": time.time() - started,
        "counts": {"cells": len(records), "cached": stats.cached, "computed": stats.computed, "failed": stats.failed,
                   "missing": len(plan.missing)},
        "cache_refusals": cache.refusals,
        "verdicts": verdict_rows,
        "summary": summary,
        "criteria": CRITERIA,
        "paper_numbers": P.all_numbers(),
        "missing": missing,
        "cells": records,
    }
    atomic_write_json(out / "results.json", results)
    say(f"audit: {stats.computed} computed, {stats.cached} from cache, {stats.failed} failed; wrote {out / 'results.json'}")
    if render:
        from malleability.reports.render import render_report

        render_report(results, out)
        say(f"audit: wrote {out / 'report.md'} and {out / 'report.html'}")
    return results


MAX_LIST = 200  # longer raw arrays (spectra, loss histories) stay in the cache, not in results.json


def _without_duplicates(result: Any) -> Any:
    """A cell result without its own copies of the cell's config and provenance (kept once per cell record)."""
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if k not in ("config", "provenance")}
    return result


def compact(value: Any) -> Any:
    """The result with any list longer than MAX_LIST replaced by an explicit, labelled summary.

    Keeps results.json small enough to commit; the complete entry stays in the cell cache.
    """
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            return {"truncated_list": True, "length": len(value), "head": value[:5], "tail": value[-5:],
                    "note": "full list in the cell cache entry (see key)"}
        return [compact(v) for v in value]
    return value


def _prefetch_data(cells: list[Cell], say: Callable[[str], None]) -> None:
    """Load each data set once in this process before the workers start.

    On a fresh machine this is where torchvision downloads (once, into the user cache),
    instead of several workers racing to download the same files. A data set that cannot
    be loaded is reported here and its cells fail with the same one-line reason.
    """
    seen = set()
    for cell in cells:
        data = getattr(cell.config, "data", None)
        if data is None or (data.dataset, data.data_root) in seen:
            continue
        seen.add((data.dataset, data.data_root))
        from malleability.empirics.data import DataConfig, load_dataset

        try:
            load_dataset(DataConfig(dataset=data.dataset, n=1, n_test=1, data_root=data.data_root))
        except MalleabilityError as exc:
            say(f"audit: data set {data.dataset} unavailable: {exc}")


def load_results(out_dir: str | os.PathLike) -> dict:
    """results.json of an audit folder, or a one-line MalleabilityError."""
    out = Path(out_dir)
    require(out.is_dir(), f"not an audit folder: {out}")
    path = out / "results.json"
    require(path.is_file(), f"no results.json in {out}: run `malleability audit --out {out}` first")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise MalleabilityError(f"{path} is not valid JSON ({type(exc).__name__}); rerun the audit") from None
    require(isinstance(results, dict) and results.get("schema") == SCHEMA and isinstance(results.get("cells"), list),
            f"{path} is not an audit results file (schema {SCHEMA})")
    return results
