"""The experiments, one module (or subpackage) each, and the registry that finds them.

Each experiment owns its contract: its typed config (``Config``), its grid of cells
(``sweep``), one cell (``run_cell(config) -> row``) and its summary (``summarise(rows)``).
The CLI command of the same name and the audit's cells of the same kind are thin clients of
these functions, so both print the same numbers for the same cells.

* ``ntk-distance``: NTK distance vs width (Table 1).
* ``widths``: κ of the data as each model sees it, predicted and measured widths (Thm 4.7).
* ``flip-rate``: influence flip rates under attacks (Tables 2-4, the ε sweep).
* ``k-layer``: κ of k stacked linearized-attention layers on real rows, under each Q/K/V recursion.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXPERIMENTS = {
    "ntk-distance": "malleability.empirics.experiments.ntk_distance",
    "widths": "malleability.empirics.experiments.widths",
    "flip-rate": "malleability.empirics.experiments.flip_rate",
    "k-layer": "malleability.empirics.experiments.k_layer",
}


def get_experiment(name: str) -> ModuleType:
    from malleability.errors import require

    require(name in EXPERIMENTS, f"unknown experiment {name!r}: choose one of {', '.join(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])
