"""k-layer extension: k layers of linearised attention give G^(2k+1), hence κ(G)^(2k+1).

The paper does not define its k-layer model. The as-stated reading is stacked
self-attention, X_{l+1} = X_l X_lᵀ X_l (recursion ``ccc``): it is what "k layers of
linearised attention" most plausibly means (each layer is the one-layer model applied to
the previous layer's output), and it gives Gram_k = G^(3^k), not G^(2k+1). Every other
recursion of :mod:`malleability.theory.layers` is a further reading; only ``iic``, ``ici``
and ``cii`` (the input's attention map applied to the current layer, or the current layer
attending over the input) give the paper's G^(2k+1).
"""

from __future__ import annotations

import dataclasses

import mpmath
import numpy as np

from malleability.properties import generators as gen
from malleability.theory import exact
from malleability.theory import layers as L
from malleability.theory.claims import register
from malleability.theory.claims.base import Profile, Reading, int_candidates, named, search
from malleability.theory.conditioning import condition_numbers


@register("k-layer", statement="k layers of linearised attention give G^(2k+1), hence κ(G)^(2k+1)")
def check_k_layer(prof: Profile) -> list[Reading]:
    rng = np.random.default_rng(prof.seed + 3)
    readings = []
    cands = [x for x in int_candidates(Profile(**{**dataclasses.asdict(prof), "max_n": min(prof.max_n, 3),
                                                    "max_d": min(prof.max_d, 3), "enum_limit": 100,
                                                    "random_per_shape": 6}), rng)
             if x.shape[0] >= 2]
    max_power = 3**prof.max_k + 2
    fl_x = gen.conditioned_matrix(rng, n=4, d=6, kappa_x=10.0)  # κ(G) = 100: log κ(Gram_k)/log κ(G)
    fl_c = condition_numbers(fl_x, powers=(1, 3**prof.max_k), keep_singular_values=True)
    for code in ("ccc",) + tuple(c for c in L.ALL_RECURSIONS if c != "ccc"):
        def fails(x, code=code):
            xe = exact.to_exact(x)
            g = exact.gram(xe)
            if exact.equal(exact.matmul(g, g), g):
                return "skip"  # all eigenvalues in {0, 1}: the powers of G coincide
            for k, xk in enumerate(L.exact_layers(xe, code, prof.max_k), start=1):
                p = L.gram_power_exponent(exact.gram(xk), g, max_power)
                if p != L.claimed_exponent(k):
                    return {"k": k, "exponent": p, "claimed_exponent": L.claimed_exponent(k),
                            "gram_polynomial": L.gram_polynomial(code, k)}
            return None

        r = search(fails, cands, precision="exact (integer)", kind="integer matrices, G² ≠ G")
        kappa_exps = {}
        for k in range(1, prof.max_k + 1):
            gk = L.gram_kappas_from_singular_values(fl_c["singular_values"], fl_c["rank"], fl_x.shape[0], code, k)
            kappa_exps[k] = float(mpmath.log(gk["kappa"]) / mpmath.log(mpmath.mpf(fl_c["kappa_G"])))
        r.evidence.update(recursion=code, k_checked=list(range(1, prof.max_k + 1)),
                          kappa_exponent_on_float_matrix=kappa_exps,
                          exponents={k: (L.monomial_degree(L.gram_polynomial(code, k))) for k in
                                     range(1, prof.max_k + 1)})
        readings.append(named(r, "as-stated" if code == "ccc" else code))
        if code == "ccc":
            r.evidence["meaning"] = "stacked self-attention X_{l+1} = X_l X_lᵀ X_l (recursion ccc)"
    return readings


