"""l-infinity adversarial attacks (FGSM, PGD, MIM) behind one base class; see ``base``.

``noise`` is the control: random signs of the same budget, no model (see ``noise``).
"""

from __future__ import annotations

from malleability.empirics.attacks.base import SPACES, Attack, default_loss
from malleability.empirics.attacks.fgsm import FGSM
from malleability.empirics.attacks.mim import MIM
from malleability.empirics.attacks.noise import Noise
from malleability.empirics.attacks.pgd import PGD
from malleability.errors import require

ATTACKS = {"fgsm": FGSM, "pgd": PGD, "mim": MIM, "noise": Noise}
PAPER_ATTACKS = ("fgsm", "pgd", "mim")  # the paper's; "noise" is our control
ATTACK_NAMES = tuple(ATTACKS)


def make_attack(name: str, eps: float, **kwargs) -> Attack:
    """Build an attack by name ('fgsm' | 'pgd' | 'mim' | 'noise', the control); kwargs go to its constructor."""
    require(isinstance(name, str) and name.lower() in ATTACKS, f"unknown attack {name!r}; choose one of {', '.join(ATTACK_NAMES)}")
    return ATTACKS[name.lower()](eps=eps, **kwargs)


__all__ = ["ATTACKS", "ATTACK_NAMES", "Attack", "FGSM", "MIM", "Noise", "PAPER_ATTACKS", "PGD", "SPACES", "default_loss", "make_attack"]
