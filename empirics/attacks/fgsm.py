"""FGSM."""

from __future__ import annotations

from dataclasses import dataclass

from malleability.empirics.attacks import register
from malleability.empirics.attacks.base import DOC_TEMPLATE, Attack


@register
@dataclass
class FGSM(Attack):
    name = "fgsm"

    def perturb(self, model_fn, x, y):
        return self.project(x + self.eps * self.gradient(model_fn, x, y).sign(), x)


FGSM.__doc__ = DOC_TEMPLATE.format(
    name="FGSM",
    summary="one signed-gradient step of size eps.",
    paper="Goodfellow, Shlens, Szegedy, Explaining and Harnessing Adversarial Examples, ICLR 2015 (arXiv 1412.6572).",
    arguments="    (none)",
)
