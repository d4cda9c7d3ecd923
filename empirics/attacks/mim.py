"""MIM (momentum iterative method)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from malleability.empirics.attacks import register
from malleability.empirics.attacks.base import DOC_TEMPLATE, Attack, real_option, whole_option


@register
@dataclass
class MIM(Attack):
    steps: int = field(default=10, metadata={"help": "MIM iterations"})
    step_size: float | None = field(default=None, metadata={"help": "per-step size; None -> eps / steps"})
    decay: float = field(default=1.0, metadata={"help": "momentum decay"})
    name = "mim"

    def __post_init__(self):
        super().__post_init__()
        self.steps = whole_option(self.steps, "MIM steps")
        self.decay = real_option(self.decay, "MIM decay", zero=True)
        if self.step_size is not None:
            self.step_size = real_option(self.step_size, "MIM step_size")

    @property
    def alpha(self) -> float:
        # Dong et al.: alpha = eps / T, so T steps exactly reach the budget.
        return float(self.step_size) if self.step_size is not None else self.eps / self.steps

    def params(self) -> dict:
        out = super().params()
        out["step_size_used"] = self.alpha
        return out

    def perturb(self, model_fn, x, y):
        x_adv = x.clone()
        momentum = torch.zeros_like(x)
        for _ in range(self.steps):
            grad = self.gradient(model_fn, x_adv, y)
            # g <- mu g + grad / ||grad||_1, per sample (a zero gradient stays zero).
            l1 = grad.abs().sum(dim=1, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
            momentum = self.decay * momentum + grad / l1
            x_adv = self.project(x_adv + self.alpha * momentum.sign(), x)
        return x_adv


MIM.__doc__ = DOC_TEMPLATE.format(
    name="MIM",
    summary="iterative signed ascent on an accumulated, l1-normalised gradient (momentum).",
    paper="Dong, Liao, Pang, Su, Zhu, Hu, Li, Boosting Adversarial Attacks with Momentum, CVPR 2018 "
    "(arXiv 1710.06081).",
    arguments="    steps: iterations T (default 10, as in Dong et al.).\n"
    "    step_size: None (default) -> eps / steps (Dong et al.).\n"
    "    decay: momentum decay mu (default 1.0, as in Dong et al.).",
)
