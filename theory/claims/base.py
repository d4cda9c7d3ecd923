"""What every claim checker shares: profiles, readings, results and the counterexample search.

A reading's verdict is ``holds`` (no counterexample among the matrices checked; the
evidence says how many and which precision: a search, not a proof, except where the
evidence says "proof"), ``fails`` (with the smallest counterexample found: small shapes
first, then small entries, then greedy shrinking of the entries), or ``not-testable``
(with why). :func:`malleability.theory.claims.verdicts.claim_verdict` turns the readings
into the claim's verdict. A reading marked ``informational`` is reported but does not
enter the claim's verdict (e.g. the smallest constant that makes a width formula suffice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import mpmath
import numpy as np

from malleability.properties import generators as gen
from malleability.theory import exact
from malleability.theory.claims.verdicts import FAILS, HOLDS, NOT_TESTABLE, VERDICTS, claim_verdict


@dataclass(frozen=True)
class Profile:
    """Search sizes of one profile."""

    max_n: int = field(metadata={"help": "largest n of the exhaustive/random integer search"})
    max_d: int = field(metadata={"help": "largest d of the integer search"})
    enum_limit: int = field(metadata={"help": "enumerate all integer matrices of a shape when there are at most this many"})
    random_per_shape: int = field(metadata={"help": "random integer matrices per shape beyond the enumeration limit"})
    float_matrices: int = field(metadata={"help": "spectrum-prescribed float matrices per reading"})
    max_k: int = field(metadata={"help": "largest number of layers for k-layer"})
    symbolic_max: int = field(metadata={"help": "largest n and d of the sympy proof of Thm 4.1"})
    width_kappas: tuple = field(metadata={"help": "κ(G) values of the width experiment (1 = the identity)"})
    width_ns: tuple = field(metadata={"help": "sizes n (= d) of the width experiment"})
    width_max_log2: int = field(metadata={"help": "largest width tried is 2^this; beyond, the width is censored"})
    width_seeds: int = field(metadata={"help": "independent neuron streams per matrix (the error is their max)"})
    seed: int = field(default=0, metadata={"help": "seed of every random draw"})


PROFILES = {
    "quick": Profile(max_n=3, max_d=3, enum_limit=800, random_per_shape=400, float_matrices=150, max_k=3,
                     symbolic_max=2, width_kappas=(1.0, 3.0, 10.0, 100.0, 1e3, 1e4), width_ns=(4, 8),
                     width_max_log2=18, width_seeds=3),
    "thorough": Profile(max_n=4, max_d=4, enum_limit=20000, random_per_shape=1500, float_matrices=400, max_k=4,
                        symbolic_max=3, width_kappas=(1.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4), width_ns=(4, 8, 16),
                        width_max_log2=19, width_seeds=5),
}


@dataclass
class Reading:
    name: str
    verdict: str
    counterexample: dict | None
    evidence: dict
    informational: bool = False

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.verdict, "counterexample": self.counterexample,
                "evidence": self.evidence, "informational": self.informational}


@dataclass
class ClaimResult:
    id: str
    statement: str
    readings: list
    as_stated: str = "as-stated"
    seconds: float = 0.0

    def _judged(self) -> dict:
        return {r.name: r.verdict for r in self.readings if not r.informational}

    @property
    def verdict(self) -> str:
        judged = self._judged()
        return claim_verdict(judged.get(self.as_stated), judged)

    @property
    def counterexample(self) -> dict | None:
        """The as-stated reading's counterexample if it fails, else the first failing reading's."""
        fails = [r for r in self.readings if r.verdict == FAILS and not r.informational]
        for r in fails:
            if r.name == self.as_stated:
                return {"reading": r.name, **r.counterexample}
        return {"reading": fails[0].name, **fails[0].counterexample} if fails else None

    def to_dict(self) -> dict:
        judged = self._judged()
        verdict = self.verdict
        label, meaning = VERDICTS[verdict]
        return {"id": self.id, "statement": self.statement, "as_stated": self.as_stated, "verdict": verdict,
                "verdict_label": label, "meaning": meaning, "counterexample": self.counterexample,
                "readings_holding": [k for k, v in judged.items() if v == HOLDS],
                "readings_failing": [k for k, v in judged.items() if v == FAILS],
                "readings_not_testable": [k for k, v in judged.items() if v == NOT_TESTABLE],
                "readings": [r.to_dict() for r in self.readings]}


# ----------------------------------------------------------------------------- search engine


def int_candidates(prof: Profile, rng, shape_filter=None):
    """Integer matrices, smallest first: shapes by n·d, then entries in {-1,0,1}, then {-2..2}."""
    for n, d in gen.small_shapes(prof.max_n, prof.max_d):
        if shape_filter is not None and not shape_filter(n, d):
            continue
        for max_abs in (1, 2):
            enumerable = (2 * max_abs + 1) ** (n * d) <= prof.enum_limit
            yield from gen.integer_matrices(n=n, d=d, max_abs=max_abs,
                                            limit=max(prof.enum_limit, 1) if enumerable else prof.random_per_shape,
                                            rng=rng)


def shrink(x: np.ndarray, fails: Callable) -> np.ndarray:
    """Greedy: move entries towards 0 by 1 while the matrix still fails."""
    x = x.copy()
    changed = True
    while changed:
        changed = False
        for idx in np.ndindex(x.shape):
            if x[idx] == 0:
                continue
            y = x.copy()
            y[idx] -= np.sign(y[idx])
            if fails(y) is not None:
                x, changed = y, True
    return x


def search(fails: Callable, candidates, *, precision: str, kind: str, do_shrink: bool = True) -> Reading:
    """Run ``fails`` (None = ok, 'skip' = not applicable, dict = failure details) over candidates."""
    checked = skipped = 0
    for x in candidates:
        res = fails(x)
        if res == "skip":
            skipped += 1
            continue
        checked += 1
        if res is not None:
            integer = np.issubdtype(np.asarray(x).dtype, np.integer)
            if do_shrink and integer:
                x = shrink(np.asarray(x), lambda y: (lambda r: None if r in (None, "skip") else r)(fails(y)))
                res = fails(x)
            ce = {"X": exact.as_json_exact(np.asarray(x).tolist()) if integer else np.asarray(x).tolist(), **res}
            return Reading("", FAILS, ce, {"matrices_checked": checked, "skipped": skipped, "precision": precision,
                                           "search": kind})
    if checked == 0:
        return Reading("", NOT_TESTABLE, None, {"why": "no applicable matrix was generated", "skipped": skipped})
    return Reading("", HOLDS, None, {"matrices_checked": checked, "skipped": skipped, "precision": precision,
                                     "search": kind, "note": "no counterexample found (a search, not a proof)"})


def named(r: Reading, name: str, **extra) -> Reading:
    r.name = name
    r.evidence.update(extra)
    return r


def float_family(prof: Profile, rng, *, n_over_d: str = "any", count: int | None = None):
    out = []
    for _ in range(count or prof.float_matrices):
        d = int(rng.integers(1, 7))
        if n_over_d == "le":
            n = int(rng.integers(1, d + 1))
        elif n_over_d == "gt":
            n = d + int(rng.integers(1, 5))
        else:
            n = int(rng.integers(1, 7))
        kx = 10.0 ** rng.uniform(0, 2.5)
        out.append(gen.conditioned_matrix(rng, n=n, d=d, kappa_x=kx))
    return out


def mp(v):
    """An exact number (Fraction, int, float) as an mpf of the current precision."""
    if isinstance(v, Fraction):
        return mpmath.mpf(v.numerator) / v.denominator
    return mpmath.mpf(v)

