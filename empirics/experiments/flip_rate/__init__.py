"""The flip-rate experiment (Tables 2-4): config, grid, one cell, summary. CLI ``flip-rate``; cell kind ``flip-rate``."""

from malleability.empirics.experiments.flip_rate.cell import attack_rows, build_attack, check_pixel_space, run_flip_rate_cell
from malleability.empirics.experiments.flip_rate.config import (
    ATTENTION_C,
    CURATED_FLIP_SETS,
    INTERVENTIONS,
    KRR_TARGETS,
    NTK_AT,
    RECOMPUTE,
    FlipRateConfig,
)
from malleability.empirics.experiments.flip_rate.metrics import (
    EDGE_TIE_RTOL,
    flip_rate,
    flip_set_edge,
    krr_targets,
    network_influence,
    spearman,
    top_tau_indices,
    topk_overlap,
)
from malleability.empirics.experiments.flip_rate.summary import find_cell, group_key, model_key, summarise, sweep

NAME = "flip-rate"
Config = FlipRateConfig
run_cell = run_flip_rate_cell

__all__ = ["ATTENTION_C", "CURATED_FLIP_SETS", "Config", "EDGE_TIE_RTOL", "FlipRateConfig", "INTERVENTIONS", "KRR_TARGETS", "NAME",
           "NTK_AT", "RECOMPUTE", "attack_rows", "build_attack", "check_pixel_space", "find_cell", "flip_rate", "flip_set_edge", "group_key", "krr_targets",
           "model_key", "network_influence", "run_cell", "run_flip_rate_cell", "spearman", "summarise", "sweep",
           "top_tau_indices", "topk_overlap"]
