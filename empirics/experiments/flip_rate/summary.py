"""The flip-rate experiment's grid of cells and its summary over seeds (used by the CLI and the audit).

Seeds: seed ``s`` draws the data subset ``data_seed + s``, the initialisation, the batch order
and the attacks' random starts, so both models of a seed see the same data.

Summary groups never pool rows computed under different readings: a group is one data set,
classes, attack, ε, intervention, adversarial training or not, readings (space, recompute,
ntk_at, protocol), the adversarial-training schedule (None without adversarial training) and
model with its options. Per group (all statistics from
:mod:`malleability.stats`):

* ``flip_rate``: the mean over seeds, with a Wilson interval over the pooled flip counts;
* ``spearman`` (Fisher-z interval), ``topk_overlap`` (t-interval in [0, 1]);
* ``accuracy``: test accuracy over seeds, and how many seeds ``learned`` (the gate);
* ``numerical_floor``: the flip rate under a null perturbation, where measured;
* ``edge_by_rounding``: the seeds whose flip set's edge is a tie within rounding
  (``flip_set_edge``), out of the seeds that recorded it (None where none did);
* ``excess_over_noise``: per-seed differences to the noise control of the same group.

Per group and model other than the baseline, ``ratios`` gives mean(model)/mean(baseline) of the
flip rates with a paired bootstrap interval over seeds. ``ablation`` pairs each standard group
with its adversarially trained twin, once per adversarial-training schedule (``adv_schedule``).
"""

from __future__ import annotations

import dataclasses
import itertools

from malleability.empirics.attacks import CONTROL
from malleability.empirics.data import DataConfig
from malleability.empirics.experiments.flip_rate.config import FlipRateConfig
from malleability.empirics.experiments.memory import data_dimension, require_fits
from malleability.empirics.models import BASELINE, check_models, largest_state
from malleability.empirics.training import TrainConfig
from malleability.errors import require
from malleability.stats import (
    correlation_interval,
    difference_interval,
    mean_interval,
    paired_ratio,
    rate_summary,
)


def sweep(data: DataConfig, train: TrainConfig, *, models, attacks, eps_list, seeds, adv_modes=(False,),
          adv_schedules=("constant",), model_options=None, attack_options=None,
          **cell_options) -> list[FlipRateConfig]:
    """The cells of a flip-rate grid: adv-training modes (x schedules) x ε x attacks x seeds x models.

    ``model_options`` / ``attack_options``: {name: {option: value}} for the models and attacks that take options.
    ``adv_schedules``: the adversarial-training schedules of the adversarially trained cells (each
    one a cell of its own); standard training has none.
    """
    seeds = list(seeds)
    require(seeds, "no seeds")
    adv_schedules = tuple(adv_schedules)
    require(adv_schedules, "no adversarial-training schedule")
    modes = [(bool(adv), sched) for adv in adv_modes for sched in (adv_schedules if adv else ("constant",))]
    model_options, attack_options = dict(model_options or {}), dict(attack_options or {})
    unused = sorted(set(attack_options) - set(attacks))
    require(not unused, f"attack options for {', '.join(unused)}, which is not among the attacks {', '.join(attacks)}")
    d = data_dimension(data.dataset)
    check_models(models, model_options, d, data.n)
    require_fits(data.n, d, int(cell_options.get("width", 256)), "flip-rate", largest_state(models, model_options, data.n, d))
    return [
        FlipRateConfig(data=dataclasses.replace(data, seed=int(data.seed) + int(s)),
                       train=dataclasses.replace(train, seed=int(s)), model=model,
                       model_options=dict(model_options.get(model, {})), attack=attack,
                       attack_options=dict(attack_options.get(attack, {})), eps=float(e), adv_train=adv,
                       adv_train_schedule=sched, **cell_options)
        for (adv, sched), e, attack, s, model in itertools.product(modes, eps_list, attacks, seeds, models)
    ]


def model_key(row: dict) -> str:
    """The model with its non-default options, e.g. ``mlp-attn[attention_input=center]``."""
    opts = row.get("model_options") or {}
    shown = ",".join(f"{k}={v}" for k, v in sorted(opts.items()) if not (k == "attention_input" and v == "raw"))
    return f"{row['model']}[{shown}]" if shown else row["model"]


def readings_key(row: dict) -> str:
    r = row.get("readings") or {}
    return (f"space={r.get('space', 'pixel')};recompute={r.get('recompute', 'retrain')};"
            f"ntk_at={r.get('ntk_at', 'trained')};protocol={r.get('protocol', 'paper')}")


def adv_schedule(row: dict) -> str | None:
    """The adversarial-training schedule of a row (rows of earlier versions: 'constant'); None without adversarial training."""
    if not row.get("adv_train", False):
        return None
    return (row.get("readings") or {}).get("adv_train_schedule") or "constant"


def group_key(row: dict) -> tuple:
    cls = row.get("classes")
    return (row["dataset"], ",".join(map(str, cls)) if cls else "all", row["attack"], float(row["eps"]),
            row.get("intervention", "transformed"), bool(row.get("adv_train", False)), readings_key(row),
            adv_schedule(row), model_key(row))


