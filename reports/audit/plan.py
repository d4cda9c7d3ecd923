"""The audit's plan: every cell of a scale, built from the experiments' own grids, and its cost
(:mod:`.cost_model`, measured).

Pure: builds configs, runs nothing. Each cell carries tags (table, task, model, reading, ...)
that the summary and the report use to find it; the table is only a tag, never part of the
config, so a cell shared by two tables is planned (and computed) once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from malleability.reports.audit.cells import RUNNERS, TheoryCellConfig, WidthsCellConfig
from malleability.reports.audit.cost_model import cell_seconds, estimate_seconds
from malleability.reports.audit.executor import Cell
from malleability.reports.audit.scales import TASKS, Scale

CONTROL_ATTACKS_LAZY = ("pgd", "noise")  # the lazy-protocol causal control of Table 2: one attack and its noise floor


@dataclass
class Plan:
    cells: list[Cell]
    missing: list[dict]  # {kind, label, why}


def data_config(task: str, n: int, n_test: int, seed: int, data_root: str | None):
    from malleability.empirics.data import DataConfig, parse_classes

    dataset, spec = TASKS[task]
    return DataConfig(dataset=dataset, n=n, n_test=n_test, classes=parse_classes(spec, dataset), seed=seed,
                      data_root=data_root)


def model_variants(scale: Scale) -> list[tuple[str, dict, str]]:
    """(model, options, reading) for every model of the scale; attention models once per attention-input reading."""
    from malleability.empirics.models import MODELS

    out = []
    for model in scale.models:
        fields = {f.name for f in dataclasses.fields(MODELS[model])}
        if "attention_input" in fields:
            out.extend((model, {"attention_input": r}, r) for r in scale.attention_inputs)
        else:
            out.append((model, {}, "-"))
    return out


def _train(scale: Scale, epochs: int, device: str, protocol: str = "paper", dtype: str | None = None):
    from malleability.empirics.training import TrainConfig

    return TrainConfig(protocol=protocol, epochs=epochs, device=device, dtype=dtype or scale.dtype)


def plan_cells(scale: Scale, *, device: str = "cpu", data_root: str | None = None) -> Plan:
    """Every cell of a scale."""
    from malleability.empirics.experiments import flip_rate, ntk_distance
    from malleability.theory import CLAIM_IDS

    cells: list[Cell] = []
    for claim in CLAIM_IDS if scale.theory.claims is None else scale.theory.claims:
        cells.append(Cell("theory", TheoryCellConfig(claim, scale.theory.profile), RUNNERS["theory"],
                          f"theory {claim}", tags={"claim": claim}))
    w = scale.widths
    for task in w.tasks:
        cfg = WidthsCellConfig(data_config(task, max(w.n), 0, 0, data_root), w.eps, task, tuple(sorted(w.n)),
                               tuple(scale.models))
        cells.append(Cell("widths", cfg, RUNNERS["widths"], f"widths {task} n={','.join(map(str, w.n))}",
                          tags={"task": task}))
    from malleability.reports.audit.limitations import limitation_variants

    k = scale.ntk
    variants = model_variants(scale)
    beyond = limitation_variants(scale)  # the paper's limitations: Table 1 and Table 2 only, the paper's protocol
    for task in k.tasks:
        for protocol in k.protocols:
            # the lazy protocol is the causal control of the paper's two models; the variants beyond it train as the paper does
            extra = beyond if protocol == "paper" and _beyond_on(scale, task) else []
            for model, options, reading in variants + extra:
                for cfg in ntk_distance.sweep(data_config(task, k.n, k.n_test, 0, data_root),
                                              _train(scale, k.epochs, device, protocol), [model], k.widths, k.seeds,
                                              model_options={model: options}):
                    tags = {"table": "table1", "task": task, "model": model, "reading": reading, "protocol": protocol,
                            "width": cfg.width, "seed": cfg.train.seed}
                    cells.append(Cell("ntk-distance", cfg, RUNNERS["ntk-distance"],
                                      f"ntk {task} {model}/{reading} {protocol} m={cfg.width} seed={cfg.train.seed}",
                                      tags=tags))
    cells.extend(_flip_cells(scale, variants, beyond, device, data_root, flip_rate))
    cells.extend(_k_layer_cells(scale, data_root))
    return Plan(cells, [])


def _k_layer_cells(scale: Scale, data_root: str | None) -> list[Cell]:
    """One cell per (data set, n): each loads its own subset, and the mpmath-measured n cost a minute each."""
    from malleability.empirics.experiments.k_layer import KLayerConfig

    kl = scale.k_layer
    out = []
    for dataset in kl.datasets:
        for n in kl.n:
            cfg = KLayerConfig(datasets=(dataset,), n=(int(n),), ks=tuple(kl.ks), seed=0, data_root=data_root,
                               measure_max_n=int(kl.measure_max_n))
            out.append(Cell("k-layer", cfg, RUNNERS["k-layer"], f"k-layer {dataset} n={n}",
                            tags={"table": "k-layer", "task": dataset, "n": int(n)}))
    return out


def _beyond_on(scale: Scale, task: str) -> bool:
    return scale.limitation_tasks is None or task in scale.limitation_tasks


def _flip_cells(scale: Scale, variants, beyond, device, data_root, flip_rate) -> list[Cell]:
    f = scale.flip
    combos = []  # (table, task, attacks, adv, eps_list, protocol); Table 4 runs every schedule of f.adv_train_schedules
    for task in f.tasks_10class:
        combos.append(("table2", task, f.attacks, False, (f.eps,), "paper"))
        if "lazy" in f.protocols:
            combos.append(("table2", task, tuple(a for a in f.attacks if a in CONTROL_ATTACKS_LAZY), False, (f.eps,),
                           "lazy"))
        if f.adv_training and task in (f.tasks_10class if f.adv_training_tasks is None else f.adv_training_tasks):
            combos.append(("table4", task, ("pgd",), True, (f.eps,), "paper"))
    for task in f.tasks_binary:
        combos.append(("table3", task, f.attacks, False, (f.eps,), "paper"))
    for task in f.eps_sweep_tasks:
        combos.append(("eps-sweep", task, f.eps_sweep_attacks, False, tuple(f.eps_sweep), "paper"))
    out, seen = [], set()
    for table, task, attacks, adv, eps_list, protocol in combos:
        extra = beyond if (table == "table2" and protocol == "paper" and _beyond_on(scale, task)) else []
        for model, options, reading in variants + extra:
            if (model, options, reading) in extra:  # beyond the paper: one attack and its noise floor suffice
                attacks_here = tuple(a for a in attacks if a in CONTROL_ATTACKS_LAZY)
            else:
                attacks_here = attacks
            configs = flip_rate.sweep(
                data_config(task, f.n, f.n_test, 0, data_root), _train(scale, f.epochs, device, protocol, f.dtype),
                models=[model], attacks=attacks_here, eps_list=eps_list, seeds=range(f.seeds), adv_modes=(adv,),
                model_options={model: options}, width=f.width, adv_train_steps=f.adv_train_steps, null_eps=f.null_eps,
                adv_schedules=f.adv_train_schedules, adv_train_ramp_epochs=f.adv_train_ramp_epochs)
            for cfg in configs:
                schedule = cfg.adv_train_schedule if adv else None
                ident = (task, cfg.attack, adv, schedule, model, reading, cfg.train.seed, cfg.eps, protocol)
                if ident in seen:  # e.g. the ε sweep's ε = 0.3 cells are Table 2's own
                    continue
                seen.add(ident)
                tags = {"table": table, "task": task, "attack": cfg.attack, "adv_train": adv, "model": model,
                        "reading": reading, "protocol": protocol, "seed": cfg.train.seed, "eps": cfg.eps}
                adv_text = ""
                if adv:
                    tags["adv_schedule"] = schedule
                    adv_text = " adv-train" + (" ramp" if schedule == "ramp" else "")
                label = (f"flip {task} {model}/{reading} {cfg.attack}{adv_text} eps={cfg.eps:g} "
                         f"{protocol} seed={cfg.train.seed}")
                out.append(Cell("flip-rate", cfg, RUNNERS["flip-rate"], label, tags=tags))
    return out


def costliest_first(cells: list[Cell]) -> list[Cell]:
    return sorted(cells, key=cell_seconds, reverse=True)


__all__ = ["Plan", "cell_seconds", "costliest_first", "data_config", "estimate_seconds", "model_variants", "plan_cells"]
