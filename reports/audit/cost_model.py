"""Seconds per audit cell, by kind, from timings measured on the reference machine with one thread.

Per kind, seconds = coefficients · features(cell) (non-negative least squares on timed cells):

* ``theory``:       [1]
* ``widths``:       [1, Σ_n n³ · views]  (eigen-decompositions of n x n Gram matrices)
* ``k-layer``:      [1, M · P · n³, M · P · n²] with P = codes x ks Grams and M = 1 where the mpmath
  recursion measures them (n <= measure_max_n), else 0
* ``ntk-distance``: [1, n · epochs · m · d (training), n² · (m + d) (three kernels, the regression)]
* ``flip-rate``:    [1, T · n · epochs · m · d, adv · T · n · epochs · m · d, T · n² · (m + d),
  att · T · n · d², att · adv · T · n · epochs · d²] with ``T`` = 2 trainings, or 3 with the
  null floor; ``adv`` = the PGD steps per batch under adversarial training, else 0; ``att`` = 1
  for a transductive model (its features cost a d x d product per row, in every attack step).

:func:`malleability.reports.audit.calibrate.calibrate` times scaled-down cells of every kind and
refits the constants below; :func:`estimate_seconds` spreads predicted cells over workers, costliest first.
"""

from __future__ import annotations


# Fitted by calibrate() on 2026-12-01, AMD EPYC (2 cores shared), torch 2.14 CPU, one thread.
COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "theory": (0.380,),
    # the intercept is a timed widths cell in a fresh process (14.5 s: loading the data set dominates)
    "widths": (14.5, 1.908e-09),
    "ntk-distance": (0.0128, 3.167e-10, 2.812e-10),
    # from timed cells of 2026-12-02 (n = 20 measured: 8 s, n = 50 measured: 52-78 s, unmeasured: 0.1-1.8 s)
    "k-layer": (1.5, 9.5e-6, 3.2e-4),
    "flip-rate": (0.0296, 1.162e-10, 2.264e-10, 1.407e-10, 2.816e-10, 1.008e-10),
}


# Seconds per theory claim at the quick profile (same machine and date; the thorough profile was not timed).
THEORY_SECONDS = {"thm4.1": 0.56, "thm4.7": 5.25, "thm4.7-width": 1.02, "k-layer": 0.10, "prop4.5": 1.74}


def _dim(cfg) -> int:
    return 3072 if cfg.data.dataset == "cifar10" else 784


def _transductive(model: str) -> bool:
    from malleability.empirics.models import MODELS

    return bool(getattr(MODELS.get(model), "transductive", False))


def features(cell) -> list[float]:
    """The cost features of one cell (see the module docstring)."""
    cfg = cell.config
    if cell.kind == "theory":
        return [1.0]
    if cell.kind == "widths":
        ns = cfg.ns or (cfg.data.n,)
        return [1.0, float(sum(int(n) ** 3 for n in ns) * max(1, len(cfg.models)))]
    if cell.kind == "k-layer":
        # mpmath products and eigensolves where measured (about n^2.3 between n = 20 and 50), else the polynomial
        grams = float(len(cfg.codes) * len(cfg.ks))
        n = int(max(cfg.n))
        measured = 1.0 if n <= int(cfg.measure_max_n) else 0.0
        return [1.0, measured * grams * n ** 3, measured * grams * n ** 2]
    if cell.kind not in ("ntk-distance", "flip-rate"):
        return [1.0]
    epochs = cfg.train.epochs if cfg.train.epochs is not None else 500
    n, m, d = int(cfg.data.n), int(cfg.width), _dim(cfg)
    if cell.kind == "ntk-distance":
        nt = n + int(cfg.data.n_test)
        return [1.0, float(n * epochs * m * d), float(nt * nt * (m + d))]
    if cell.kind == "flip-rate":
        trainings = 2 + (1 if cfg.null_eps is not None else 0)
        adv = float(cfg.adv_train_steps) if cfg.adv_train else 0.0
        train = float(n * epochs * m * d)
        att = 1.0 if _transductive(cfg.model) else 0.0
        return [1.0, trainings * train, adv * trainings * train, float(trainings * n * n * (m + d)),
                att * trainings * n * d * d, att * adv * trainings * n * epochs * d * d]
    return [1.0]


# What a cell costs inside an audit beyond its own computation (result transfer, provenance, the
# executor's bookkeeping), from two audits on 2 workers (2026-12-01): 1.0 s gave 7.0 min against a measured
# 4.6 min on the 358-cell quick reference run, 0 s gave a third of a 252-cell run's wall time.
AUDIT_OVERHEAD_S = {"ntk-distance": 0.3, "flip-rate": 0.3}


def cell_seconds(cell, coefficients: dict | None = None) -> float:
    """Predicted seconds of one cell on one thread, inside an audit."""
    if cell.kind == "theory" and coefficients is None and cell.config.claim in THEORY_SECONDS:
        return THEORY_SECONDS[cell.config.claim]
    coef = (coefficients or COEFFICIENTS).get(cell.kind, (5.0,))
    overhead = AUDIT_OVERHEAD_S.get(cell.kind, 0.0) if coefficients is None else 0.0
    return overhead + float(sum(c * f for c, f in zip(coef, features(cell))))


def estimate_seconds(cells, workers: int, coefficients: dict | None = None) -> float:
    """Wall-time estimate: the cells' predicted seconds spread greedily over the workers, costliest first."""
    loads = [0.0] * max(1, int(workers))
    for s in sorted((cell_seconds(c, coefficients) for c in cells), reverse=True):
        i = loads.index(min(loads))
        loads[i] += s
    return max(loads) if cells else 0.0