# the model stays last: a cell's baseline key replaces only it
GROUP_FIELDS = ("dataset", "classes", "attack", "eps", "intervention", "adv_train", "readings", "adv_schedule", "model")


def _edge_by_rounding(rows: list[dict]) -> dict | None:
    edges = [(int(r["seed"]), r["flip_set_edge"]) for r in rows if isinstance(r.get("flip_set_edge"), dict)]
    if not edges:
        return None
    return {"seeds": sorted(seed for seed, e in edges if e.get("decided_by_rounding")), "recorded": len(edges),
            "rtol": max(float(e["rtol"]) for _, e in edges)}


def _cell(rows: list[dict]) -> dict:
    acc = [(r.get("accuracy") or {}) for r in rows]
    floors = [r.get("numerical_floor") for r in rows if r.get("numerical_floor")]
    return {
        "seeds": sorted(int(r["seed"]) for r in rows),
        "flip_rate": rate_summary([r["flip_rate"] for r in rows], [r["n_flip_set"] for r in rows]),
        "n_flip_set": sorted({int(r["n_flip_set"]) for r in rows}),
        "spearman": correlation_interval([r["spearman"] for r in rows]),
        "spearman_undefined": sum(r["spearman"] is None for r in rows),
        "topk_overlap": mean_interval([r["topk_overlap"] for r in rows], lower=0.0, upper=1.0),
        "accuracy": {
            "train": mean_interval([a.get("train") for a in acc], lower=0.0, upper=1.0),
            "test": mean_interval([a.get("test") for a in acc], lower=0.0, upper=1.0),
            "krr_test": mean_interval([a.get("krr_test") for a in acc], lower=0.0, upper=1.0),
            "chance": max((a.get("chance") or 0.0) for a in acc) if acc else None,
            "learned_seeds": sum(1 for a in acc if a.get("learned")),
            "seeds": len(acc),
            "learned": bool(acc) and all(a.get("learned") for a in acc),
        },
        "numerical_floor": rate_summary([f["flip_rate"] for f in floors], [f["n_flip_set"] for f in floors])
        if floors else None,
        "edge_by_rounding": _edge_by_rounding(rows),
        "weight_change": mean_interval([r.get("weight_change") for r in rows], lower=0.0),
        "pattern_flip_share": mean_interval([r.get("pattern_flip_share") for r in rows], lower=0.0, upper=1.0),
    }


def summarise(rows: list[dict], *, baseline: str = BASELINE) -> dict:
    """Cells, ratios against ``baseline`` and the adversarial-training ablation (see the module docstring)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    by_seed = {key: {int(r["seed"]): float(r["flip_rate"]) for r in rs} for key, rs in groups.items()}
    cells = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        entry = dict(zip(GROUP_FIELDS, key))
        entry.update(_cell(groups[key]))
        noise_key = key[:2] + (CONTROL,) + key[3:]
        entry["excess_over_noise"] = None
        if key[2] != CONTROL and noise_key in by_seed:
            diff = difference_interval(by_seed[key], by_seed[noise_key], lower=-1.0, upper=1.0)
            diff["definition"] = "per-seed flip rate (attack) − flip rate (noise control), same group and model"
            diff["excess"] = diff["mean"]  # the key of earlier versions
            entry["excess_over_noise"] = diff
        cells.append(entry)
    ratios = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        base_key = key[:-1] + (baseline,)
        if key[-1] == baseline or base_key not in by_seed:
            continue
        ratios.append({**dict(zip(GROUP_FIELDS, key)), "baseline": baseline,
                       **paired_ratio(by_seed[key], by_seed[base_key])})
    ablation = []
    adv_at, sched_at = GROUP_FIELDS.index("adv_train"), GROUP_FIELDS.index("adv_schedule")
    schedules = sorted({k[sched_at] for k in groups if k[adv_at]})
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        if key[adv_at]:
            continue
        for schedule in schedules:  # one entry per schedule that has adversarially trained cells
            adv_key = key[:adv_at] + (True,) + key[adv_at + 1:sched_at] + (schedule,) + key[sched_at + 1:]
            if adv_key in groups:
                ablation.append({**dict(zip(GROUP_FIELDS, key)), "adv_schedule": schedule,
                                 "standard": _cell(groups[key])["flip_rate"],
                                 "adversarial_training": _cell(groups[adv_key])["flip_rate"]})
    return {"cells": cells, "ratios": ratios, "ablation": ablation, "baseline": baseline,
            "interval": "flip rates: Wilson 95% over pooled counts; Spearman: t on Fisher's z; others: Student-t 95%"}


def find_cell(summary: dict, **match) -> dict | None:
    """The summary cell whose fields equal ``match`` (e.g. dataset, classes, attack, eps, adv_train, model)."""
    for c in summary["cells"]:
        if all(c.get(k) == v for k, v in match.items()):
            return c
    return None
