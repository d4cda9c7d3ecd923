"""Thm 4.7 (first half): κ(G̃) = κ(G)³ for the attention-transformed Gram G̃ = G³.

The as-stated reading is the 2-norm (spectral) condition number on nonsingular G, the
norm in which condition numbers of symmetric matrices are usually meant. The 1-, ∞- and
Frobenius norms, the normalised kernel and the infinite-width NTK are further readings.
"""

from __future__ import annotations

import mpmath
import numpy as np

from malleability.theory import exact
from malleability.theory.claims import register
from malleability.theory.claims.base import Profile, Reading, float_family, int_candidates, mp, named, search
from malleability.theory.conditioning import condition_numbers
from malleability.theory.kernels import mp_ntk_inf_entry, mp_normalised_kernel


def mp_kappa_2_sym(a, dps: int = 50):
    """κ₂ of a symmetric matrix (exact/float entries) by an mpmath eigensolve with dps digits."""
    with mpmath.workdps(dps):
        m = mpmath.matrix([[mp(v) for v in row] for row in (a.tolist() if isinstance(a, np.ndarray) else a)])
        w = mpmath.eigsy(m, eigvals_only=True)
        ab = [abs(w[i]) for i in range(len(w))]
        lo = min(ab)
        return mpmath.inf if lo == 0 else max(ab) / lo


def _exact_cube_pair(x):
    xe = exact.to_exact(x)
    g = exact.gram(xe)
    return g, exact.matpow(g, 3)


def _kappa_exact_norm(a, which):
    inv = exact.inverse(a)
    if inv is None:
        return None
    if which == "1":
        return exact.norm1(a) * exact.norm1(inv)
    if which == "inf":
        return exact.norm_inf(a) * exact.norm_inf(inv)
    return exact.fro_sq(a) * exact.fro_sq(inv)  # squared κ_F


