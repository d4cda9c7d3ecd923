"""Random-sign noise: the control, not an attack."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from malleability.empirics.attacks import register
from malleability.empirics.attacks.base import DOC_TEMPLATE, Attack


@register
@dataclass
class Noise(Attack):
    name = "noise"
    uses_model = False  # model_fn, y and loss_fn are ignored: no gradient is ever taken

    def perturb(self, model_fn, x, y):
        # Each coordinate moves by +eps or -eps with probability 1/2: a uniformly random vertex
        # of the l-infinity ball, the same perturbation size as FGSM's step (FGSM also lands on
        # a vertex, sign(gradient) * eps), then the same projection and clipping.
        bits = torch.randint(0, 2, x.shape, generator=self.generator(x), device=x.device)
        signs = bits.to(x.dtype) * 2 - 1
        return self.project(x + self.eps * signs, x)


Noise.__doc__ = DOC_TEMPLATE.format(
    name="Noise (control)",
    summary="random signs, x + eps * s with s uniform in {-1, +1}^d, then the usual projection/clipping. "
    "It ignores the model (no gradient, no loss). A CONTROL, not an attack from the paper: any change of the "
    "training data followed by a retrain moves influences, so the flip rate under noise of the same budget "
    "is the baseline an attack's flip rate has to exceed to count as adversarial.",
    paper="none (control added by this audit; the paper reports FGSM, PGD and MIM only).",
    arguments="    (none; seed picks the signs: same seed and shape -> same signs)",
)
