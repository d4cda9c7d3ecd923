"""``theory inspect``: every condition number of one data matrix X (rows are samples, used as given).

κ is scale-free, so X is first divided by a power of two near max|X| (exact; the residual
recursions, which are not scale-free, get the scale back in mpmath). k-layer
Grams: κ(Gram_k) comes from X's singular values (κ(G^p) = (s_1/s_r)^(2p) for the monomial
recursions, the layer recursion evaluated in mpmath otherwise), with the singular values
escalated to an mpmath SVD when float64 cannot resolve the largest power; every κ carries
its relative error bound (``rel_error_bound`` per layer row, ``rel_error_bounds`` for the
others), and a κ whose bound exceeds 50 % is null with a warning saying why.
"""

from __future__ import annotations

import math
import re

import mpmath
import numpy as np

from malleability.errors import require
from malleability.provenance import provenance
from malleability.theory import layers as L
from malleability.theory.conditioning import _from_singular_values, number_out, singular_values
from malleability.theory.kernels import kernel_kappas
from malleability.validation import as_finite_matrix, power_of_two_scaled, zero_rows

MAX_LAYERS = L.MAX_LAYERS
REPORT_BOUND_ABOVE = 1e-6  # the text output shows a κ's error bound when it exceeds this


def power_error_bound(unit_err: float, p: int) -> float:
    """Relative error bound of (s_1/s_r)^(2p) when each singular value has relative error unit_err."""
    if unit_err >= 1:
        return math.inf
    t = 2 * p * math.log((1 + unit_err) / (1 - unit_err))
    return math.expm1(t) if t < 700 else math.inf


def parse_layers(value) -> int:
    """K from an int or a decimal string ('12'); one-line error for anything else."""
    text = str(value).strip()
    require(not isinstance(value, bool) and re.fullmatch(r"\+?[0-9]+", text) is not None,
            f"--layers must be an integer in 1..{MAX_LAYERS}, got {value!r}")
    k = int(text)
    require(k >= 1, f"--layers must be an integer in 1..{MAX_LAYERS}, got {value!r}")
    require(k <= MAX_LAYERS, f"--layers {k} is above {MAX_LAYERS}: the Gram degree 3^{k} of stacked attention "
                             "is beyond any meaningful exponent arithmetic")
    return k


