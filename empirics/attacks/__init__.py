"""l-infinity adversarial attacks behind one base class (see ``base``); one file per attack.

A file of this package that defines a ``@register``-ed :class:`Attack` subclass is found and
imported automatically, so adding an attack touches that one new file (plus its tests). Each
attack's own dataclass fields (beyond the base class's eps, space, renormalize, loss_fn and
seed) are its options: experiments carry them as ``attack_options`` and the CLI offers each
as ``--<attack>-<option>``. ``noise`` is the control: random signs of the same budget, no model.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Mapping

from malleability.empirics.attacks.base import SPACES, Attack, default_loss
from malleability.errors import require

ATTACKS: dict[str, type[Attack]] = {}
PAPER_ATTACKS = ("fgsm", "pgd", "mim")  # the paper's; "noise" is our control
CONTROL = "noise"


def register(cls: type[Attack]) -> type[Attack]:
    require(cls.name and cls.name not in ATTACKS, f"attack name {cls.name!r} is empty or registered twice")
    ATTACKS[cls.name] = cls
    return cls


def option_fields(name: str) -> tuple[dataclasses.Field, ...]:
    """The attack's own options: its dataclass fields beyond the base class's."""
    base = {f.name for f in dataclasses.fields(Attack)}
    return tuple(f for f in dataclasses.fields(ATTACKS[name]) if f.name not in base)


def check_options(name: str, options: Mapping[str, Any] | None) -> dict:
    require(name in ATTACKS, f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    options = dict(options or {})
    known = {f.name for f in option_fields(name)}
    unknown = sorted(set(options) - known)
    require(not unknown, f"attack {name!r} has no option {', '.join(unknown)}"
            + (f" (its options: {', '.join(sorted(known))})" if known else " (it takes no options)"))
    for fld in option_fields(name):
        if isinstance(fld.default, bool) and fld.name in options:
            require(isinstance(options[fld.name], bool),
                    f"{name} {fld.name} must be true or false, got {options[fld.name]!r}")
    ATTACKS[name](eps=0.0, **options)  # the attack's own range checks, before any run starts
    return options


def make_attack(name: str, eps: float, **kwargs) -> Attack:
    """Build a registered attack by name; kwargs go to its constructor."""
    require(isinstance(name, str) and name.lower() in ATTACKS,
            f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    return ATTACKS[name.lower()](eps=eps, **kwargs)


for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

ATTACK_NAMES = tuple(ATTACKS)

__all__ = ["ATTACKS", "ATTACK_NAMES", "Attack", "CONTROL", "PAPER_ATTACKS", "SPACES", "check_options", "default_loss",
           "make_attack", "option_fields", "register"]
