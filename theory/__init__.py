"""The theory audit: exact / float64 / mpmath checks of Thm 4.1, Thm 4.7 (+ width), k-layer and Prop 4.5.

Public API:
    check_claims(ids=None, profile="quick") -> list[ClaimResult]   (ClaimResult.to_dict(): one `claims` element)
    inspect_matrix(X, layers=3, recursion=None) -> dict             (the JSON of `theory inspect`)
    sensitivity(X, i, j, eps) -> dict                               (the JSON of `theory sensitivity`)
    conditioning.condition_numbers(X) -> dict                        (κ of G, G³, pseudo and κ_d, with precision)
"""

from malleability.theory.claims import CLAIM_IDS, PROFILES, ClaimResult, check_claims
from malleability.theory.inspect import inspect_matrix
from malleability.theory.sensitivity import sensitivity

__all__ = ["CLAIM_IDS", "PROFILES", "ClaimResult", "check_claims", "inspect_matrix", "sensitivity"]
