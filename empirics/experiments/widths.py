"""κ of real data as each model sees it, the widths Thm 4.7 predicts, and the widths measured.

Views (the data "as the model sees it"; one per registered model asked for, default the
paper's two):

* ``relu``: the unit rows X; G = X Xᵀ.
* ``mlp-attn``: the normalised attention features Z = normalize(X C), C = XᵀX; its Gram
  G̃ = D G³ D (D the row normalisation). Also reported: κ of G³ itself (= κ(G)³ exactly,
  from the singular values of X), the quantity of Thm 4.7.

Each view also reports its feature collinearity: the top eigenvalue's share of Z Zᵀ and the
mean cosine between distinct rows (near 1: every row is nearly the same vector).

κ readings (from ``malleability.theory.conditioning.condition_numbers``: singular values of
X in float64, escalated to mpmath when float64 cannot resolve them; a singular value of X
counts as nonzero above max(n, d)·eps64·s_1):

* ``kappa_G`` = κ₂(G) (null when G is singular, e.g. n > d);
* ``pseudo_kappa_G`` over the nonzero spectrum;
* ``kappa_d`` of the rank-min(n, d) truncation (paper v2; null when X has lower rank).

Predicted widths (log10 always reported; the width itself only when it fits a float64 and
null beyond, never a silent inf), for each κ reading of each view:

* ``v1`` = κ⁶ / ε²            (Thm 4.7, v1)
* ``v2`` = κ⁶ · n · ln n      (Thm 4.7, v2; the paper writes it with κ_d, applied here to
  every reading for the side-by-side table; ``ε`` does not enter v2).

Measured widths: from the log-log slope of each distance over all (width, seed) points
(:func:`malleability.stats.loglog_slope`), the width at which the fit reaches ε
(:func:`malleability.stats.crossing`): only when the slope's whole 95% interval lies below 0,
labelled *extrapolated* outside the measured widths; otherwise *no trend*.

Matching the paper's κ: :func:`paper_kappa_match` finds, per view and κ reading, the n of the
measured grid whose κ is closest (in log10) to the paper's reported κ(G).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from malleability.empirics.data import DataConfig, load_dataset, unit_rows
from malleability.empirics.models import PAPER_MODELS, get_model
from malleability.errors import require
from malleability.stats import crossing

NAME = "widths"
PAPER_KAPPA = {"mnist": 1.2e3, "cifar10": 8.7e3}
KAPPA_READINGS = ("kappa_G", "pseudo_kappa_G", "kappa_d")

_LOG10_FLOAT_MAX = math.log10(np.finfo(np.float64).max)


def _log10(value) -> float | None:
    if value is None:
        return None
    try:
        import mpmath

        if isinstance(value, str):
            value = mpmath.mpf(value)
        if isinstance(value, mpmath.mpf):
            return float(mpmath.log10(value))
    except ImportError:  # pragma: no cover
        pass
    v = float(value)
    return math.log10(v) if v > 0 and math.isfinite(v) else None


def width_from_log10(log10_width: float | None) -> float | None:
    """10**log10_width when it is a finite float64, else None (the log10 is the number to read)."""
    if log10_width is None or log10_width >= _LOG10_FLOAT_MAX:
        return None
    return float(10.0**log10_width)


def predicted_widths(log10_kappa: float | None, n: int, eps: float) -> dict:
    """v1 = κ⁶/ε² and v2 = κ⁶ n ln n, as log10 and (when representable) as numbers."""
    require(eps > 0, f"eps must be > 0, got {eps}")
    out = {}
    if log10_kappa is None:
        for key in ("v1", "v2"):
            out[key] = {"log10_width": None, "width": None, "note": "κ is infinite (singular): no finite width"}
        return out
    l1 = 6 * log10_kappa - 2 * math.log10(eps)
    l2 = 6 * log10_kappa + (math.log10(n * math.log(n)) if n > 1 else -math.inf)
    for key, lw in (("v1", l1), ("v2", l2)):
        lw = None if not math.isfinite(lw) else lw
        out[key] = {"log10_width": lw, "width": width_from_log10(lw)}
    return out


def conditioning_of(x: np.ndarray) -> dict:
    """κ readings of G = X Xᵀ and G³ (theory.conditioning), plus their log10 values."""
    from malleability.theory.conditioning import condition_numbers

    info = condition_numbers(x, powers=(1, 3))
    info.pop("singular_values", None)
    for key in ("kappa_G", "pseudo_kappa_G", "kappa_d", "kappa_G3", "pseudo_kappa_G3", "kappa_d3"):
        info[f"log10_{key}"] = _log10(info.get(key))
    return info


def view_features(model: str, x_unit: np.ndarray, options: dict | None = None, seed: int = 0) -> np.ndarray:
    """The rows as ``model`` sees them (float64); a model with trainable feature parameters (qkv-attn's
    projections) at their seeded initialisation, the point the width bound speaks of."""
    m = get_model(model, options)
    xt = torch.from_numpy(np.ascontiguousarray(x_unit, dtype=np.float64))
    state = m.fit(xt)
    params = m.init_params(int(xt.shape[1]), int(seed))
    return m.features(xt, {**state, **(params or {})}).numpy()


def collinearity(z: np.ndarray) -> dict:
    """Top-eigenvalue share of Z Zᵀ and the mean cosine between distinct rows."""
    z = np.asarray(z, dtype=np.float64)
    s = np.linalg.svd(z, compute_uv=False)
    energy = float(np.sum(s**2))
    norms = np.linalg.norm(z, axis=1)
    u = z[norms > 0] / norms[norms > 0, None]
    k = u.shape[0]
    total = u.sum(axis=0)
    # a cosine is in [-1, 1]; rounding of nearly parallel rows lands a hair outside
    mean_cos = float(np.clip((total @ total - k) / (k * (k - 1)), -1.0, 1.0)) if k > 1 else None
    return {"top_eigenvalue_share": float(s[0] ** 2 / energy) if energy > 0 else None, "mean_cosine": mean_cos}


def measured_widths(ntk_summary: dict, eps: float) -> list[dict]:
    """Per slope of an NTK-distance summary: the width at which the fitted distance reaches ``eps``."""
    out = []
    for fit in ntk_summary.get("slopes", []):
        hit = crossing(fit, float(eps))
        out.append({"dataset": fit["dataset"], "model": fit["model"], "protocol": fit.get("protocol"),
                    "distance": fit["distance"], "eps": float(eps), "slope": fit.get("slope"),
                    "slope_ci95": fit.get("ci95"), "log10_width": hit["log10_x"],
                    "width": width_from_log10(hit["log10_x"]), "extrapolated": hit["extrapolated"],
                    "label": hit["label"]})
    return out


def paper_kappa_match(report: dict) -> list[dict]:
    """Per view and κ reading: the measured n whose κ is closest to the paper's κ(G) (log10 distance)."""
    paper = PAPER_KAPPA.get(report.get("dataset"))
    if paper is None:
        return []
    out = []
    views = sorted({v for e in report["per_n"] for v in e["views"]})
    for view in views:
        for reading in KAPPA_READINGS:
            pts = [(e["n"], e["views"][view]["conditioning"].get(f"log10_{reading}")) for e in report["per_n"]
                   if view in e["views"]]
            pts = [(n, lk) for n, lk in pts if lk is not None]
            if not pts:
                out.append({"view": view, "reading": reading, "n": None, "log10_kappa": None,
                            "paper_kappa": paper, "note": "κ infinite at every n (G singular)"})
                continue
            n, lk = min(pts, key=lambda p: abs(p[1] - math.log10(paper)))
            out.append({"view": view, "reading": reading, "n": n, "log10_kappa": lk, "paper_kappa": paper,
                        "log10_gap": lk - math.log10(paper)})
    return out