@register("thm4.7", statement="κ(G̃) = κ(G)³ for the attention-transformed Gram G̃")
def check_thm47(prof: Profile) -> list[Reading]:
    rng = np.random.default_rng(prof.seed + 1)
    readings = []

    def two_norm(x, pseudo=False):
        n, d = x.shape
        g, g3 = _exact_cube_pair(x)
        with mpmath.workdps(60):
            ev = mpmath.eigsy(mpmath.matrix([[mp(v) for v in r] for r in g]), eigvals_only=True)
            ev3 = mpmath.eigsy(mpmath.matrix([[mp(v) for v in r] for r in g3]), eigvals_only=True)
            ev = sorted(abs(ev[i]) for i in range(n))
            ev3 = sorted(abs(ev3[i]) for i in range(n))
            tol = mpmath.mpf(10) ** -40 * max(ev[-1], 1)
            nz = [v for v in ev if v > tol]
            nz3 = [v for v in ev3 if v > mpmath.mpf(10) ** -40 * max(ev3[-1], 1)]
            if not pseudo:
                if len(nz) < n:
                    return "skip"
            elif len(nz) == n or not nz:
                return "skip"  # the pseudo reading is about singular G
            k, k3 = nz[-1] / nz[0], nz3[-1] / nz3[0]
            if abs(k3 - k**3) > mpmath.mpf(10) ** -30 * k**3:
                return {"kappa_G": mpmath.nstr(k, 15), "kappa_G3": mpmath.nstr(k3, 15)}
        return None

    readings.append(named(search(two_norm, int_candidates(prof, rng, shape_filter=lambda n, d: n <= d),
                                  precision="mpmath-60", kind="integer matrices with nonsingular G"), "as-stated",
                           norm="2 (spectral), from eigenvalues"))
    def singular_both_infinite(x):
        g, g3 = _exact_cube_pair(x)
        if exact.inverse(g) is not None:
            return "skip"
        return None if exact.inverse(g3) is None else {"G3_invertible_while_G_singular": True}

    readings.append(named(search(singular_both_infinite, int_candidates(prof, rng),
                                  precision="exact (rational)", kind="integer matrices with singular G"),
                           "2-norm-singular",
                           note="G singular ⇒ κ₂(G) = κ₂(G³) = ∞ and ∞ = ∞³ (vacuous; see pseudo-2-norm)"))
    readings.append(named(search(lambda x: two_norm(x, True), int_candidates(prof, rng),
                                  precision="mpmath-60", kind="integer matrices with singular G"), "pseudo-2-norm",
                           rank_tolerance="eigenvalues of G above 1e-40·λ_max at 60 digits (exact zeros otherwise)"))

    def kappa_d(x):
        c = condition_numbers(x, powers=(1, 3))
        if c["kappa_d"] is None or c["rank"] < min(x.shape):
            return "skip"
        k, k3 = mp(c["kappa_d"]), mp(c["kappa_d3"])
        tol = max(1e-12, 50 * c["relative_error_bound"])
        return None if abs(k3 - k**3) <= tol * k**3 else {"kappa_d": c["kappa_d"], "kappa_d3": c["kappa_d3"]}

    readings.append(named(search(kappa_d, float_family(prof, rng, n_over_d="gt"), precision="float64/mpmath",
                                  kind="spectrum-prescribed matrices, n > d"), "kappa_d",
                           meaning="v2: κ of the rank-min(n,d) truncation"))

    for which in ("1", "inf", "fro"):
        def other_norm(x, which=which):
            g, g3 = _exact_cube_pair(x)
            k, k3 = _kappa_exact_norm(g, which), _kappa_exact_norm(g3, which)
            if k is None:
                return "skip"
            if k3 != k**3:
                label = "kappa_sq" if which == "fro" else "kappa"
                return {"G": exact.as_json_exact(g), f"{label}_G": str(k), f"{label}_G3": str(k3),
                        f"{label}_G_cubed": str(k**3)}
            return None

        readings.append(named(search(other_norm, int_candidates(prof, rng), precision="exact (rational)",
                                      kind="integer matrices with nonsingular G, smallest first"), f"{which}-norm",
                               note="Frobenius compares squared κ exactly" if which == "fro" else "induced norm"))

    def kernel_kappa(x, ntk=False):
        n = x.shape[0]
        if np.any(~np.any(x != 0, axis=1)):
            return "skip"
        g, _ = _exact_cube_pair(x)
        if exact.inverse(g) is None:
            return "skip"  # singular G: κ(G) infinite, the claim compares nothing
        kg = mp_kappa_2_sym(g, 40)
        with mpmath.workdps(40):
            k = mp_normalised_kernel(np.asarray(x, dtype=float), 40)
            mat = [[mp_ntk_inf_entry(k[i, j]) if ntk else k[i, j] for j in range(n)] for i in range(n)]
            kk = mp_kappa_2_sym(mat, 40)
            if kk == mpmath.inf or abs(kk - kg**3) > mpmath.mpf(10) ** -25 * kg**3:
                return {"kappa_G": mpmath.nstr(kg, 12), "kappa_G_cubed": mpmath.nstr(kg**3, 12),
                        ("kappa_ntk_inf" if ntk else "kappa_K_norm"): mpmath.nstr(kk, 12)}
        return None

    readings.append(named(search(kernel_kappa, int_candidates(prof, rng, shape_filter=lambda n, d: n <= d),
                                  precision="mpmath-40", kind="integer matrices, smallest first"), "normalised-kernel",
                           meaning="κ₂(D^-1/2 G³ D^-1/2) = κ₂(G)³"))
    readings.append(named(search(lambda x: kernel_kappa(x, True),
                                  int_candidates(prof, rng, shape_filter=lambda n, d: n <= d),
                                  precision="mpmath-40", kind="integer matrices, smallest first"), "ntk-inf",
                           meaning="κ₂ of the infinite-width NTK on Z = κ₂(G)³"))
    return readings


