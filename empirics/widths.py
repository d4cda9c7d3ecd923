"""κ of real data as each model sees it, the widths Thm 4.7 predicts, and the widths measured.

Views (the data "as the model sees it"):

* ``relu``: the unit rows X; G = X Xᵀ.
* ``mlp-attn``: the normalised attention features Z = normalize(X C), C = XᵀX; its Gram
  G̃ = D G³ D (D the row normalisation). Also reported: κ of G³ itself (= κ(G)³ exactly,
  from the singular values of X), the quantity of Thm 4.7.

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

Measured widths: from a fitted line ``ln d = intercept + slope · ln m`` of each distance
(``ntk_distance.fit_slopes``), the width at which ``d = ε``:
``m_ε = exp((ln ε − intercept)/slope)`` when the slope is negative; a nonnegative slope
means the fit never reaches ε (reported as null with the reason); a distance already below
ε at the smallest swept width is still extrapolated (flagged ``extrapolated: below range``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from malleability.empirics.data import DataConfig, load_dataset, unit_rows
from malleability.empirics.models import MODEL_KINDS, attention_matrix, embed
from malleability.errors import require
from malleability.provenance import provenance

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


def view_features(kind: str, x_unit: np.ndarray) -> np.ndarray:
    """The rows as ``kind`` sees them (float64)."""
    xt = torch.from_numpy(np.ascontiguousarray(x_unit, dtype=np.float64))
    C = attention_matrix(xt) if kind == "mlp-attn" else None
    return embed(kind, xt, C).numpy()


def measured_widths(slopes: dict, eps: float) -> dict:
    """``{dataset: {model: {distance: {...}}}}`` widths where each fitted distance reaches eps."""
    out: dict = {}
    for dataset, by_model in slopes.items():
        for model, by_name in by_model.items():
            for name, fit in by_name.items():
                entry = {"log10_width": None, "width": None, "slope": fit.get("slope"), "note": None}
                slope, icpt = fit.get("slope"), fit.get("intercept")
                if slope is None:
                    entry["note"] = "fewer than two widths: no fit"
                elif slope >= 0:
                    entry["note"] = "fitted slope >= 0: the distance does not shrink with width"
                else:
                    ln_m = (math.log(eps) - icpt) / slope
                    lw = ln_m / math.log(10)
                    entry.update(log10_width=lw, width=width_from_log10(lw))
                    widths = fit.get("widths") or []
                    if widths and lw < math.log10(min(widths)):
                        entry["note"] = "extrapolated: below range"
                    elif widths and lw > math.log10(max(widths)):
                        entry["note"] = "extrapolated: above range"
                out.setdefault(dataset, {}).setdefault(model, {})[name] = entry
    return out


def width_report(data_cfg: DataConfig, eps: float, rows=None, ns=None) -> dict:
    """κ(G), pseudo-κ, κ_d per view and per n, predicted widths (v1, v2), measured widths from rows.

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
        for kind in MODEL_KINDS:
            cond = conditioning_of(view_features(kind, x))
            views[kind] = {
                "conditioning": cond,
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
        "paper_reported": {"kappa_G": {"mnist": 1.2e3, "cifar10": 8.7e3},
                           "log10_width_v1_lower": {"mnist": 18, "cifar10": 24},
                           "log10_width_v2_lower": {"mnist": 24, "cifar10": 29}},
        "data": ds.describe(),
        "config": {**data_cfg.__dict__, "classes": list(data_cfg.classes) if data_cfg.classes else None},
        "provenance": provenance(),
    }
    if rows:
        from malleability.empirics.ntk_distance import fit_slopes

        slopes = fit_slopes(rows)
        report["slopes"] = slopes
        report["measured"] = measured_widths(slopes, float(eps))
    else:
        report["measured"] = None
    return report