def width_report(data_cfg: DataConfig, eps: float, rows=None, ns=None, models=PAPER_MODELS,
                 model_options: dict | None = None) -> dict:
    """κ(G), pseudo-κ, κ_d per view and per n, predicted widths (v1, v2), measured widths from rows.

    ``model_options``: {model: options} (e.g. ``{"truncated-attn": {"rank": 10}}``); trainable feature
    parameters are taken at their initialisation seeded by the data seed.

    ``ns``: sample sizes to evaluate (each a prefix of the seeded subset); None -> (n // 10, n)
    with n = data_cfg.n (just (n,) when n < 20).
    ``rows``: NTK-distance rows (``run_ntk_distance_cell`` output) for the measured widths.
    """
    require(float(eps) > 0, f"eps must be > 0, got {eps}")
    if ns is None:
        n0 = int(data_cfg.n)
        ns = (n0 // 10, n0) if n0 >= 20 else (n0,)
    ns = tuple(int(n) for n in ns)
    require(all(n >= 1 for n in ns), "every n must be >= 1")
    ds = load_dataset(DataConfig(**{**data_cfg.__dict__, "n": max(ns)}))
    per_n = []
    for n in ns:
        x = unit_rows(ds.pixels_train[:n])
        views = {}
        for kind in models:
            z = view_features(kind, x, (model_options or {}).get(kind), seed=int(data_cfg.seed))
            cond = conditioning_of(z)
            views[kind] = {
                "conditioning": cond,
                "collinearity": collinearity(z),
                "predicted": {
                    reading: predicted_widths(cond[f"log10_{reading}"], n, float(eps))
                    for reading in ("kappa_G", "pseudo_kappa_G", "kappa_d")
                },
            }
        # Thm 4.7 reads the width off κ(G) of the raw data: κ(G̃) = κ(G)³ -> m = Ω(κ(G)⁶/ε²).
        per_n.append({"n": n, "d": int(x.shape[1]), "views": views})
    report = {
        "dataset": ds.name,
        "eps": float(eps),
        "per_n": per_n,
        "formulas": {"v1": "kappa^6 / eps^2", "v2": "kappa^6 * n * ln(n)"},
        "paper_reported": {"kappa_G": PAPER_KAPPA,
                           "log10_width_v1_lower": {"mnist": 18, "cifar10": 24},
                           "log10_width_v2_lower": {"mnist": 24, "cifar10": 29}},
        "data": ds.describe(),
        "config": {**data_cfg.__dict__, "classes": list(data_cfg.classes) if data_cfg.classes else None},
    }
    first = per_n[0]["views"].get("relu") or next(iter(per_n[0]["views"].values()))
    for key in KAPPA_READINGS:  # the first n's κ of the data, at the top level (the command's original keys)
        report[key] = first["conditioning"].get(key)
    report["paper_kappa_match"] = paper_kappa_match(report)
    if rows:
        from malleability.empirics.experiments.ntk_distance import summarise

        report["measured"] = measured_widths(summarise(rows), float(eps))
    else:
        report["measured"] = None
    return report
