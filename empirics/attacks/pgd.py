"""PGD."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from malleability.empirics.attacks import register
from malleability.empirics.attacks.base import DOC_TEMPLATE, Attack, real_option, whole_option


@register
@dataclass
class PGD(Attack):
    steps: int = field(default=40, metadata={"help": "PGD iterations"})
    step_size: float | None = field(default=None, metadata={"help": "per-step size; None -> 2.5 eps / steps"})
    random_start: bool = field(default=True, metadata={"help": "start uniformly in the eps-ball (seeded)"})
    name = "pgd"

    def __post_init__(self):
        super().__post_init__()
        self.steps = whole_option(self.steps, "PGD steps")
        if self.step_size is not None:
            self.step_size = real_option(self.step_size, "PGD step_size")

    @property
    def alpha(self) -> float:
        # Madry et al.'s rule of thumb: 2.5 eps / steps lets the iterate cross the ball
        # (eps = 0.3, 40 steps -> 0.01875; Madry et al. used 0.01 on MNIST).
        return float(self.step_size) if self.step_size is not None else 2.5 * self.eps / self.steps

    def params(self) -> dict:
        out = super().params()
        out["step_size_used"] = self.alpha
        return out

    def perturb(self, model_fn, x, y):
        x_adv = x.clone()
        if self.random_start:
            noise = torch.rand(x.shape, generator=self.generator(x), device=x.device, dtype=x.dtype)
            x_adv = self.project(x + (2 * noise - 1) * self.eps, x)
        for _ in range(self.steps):
            x_adv = self.project(x_adv + self.alpha * self.gradient(model_fn, x_adv, y).sign(), x)
        return x_adv


PGD.__doc__ = DOC_TEMPLATE.format(
    name="PGD",
    summary="projected signed-gradient ascent from a random start in the eps-ball.",
    paper="Madry, Makelov, Schmidt, Tsipras, Vladu, Towards Deep Learning Models Resistant to "
    "Adversarial Attacks, ICLR 2018 (arXiv 1706.06083).",
    arguments="    steps: iterations (default 40, Madry et al.'s MNIST setting).\n"
    "    step_size: per-step size; None (default) -> 2.5 eps / steps.\n"
    "    random_start: start uniformly in the eps-ball (default True; seeded by seed).",
)
