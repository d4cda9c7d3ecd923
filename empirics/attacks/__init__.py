"""l-infinity adversarial attacks (FGSM, PGD, MIM) behind one base class; see ``base``."""

from __future__ import annotations

from malleability.empirics.attacks.base import SPACES, Attack, default_loss
from malleability.empirics.attacks.fgsm import FGSM
from malleability.empirics.attacks.mim import MIM
from malleability.empirics.attacks.pgd import PGD
from malleability.errors import require

ATTACKS = {"fgsm": FGSM, "pgd": PGD, "mim": MIM}
ATTACK_NAMES = tuple(ATTACKS)


def make_attack(name: str, eps: float, **kwargs) -> Attack:
    """Build an attack by name ('fgsm' | 'pgd' | 'mim'); kwargs go to its constructor."""
    require(isinstance(name, str) and name.lower() in ATTACKS, f"unknown attack {name!r}; choose one of {', '.join(ATTACK_NAMES)}")
    return ATTACKS[name.lower()](eps=eps, **kwargs)


__all__ = ["ATTACKS", "ATTACK_NAMES", "Attack", "FGSM", "MIM", "PGD", "SPACES", "default_loss", "make_attack"]
