"""The model registry: every model is one file of this package (see :mod:`.base`).

A file that defines ``@register``-ed :class:`FeatureModel` subclasses is found and imported
automatically, so adding a model touches that one new file (plus its tests). Look models up
with :func:`get_model`; :data:`BASELINE` is the model others are compared against by default.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Mapping

from malleability.empirics.models.base import FeatureModel, State, unit
from malleability.errors import MalleabilityError, require

MODELS: dict[str, type[FeatureModel]] = {}
BASELINE = "relu"
PAPER_MODELS = ("relu", "mlp-attn")


def register(cls: type[FeatureModel]) -> type[FeatureModel]:
    require(cls.name and cls.name not in MODELS, f"model name {cls.name!r} is empty or registered twice")
    MODELS[cls.name] = cls
    return cls


def model_names() -> tuple[str, ...]:
    return tuple(MODELS)


def check_model(name: str) -> str:
    if name not in MODELS:
        raise MalleabilityError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return name


def get_model(name: str, options: Mapping[str, Any] | None = None) -> FeatureModel:
    """The registered model ``name`` with its ``options`` (unknown options are an error)."""
    cls = MODELS[check_model(name)]
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    require(not unknown, f"model {name!r} has no option {', '.join(unknown)}"
            + (f" (its options: {', '.join(sorted(known))})" if known else " (it takes no options)"))
    return cls(**options)


def check_models(models, model_options: Mapping[str, Mapping[str, Any]] | None, d: int, n: int | None = None) -> None:
    """Every model with its options built and asked whether it takes rows of d values (and n training rows):
    a bad option (a patch size that does not divide the image, a rank above n, say) is refused before any data
    is loaded or trained on."""
    for name in models:
        model = get_model(name, (model_options or {}).get(name))
        model.check_dimension(int(d))
        if n is not None:
            model.check_rows(int(n))


def largest_state(models, model_options: Mapping[str, Mapping[str, Any]] | None, n: int, d: int) -> tuple[str, int]:
    """The model among ``models`` whose own state needs the most float64 values at n rows of d, and that count."""
    sizes = [(get_model(name, (model_options or {}).get(name)).state_elements(int(n), int(d)), name) for name in models]
    elements, name = max(sizes, default=(0, ""))
    return name, int(elements)


def model_label(name: str) -> str:
    return MODELS[name].label if name in MODELS else name


def labels() -> dict[str, str]:
    return {name: cls.label for name, cls in MODELS.items()}


for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["BASELINE", "FeatureModel", "MODELS", "PAPER_MODELS", "State", "check_model", "check_models", "get_model", "labels", "largest_state",
           "model_label", "model_names", "register", "unit"]