def inspect_matrix(x, layers: int = 3, recursion: str | None = None) -> dict:
    """The JSON of ``theory inspect``."""
    x = as_finite_matrix(x)
    require(isinstance(layers, (int, np.integer)) and not isinstance(layers, bool) and 1 <= layers <= MAX_LAYERS,
            f"--layers must be an integer in 1..{MAX_LAYERS}, got {layers}")
    layers = int(layers)
    codes = [recursion] if recursion is not None else list(L.ALL_RECURSIONS)
    for c in codes:
        L.parse_recursion(c)
    zr = zero_rows(x)
    require(zr.size == 0, f"X has {zr.size} zero row(s) (first: {zr[:5].tolist()}): a zero row has no unit-norm "
                          "direction, so the normalised kernel and the NTK are undefined")
    x, scale = power_of_two_scaled(x)
    n, d = x.shape
    # the largest power any layer needs decides the precision of the singular values
    p_max = max([3] + [L.gram_degree(c, layers) for c in codes])
    s = singular_values(x)
    cond = _from_singular_values(x, s, (1, 3), allow_mpmath=True, precision_power=p_max)
    warnings = list(cond["warnings"])
    svals = cond.pop("singular_values")
    rank = cond["rank"]
    unit_err = cond["singular_value_relative_error"]
    out = {
        "n": n,
        "d": d,
        "rank": rank,
        "rank_tolerance": number_out(mpmath.mpf(cond["rank_tolerance"]) * scale),
        "kappa_G": cond["kappa_G"],
        "pseudo_kappa_G": cond["pseudo_kappa_G"],
        "kappa_d": cond["kappa_d"],
        "kappa_G3": cond["kappa_G3"],
        "pseudo_kappa_G3": cond["pseudo_kappa_G3"],
        "kappa_d3": cond["kappa_d3"],
    }
    bounds = {"kappa_G": power_error_bound(unit_err, 1), "kappa_G3": power_error_bound(unit_err, 3)}
    precisions = {"G": cond["precision"]}
    kk = kernel_kappas(x, singular_values=s)
    warnings.extend(kk["warnings"])
    precisions["K_norm"] = kk["precision"]
    out.update(
        kappa_K_norm=number_out(kk["kappa_K_norm"]),
        pseudo_kappa_K_norm=number_out(kk["pseudo_kappa_K_norm"]),
        kappa_ntk_inf=number_out(kk["kappa_ntk_inf"]),
    )
    bounds["kappa_K_norm"] = kk["kappa_K_norm_rel_error_bound"]
    bounds["kappa_ntk_inf"] = kk["kappa_ntk_inf_rel_error_bound"]
    dps = 40
    if cond["precision"].startswith("mpmath-"):
        dps = max(dps, int(cond["precision"].split("-")[1]))
    base_kappa = cond["kappa_G"] if cond["kappa_G"] is not None else cond["pseudo_kappa_G"]
    layer_rows = []
    for k in range(1, layers + 1):
        for c in codes:
            row = {"k": k, "recursion": c, "claimed_exponent": L.claimed_exponent(k)}
            degree = L.gram_degree(c, k)
            bound = power_error_bound(unit_err, degree)
            if bound > 0.5 or base_kappa is None:
                row.update(exponent=None, kappa=None, pseudo_kappa=None, rel_error_bound=None)
                warnings.append(f"k={k} {c}: κ not reported: Gram degree {degree} turns the singular values' "
                                f"relative error {unit_err:.1e} into a κ error bound above 50 %")
            else:
                g = L.gram_kappas_from_singular_values(svals, rank, n, c, k, dps=dps, scale=scale)
                pk = g["pseudo_kappa"]
                kap = g["kappa"]
                basis = kap if (kap is not None and cond["kappa_G"] is not None) else pk
                with mpmath.workdps(dps):
                    if float(base_kappa) > 1 and basis is not None:
                        exp = float(mpmath.log(basis) / mpmath.log(mpmath.mpf(base_kappa)))
                    else:
                        exp = None
                row.update(
                    exponent=exp,
                    exponent_basis="kappa" if cond["kappa_G"] is not None else "pseudo_kappa",
                    kappa=number_out(kap),
                    pseudo_kappa=number_out(pk),
                    rel_error_bound=bound,
                    gram_degree=degree,
                    gram_polynomial=g["gram_polynomial"],
                )
            layer_rows.append(row)
    out["layers"] = layer_rows
    worst = [p for p in precisions.values() if p != "float64"]
    out["precision"] = max(worst, key=lambda p: int(p.split("-")[1])) if worst else "float64"
    out["precision_by_quantity"] = precisions
    out["relative_error_bound"] = cond["relative_error_bound"]
    out["rel_error_bounds"] = {key: (None if v is None or not math.isfinite(v) else v) for key, v in bounds.items()}
    out["rank_tolerance_rule"] = "singular values of X above max(n, d)*eps64*s_max count as nonzero"
    out["warnings"] = warnings
    out["provenance"] = provenance()
    if base_kappa is not None and math.isclose(float(base_kappa), 1.0):
        if cond["kappa_G"] is not None:
            out["warnings"].append("κ(G) = 1: the exponent log κ(Gram_k)/log κ(G) is undefined (null)")
        else:  # G singular: the exponent's basis is the pseudo-κ, and it is that which is 1
            out["warnings"].append("pseudo-κ(G) = 1 (G is singular; its nonzero eigenvalues are equal): the exponent "
                                   "log pseudo-κ(Gram_k)/log pseudo-κ(G) is undefined (null)")
    return out
