"""``theory inspect``: every condition number of one data matrix X (rows are samples, used as given)."""

from __future__ import annotations

import math

import mpmath
import numpy as np

from malleability.errors import require
from malleability.provenance import provenance
from malleability.theory import layers as L
from malleability.theory.conditioning import _from_singular_values, number_out, singular_values
from malleability.theory.kernels import kernel_kappas
from malleability.validation import as_finite_matrix, zero_rows


MAX_LAYERS = 6  # ccc at k = 6 is already G^729; beyond, the Gram polynomials grow like 3^k


def inspect_matrix(x, layers: int = 3, recursion: str | None = None) -> dict:
    """The JSON of ``theory inspect`` (see the CLI contract in issue 2)."""
    x = as_finite_matrix(x)
    require(isinstance(layers, (int, np.integer)) and not isinstance(layers, bool) and 1 <= layers <= MAX_LAYERS,
            f"--layers must be an integer in 1..{MAX_LAYERS}, got {layers}")
    codes = [recursion] if recursion is not None else list(L.ALL_RECURSIONS)
    for c in codes:
        L.parse_recursion(c)
    n, d = x.shape
    # the largest power any layer needs decides the precision of the singular values
    p_max = 3
    for c in codes:
        p_max = max(p_max, len(L.gram_polynomial(c, int(layers))) - 1)
    s = singular_values(x)
    cond = _from_singular_values(x, s, (1, 3, p_max), allow_mpmath=True)
    warnings = list(cond["warnings"])
    svals = cond.pop("singular_values")
    rank = cond["rank"]
    out = {
        "n": n,
        "d": d,
        "rank": rank,
        "rank_tolerance": cond["rank_tolerance"],
        "kappa_G": cond["kappa_G"],
        "pseudo_kappa_G": cond["pseudo_kappa_G"],
        "kappa_d": cond["kappa_d"],
        "kappa_G3": cond["kappa_G3"],
        "pseudo_kappa_G3": cond["pseudo_kappa_G3"],
        "kappa_d3": cond["kappa_d3"],
    }
    precisions = {"G": cond["precision"]}
    zr = zero_rows(x)
    if zr.size:
        warnings.append(f"rows {zr[:10].tolist()} of X are zero: the normalised kernel and the NTK are undefined (null)")
        out.update(kappa_K_norm=None, pseudo_kappa_K_norm=None, kappa_ntk_inf=None)
    else:
        kk = kernel_kappas(x, singular_values=s)
        warnings.extend(kk["warnings"])
        precisions["K_norm"] = kk["precision"]
        out.update(
            kappa_K_norm=number_out(kk["kappa_K_norm"]),
            pseudo_kappa_K_norm=number_out(kk["pseudo_kappa_K_norm"]),
            kappa_ntk_inf=number_out(kk["kappa_ntk_inf"]),
        )
    unit_err = cond["singular_value_relative_error"]
    dps = 40
    if cond["precision"].startswith("mpmath-"):
        dps = int(cond["precision"].split("-")[1])
    base_kappa = cond["kappa_G"] if cond["kappa_G"] is not None else cond["pseudo_kappa_G"]
    layer_rows = []
    for k in range(1, int(layers) + 1):
        for c in codes:
            row = {"k": k, "recursion": c, "claimed_exponent": L.claimed_exponent(k)}
            degree = len(L.gram_polynomial(c, k)) - 1
            if 2 * degree * unit_err > 0.5 or base_kappa is None:
                row.update(exponent=None, kappa=None, pseudo_kappa=None)
                warnings.append(f"k={k} {c}: κ not reported, float64 error bound {2 * degree * unit_err:.1e}")
            else:
                g = L.gram_kappas_from_singular_values(svals, rank, n, c, k, dps=dps)
                pk = g["pseudo_kappa"]
                kap = g["kappa"]
                basis = kap if (kap is not None and cond["kappa_G"] is not None) else pk
                if base_kappa is not None and float(base_kappa) > 1 and basis is not None:
                    exp = float(mpmath.log(basis) / mpmath.log(mpmath.mpf(base_kappa)))
                else:
                    exp = None
                row.update(
                    exponent=exp,
                    exponent_basis="kappa" if cond["kappa_G"] is not None else "pseudo_kappa",
                    kappa=number_out(kap),
                    pseudo_kappa=number_out(pk),
                    gram_polynomial=g["gram_polynomial"],
                )
            layer_rows.append(row)
    out["layers"] = layer_rows
    worst = [p for p in precisions.values() if p != "float64"]
    out["precision"] = max(worst, key=lambda p: int(p.split("-")[1])) if worst else "float64"
    out["precision_by_quantity"] = precisions
    out["relative_error_bound"] = cond["relative_error_bound"]
    out["rank_tolerance_rule"] = "singular values of X above max(n, d)*eps64*s_max count as nonzero"
    out["warnings"] = warnings
    out["provenance"] = provenance()
    if base_kappa is not None and math.isclose(float(base_kappa), 1.0):
        out["warnings"].append("κ(G) = 1: the exponent log κ(Gram_k)/log κ(G) is undefined (null)")
    return out
