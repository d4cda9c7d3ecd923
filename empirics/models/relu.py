"""2L-ReLU, the paper's baseline: the network on the unit-norm rows themselves."""

from __future__ import annotations

from dataclasses import dataclass

from malleability.empirics.models import register
from malleability.empirics.models.base import FeatureModel


@register
@dataclass(frozen=True)
class ReLU(FeatureModel):
    name = "relu"
    label = "2L-ReLU"
    summary = "z = x, the unit-norm row"
