"""The claims of the paper: one file per claim, one registry, one entry point.

Registry: :data:`CLAIMS` maps a claim id to a frozen :class:`Claim` (``id``,
``statement``, ``as_stated`` = the name of the reading that is the paper's statement as
printed, ``check(profile) -> list[Reading]``), in the order ``theory check`` reports them;
:data:`CLAIM_IDS` is ``tuple(CLAIMS)``. ``theory check`` and the audit read only this
registry.

Adding a claim touches exactly two places:

1. a new file ``theory/claims/<name>.py`` whose check function is decorated with
   ``@register("<id>", statement="...", as_stated="as-stated")`` (``register`` is
   imported from this package) and returns one :class:`Reading` per reading, one of them
   named as ``as_stated``;
2. its name in the ``from malleability.theory.claims import ...`` line at the bottom of
   this file (the import order is the report order).

Profiles: ``quick`` (the default of ``theory check``; every claim in well under a minute
on one core) and ``thorough`` (larger shapes, more matrices, k up to 4, wider widths).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from malleability.errors import MalleabilityError, require
from malleability.theory.claims.base import PROFILES, ClaimResult, Profile, Reading
from malleability.theory.claims.verdicts import VERDICTS, claim_verdict


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    as_stated: str
    check: Callable[[Profile], list]


CLAIMS: dict[str, Claim] = {}


def register(claim_id: str, *, statement: str, as_stated: str = "as-stated"):
    """Decorator: register ``check(profile) -> list[Reading]`` as the checker of ``claim_id``."""

    def deco(fn):
        if claim_id in CLAIMS:
            raise RuntimeError(f"claim {claim_id!r} registered twice")
        CLAIMS[claim_id] = Claim(claim_id, statement, as_stated, fn)
        return fn

    return deco


# Seconds per claim and profile on one thread of the cost model's reference CPU (2-core AMD EPYC, quick timed
# 2026-12-04). thorough: timed 2026-12-07 on a 2-core Xeon, one thread, and scaled by that run's quick/quick ratio
# to the reference (1.20); thm4.7's exhaustive 3x3 search dominates it.
EXPECTED_SECONDS: dict[str, dict[str, float]] = {
    "quick": {"thm4.1": 0.56, "thm4.7": 5.25, "thm4.7-width": 1.02, "k-layer": 0.10, "prop4.5": 1.74},
    "thorough": {"thm4.1": 5.7, "thm4.7": 143.6, "thm4.7-width": 10.5, "k-layer": 0.12, "prop4.5": 59.5},
}


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def check_claims(ids: list[str] | None = None, profile: str = "quick",
                 progress: Callable | None = None) -> list[ClaimResult]:
    """Check the named claims (all when None) under a profile; one ClaimResult per claim, in order.

    ``progress`` gets a line before each claim (its expected time on the reference CPU, and the
    time left in all) and one after it (the time it took)."""
    require(profile in PROFILES, f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    ids = list(CLAIMS) if not ids else list(ids)
    for cid in ids:
        if cid not in CLAIMS:
            raise MalleabilityError(f"unknown claim id {cid!r}: use one of {', '.join(CLAIMS)}")
    prof = PROFILES[profile]
    results = []
    expected = EXPECTED_SECONDS.get(profile, {})
    for i, cid in enumerate(ids):
        claim = CLAIMS[cid]
        if progress:
            mine, left = expected.get(cid), sum(expected.get(c, 0.0) for c in ids[i:])
            about = "" if mine is None else (f"; about {_minutes(mine)} on the reference CPU, "
                                             f"{_minutes(left)} left in all")
            progress(f"checking {cid} ({profile}{about})")
        t0 = time.perf_counter()
        readings = claim.check(prof)
        names = [r.name for r in readings]
        if claim.as_stated not in names:
            raise RuntimeError(f"claim {cid}: no reading named {claim.as_stated!r} among {names}")
        results.append(ClaimResult(cid, claim.statement, readings, as_stated=claim.as_stated,
                                   seconds=time.perf_counter() - t0))
        if progress:
            progress(f"checked {cid} in {_minutes(results[-1].seconds)}")
    return results


# The claim files, in report order (each registers itself on import).
from malleability.theory.claims import thm4_1, thm4_7, width, k_layer, prop4_5  # noqa: E402

_CLAIM_MODULES = (thm4_1, thm4_7, width, k_layer, prop4_5)

CLAIM_IDS = tuple(CLAIMS)

__all__ = ["CLAIMS", "CLAIM_IDS", "Claim", "ClaimResult", "EXPECTED_SECONDS", "PROFILES", "Profile", "Reading",
           "VERDICTS", "check_claims", "claim_verdict", "register"]
