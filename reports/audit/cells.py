"""The audit's cell kinds: each a top-level function of a frozen config (picklable for any executor).

Kinds are the experiments' names (plus ``theory``); each calls its experiment's ``run_cell``:

* ``theory``        -> ``malleability.theory.check_claims([claim], profile)``
* ``widths``        -> ``malleability.empirics.experiments.widths.width_report``
* ``ntk-distance``  -> ``malleability.empirics.experiments.ntk_distance.run_cell``
* ``flip-rate``     -> ``malleability.empirics.experiments.flip_rate.run_cell``
* ``k-layer``       -> ``malleability.empirics.experiments.k_layer.run`` (one data set, one n per cell)

This module is part of the cache's code hash: what it stores for a config is part of the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from malleability.errors import require


def _h(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class TheoryCellConfig:
    claim: str = field(metadata=_h("claim id"))
    profile: str = field(default="quick", metadata=_h("check_claims profile"))


@dataclass(frozen=True)
class WidthsCellConfig:
    data: Any = field(metadata=_h("DataConfig of the data set (n = the largest size)"))
    eps: float = field(default=0.1, metadata=_h("ε of the predicted width"))
    task: str = field(default="", metadata=_h("task name"))
    ns: tuple[int, ...] = field(default=(), metadata=_h("sizes n (prefixes of the seeded subset) at which κ is measured"))
    models: tuple[str, ...] = field(default=("relu", "mlp-attn"), metadata=_h("views: the registered models"))


def jsonable(value: Any) -> Any:
    from malleability.reports.audit.cache import config_to_jsonable

    return config_to_jsonable(value)


def run_theory_cell(cfg: TheoryCellConfig) -> dict:
    from malleability.theory import check_claims

    results = check_claims([cfg.claim], profile=cfg.profile)
    require(len(results) == 1, f"check_claims returned {len(results)} results for {cfg.claim}")
    return jsonable(results[0].to_dict())


def run_widths_cell(cfg: WidthsCellConfig) -> dict:
    """κ of the data as each model sees it (per n), and the widths the paper's formulas predict."""
    from malleability.empirics.experiments.widths import width_report

    return {"report": jsonable(width_report(cfg.data, cfg.eps, ns=cfg.ns or None, models=cfg.models))}


def run_ntk_cell(cfg) -> dict:
    from malleability.empirics.experiments.ntk_distance import run_cell

    return jsonable(run_cell(cfg))


def run_flip_cell(cfg) -> dict:
    from malleability.empirics.experiments.flip_rate import run_cell

    return jsonable(run_cell(cfg))


def run_k_layer_cell(cfg) -> dict:
    """The k-layer rows of one data set at one n (a ``KLayerConfig`` of one of each)."""
    from malleability.empirics.experiments import k_layer

    require(len(cfg.datasets) == 1 and len(cfg.n) == 1,
            f"a k-layer cell is one data set at one n, got datasets {cfg.datasets} and n {cfg.n}")
    return {"rows": jsonable(k_layer.run(cfg))}


def data_of(cfg):
    """The DataConfig whose rows a cell reads (its data fingerprint is part of the cache key), or None.

    Cells of most kinds carry it as ``cfg.data``; a k-layer cell names its data set and n, and
    reads the subset ``k_layer.run`` draws: n training rows, no test rows, the config's seed.
    """
    data = getattr(cfg, "data", None)
    if data is not None or not hasattr(cfg, "datasets"):
        return data
    from malleability.empirics.data import DataConfig

    require(len(cfg.datasets) == 1 and len(cfg.n) == 1, "a k-layer cell is one data set at one n")
    return DataConfig(dataset=cfg.datasets[0], n=int(cfg.n[0]), n_test=0, seed=int(cfg.seed), data_root=cfg.data_root)


RUNNERS = {"theory": run_theory_cell, "widths": run_widths_cell, "ntk-distance": run_ntk_cell,
           "flip-rate": run_flip_cell, "k-layer": run_k_layer_cell}
