"""The four verdicts of a claim, and the pure rule that turns reading verdicts into one.

A reading is ``holds``, ``fails`` or ``not-testable``. A claim is:

* ``holds``: its as-stated reading (the paper's statement as printed) holds; readings
  under which it fails are listed as information;
* ``depends``: it does not hold as stated, but holds under at least one other reading
  (those readings are named);
* ``fails``: no reading holds, and at least one was decided and fails;
* ``not-testable``: no reading could be decided.

The audit reuses :data:`VERDICTS` and :func:`claim_verdict` for its experiment verdicts.
"""

from __future__ import annotations

from typing import Iterable, Mapping

HOLDS, DEPENDS, FAILS, NOT_TESTABLE = "holds", "depends", "fails", "not-testable"
READING_VERDICTS = (HOLDS, FAILS, NOT_TESTABLE)

VERDICTS = {
    HOLDS: ("holds as stated",
            "The paper's statement is true as printed; readings under which it fails are listed as information."),
    DEPENDS: ("holds only under a reading",
              "As printed the statement fails or cannot be decided; it is true only under the readings named."),
    FAILS: ("fails under every decided reading",
            "No reading we check makes the statement true; each failing reading has a counterexample, and readings "
            "that could not be decided (e.g. networks that did not learn) are listed as not testable."),
    NOT_TESTABLE: ("not testable", "Nothing could be decided: every reading lacked applicable evidence."),
}


def claim_verdict(as_stated_verdict: str | None, reading_verdicts: Mapping[str, str] | Iterable[str]) -> str:
    """The claim's verdict from its as-stated reading's verdict and all of its readings' verdicts.

    ``reading_verdicts`` is a mapping name -> verdict or a plain iterable of verdicts; it
    may or may not include the as-stated reading itself. ``as_stated_verdict`` None means
    the paper's statement has no computable reading.
    """
    values = list(reading_verdicts.values()) if isinstance(reading_verdicts, Mapping) else list(reading_verdicts)
    for v in values + ([as_stated_verdict] if as_stated_verdict is not None else []):
        if v not in READING_VERDICTS:
            raise ValueError(f"unknown reading verdict {v!r}: use one of {', '.join(READING_VERDICTS)}")
    if as_stated_verdict == HOLDS:
        return HOLDS
    if HOLDS in values:
        return DEPENDS
    if FAILS in values or as_stated_verdict == FAILS:
        return FAILS
    return NOT_TESTABLE


def verdict_label(verdict: str) -> str:
    return VERDICTS[verdict][0]


def verdict_meaning(verdict: str) -> str:
    return VERDICTS[verdict][1]
