"""Thm 4.1: K_LinAttn = G³, i.e. (X Xᵀ X)(X Xᵀ X)ᵀ = G³ with G = X Xᵀ.

Readings: ``as-stated`` (exact rationals on integer matrices), ``symbolic`` (a sympy proof
per small shape), ``float64`` and ``mpmath`` (spectrum-prescribed float matrices), and the
kernels the model actually uses: ``normalised-features`` (D^-1/2 G³ D^-1/2 = G³?),
``ntk-inf`` and ``ntk-inf-proportional`` (the Thm 4.2 NTK on Z equals K_norm, or c·K_norm?).
"""

from __future__ import annotations

import mpmath
import numpy as np

from malleability.properties import generators as gen
from malleability.theory import exact
from malleability.theory.claims import register
from malleability.theory.claims.base import Profile, Reading, float_family, int_candidates, named, search
from malleability.theory.kernels import mp_ntk_inf_entry, mp_normalised_kernel


@register("thm4.1", statement="K_LinAttn = G³: (X Xᵀ X)(X Xᵀ X)ᵀ = G³ with G = X Xᵀ")
def check_thm41(prof: Profile) -> list[Reading]:
    rng = np.random.default_rng(prof.seed)
    readings = []

    def exact_identity(x):
        xe = exact.to_exact(x)
        f = exact.matmul(exact.gram(xe), xe)
        lhs = exact.matmul(f, exact.transpose(f))
        rhs = exact.matpow(exact.gram(xe), 3)
        return None if exact.equal(lhs, rhs) else {"lhs": exact.as_json_exact(lhs), "rhs": exact.as_json_exact(rhs)}

    readings.append(named(search(exact_identity, int_candidates(prof, rng), precision="exact (rational)",
                                  kind="integer matrices, smallest first"), "as-stated"))

    # a proof for all real matrices of each small shape: the identity with symbolic entries
    import sympy

    proved, failed = [], None
    for n, d in gen.small_shapes(prof.symbolic_max, prof.symbolic_max):
        x = sympy.Matrix(n, d, lambda i, j: sympy.Symbol(f"x{i}{j}", real=True))
        g = x * x.T
        f = g * x
        diff = (f * f.T - g**3).applyfunc(sympy.expand)
        if diff != sympy.zeros(n, n):
            failed = {"shape": [n, d]}
            break
        proved.append([n, d])
    readings.append(Reading("symbolic", "fails" if failed else "holds", failed,
                            {"precision": "exact (sympy, symbolic entries)", "proved_shapes": proved,
                             "note": "a proof for every real matrix of these shapes"}))

    fl = float_family(prof, rng)

    def float_identity(x):
        f = x @ x.T @ x
        g = x @ x.T
        err = np.abs(f @ f.T - g @ g @ g).max()
        scale = np.linalg.norm(x, 2) ** 6
        tol = 50 * max(x.shape) * np.finfo(float).eps * scale
        return None if err <= tol else {"max_abs_error": float(err), "tolerance": float(tol)}

    readings.append(named(search(float_identity, fl, precision="float64", kind="spectrum-prescribed matrices"),
                           "float64", tolerance="50·max(n,d)·eps·‖X‖₂⁶"))

    def mp_identity(x):
        with mpmath.workdps(50):
            xm = mpmath.matrix(x.tolist())
            g = xm * xm.T
            f = g * xm
            diff = f * f.T - g * g * g
            err = max(abs(diff[i, j]) for i in range(diff.rows) for j in range(diff.cols))
            scale = mpmath.mnorm(xm, 2 if False else "f") ** 6
            return None if err <= mpmath.mpf(10) ** -40 * scale else {"max_abs_error": float(err)}

    readings.append(named(search(mp_identity, fl[:10], precision="mpmath-50", kind="spectrum-prescribed matrices"),
                           "mpmath"))

    # the kernel the model uses: unit-normalised features Z, K_norm = Z Zᵀ = D^-1/2 G³ D^-1/2.
    def norm_equals_cube(x):
        xe = exact.to_exact(x)
        g3 = exact.matpow(exact.gram(xe), 3)
        n = len(g3)
        if any(g3[i][i] == 0 for i in range(n)):
            return "skip"  # a zero row: K_norm undefined
        for i in range(n):
            for j in range(n):
                if g3[i][j] != 0 and g3[i][i] * g3[j][j] != 1:
                    return {"entry": [i, j], "G3_ij": str(g3[i][j]),
                            "K_norm_ij": f"{g3[i][j]}/sqrt({g3[i][i]}·{g3[j][j]})"}
        return None

    readings.append(named(search(norm_equals_cube, int_candidates(prof, rng), precision="exact (rational)",
                                  kind="integer matrices, smallest first"), "normalised-features",
                           meaning="the kernel of the ℓ2-normalised features D^-1/2 G³ D^-1/2 equals G³"))

    def ntk_equals_norm(x, proportional=False):
        if np.any(~np.any(x != 0, axis=1)):
            return "skip"
        with mpmath.workdps(30):
            k = mp_normalised_kernel(np.asarray(x, dtype=float), 30)
            n = k.rows
            theta = [[mp_ntk_inf_entry(k[i, j]) for j in range(n)] for i in range(n)]
            c = theta[0][0] / k[0, 0] if proportional else 1
            worst = max(abs(theta[i][j] - c * k[i, j]) for i in range(n) for j in range(n))
            if worst > mpmath.mpf(10) ** -20:
                return {"max_abs_difference": float(worst),
                        "ntk_inf": [[float(v) for v in r] for r in theta],
                        "K_norm": [[float(k[i, j]) for j in range(n)] for i in range(n)]}
        return None

    readings.append(named(search(ntk_equals_norm, int_candidates(prof, rng), precision="mpmath-30",
                                  kind="integer matrices, smallest first"), "ntk-inf",
                           meaning="the infinite-width ReLU NTK on Z (Thm 4.2) equals K_norm"))
    readings.append(named(search(lambda x: ntk_equals_norm(x, True), int_candidates(prof, rng),
                                  precision="mpmath-30", kind="integer matrices, smallest first"),
                           "ntk-inf-proportional", meaning="the NTK on Z equals c·K_norm for one constant c > 0"))
    return readings


