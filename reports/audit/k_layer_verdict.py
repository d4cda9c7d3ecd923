"""The k-layer claim on real data: does κ of k stacked linearised-attention layers grow as κ(G)^(2k+1)?

One reading per recursion code of :mod:`malleability.theory.layers` (the paper does not define
its k-layer model). A code's reading holds when the law 2k+1 fits its exponents at every k,
every data set and every n (``summary["k_layer"]["follows"]``, the experiment's own summary),
and fails otherwise. The reading closest to the paper is the one the theory claim takes:
stacked self-attention, ``ccc`` (:mod:`malleability.theory.claims.k_layer`), so the real-data
verdict is read as the theory verdict is.
"""

from __future__ import annotations

from malleability.reports.audit.verdicts import FAILS, HOLDS, judge, row

CLAIM = "k-layer-real-data"
STATEMENT = "κ of k stacked linearized-attention layers grows as κ(G)^(2k+1) (real data)"
SOURCE = "the paper's k-layer extension (theory claim k-layer), on real rows"
PAPER_LAW = "2k+1"
# theory.claims.k_layer names ccc its "as-stated" reading: each layer is the one-layer model applied to the last
AS_STATED = "ccc"
CRITERION = ("per recursion code (Q, K, V each the input X or the current layer X_l): the exponent p with "
             "κ(Gram_k) = κ(G)^p, measured by the mpmath recursion where n is small enough and from the Gram "
             "polynomial elsewhere, on the unit rows of every data set and n of the scale, is within the summary's "
             f"relative tolerance of 2k+1 at every k; the law the code follows is named. As stated: {AS_STATED} "
             "(stacked self-attention), the theory claim's as-stated reading")


def _law_text(laws: list[str]) -> str:
    return " and ".join(laws) if laws else "no law of the three"


@judge
def k_layer_real_data(results: dict, summary: dict) -> list[dict]:
    s = summary.get("k_layer")
    if not s or not s.get("follows"):
        return [row(CLAIM, STATEMENT, CRITERION, SOURCE, {}, AS_STATED, "no k-layer cells at this scale",
                    verdict="not-run")]
    follows = s["follows"]
    readings = {code: HOLDS if PAPER_LAW in laws else FAILS for code, laws in sorted(follows.items())}
    detail = "; ".join(f"{code} follows {_law_text(laws)}" for code, laws in sorted(follows.items()))
    as_stated = AS_STATED if AS_STATED in readings else None
    return [row(CLAIM, STATEMENT, CRITERION, SOURCE, readings, as_stated,
                f"{detail} (tolerance {s.get('tolerance')}; {s.get('reading')})")]


def criteria() -> dict[str, str]:
    return {CLAIM: CRITERION}
