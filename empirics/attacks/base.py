"""The attack base class: one l-infinity budget, one space, one clipping rule, one seed.

Every attack in this package follows the same docstring template (:data:`DOC_TEMPLATE`) and
the same calling convention, after torchattacks::

    attack = PGD(eps=0.3, steps=40)
    x_adv = attack(model_fn, x, y)          # model_fn: differentiable callable x -> outputs

* ``x``: (N, d) tensor. ``space='pixel'`` (default): the flattened [0, 1] image BEFORE row
  normalisation; the result is clipped to [0, 1]. ``space='feature'``: the unit-norm rows; no
  clipping; with ``renormalize=True`` the rows are projected back to the unit sphere after
  every step (then ``||x_adv - x||_inf <= eps`` holds only before that projection), with
  ``renormalize=False`` (default) the budget is exact and the model's own pipeline sees the
  raw perturbed vector.
* ``y``: (N,) int64 labels. ``loss_fn(outputs, y) -> (N,)`` per-sample loss, pluggable; the
  default is the model's training loss for ``loss='auto'``: cross-entropy for
  more than one output, and 1/2 (f - t)^2 with t = +-1 (label 1 -> +1) for one output.
* The attack ascends the SUM of per-sample losses, so each sample gets its own gradient.
* dtype and device of ``x`` are preserved; random starts use a ``torch.Generator`` seeded with
  ``seed`` on x's device, so the same call gives the same x_adv.
* Gradient w.r.t. x only: the model's parameters are not touched (no optimizer state changes,
  parameter gradients are not accumulated).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from malleability.errors import MalleabilityError, require

SPACES = ("pixel", "feature")

DOC_TEMPLATE = """{name}: {summary}

Paper: {paper}
Norm: l-infinity, ``||x_adv - x||_inf <= eps`` (in the space chosen by ``space``).
Arguments (beyond the base :class:`Attack`'s eps, space, renormalize, loss_fn, seed):
{arguments}
Shapes: x (N, d) float tensor; y (N,) int64 labels; returns x_adv (N, d), same dtype and device.
"""


def default_loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample training loss of the paper's models: CE for K > 1 outputs, 1/2 (f - (+-1))^2 for K = 1."""
    if outputs.ndim == 2 and outputs.shape[1] > 1:
        return torch.nn.functional.cross_entropy(outputs, labels.long(), reduction="none")
    target = 2.0 * labels.to(outputs.dtype) - 1.0
    return 0.5 * (outputs.reshape(-1) - target) ** 2


def whole_option(value, what: str, low: int = 1) -> int:
    """``value`` as an int >= ``low``, or a one-line error naming ``what`` (bools, NaN, inf and 2.5 refused)."""
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and int(value) == value and value >= low)
    require(ok, f"{what} must be an integer >= {low}, got {value!r}")
    return int(value)


def real_option(value, what: str, *, zero: bool = False) -> float:
    """``value`` as a finite float > 0 (>= 0 with ``zero``), or a one-line error naming ``what``."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and (value >= 0 if zero else value > 0)
    require(ok, f"{what} must be finite and {'>=' if zero else '>'} 0, got {value!r}")
    return float(value)


@dataclass
class Attack:
    """Base class of all l-infinity attacks (see the module docstring for the conventions)."""

    eps: float
    space: str = "pixel"
    renormalize: bool = False
    loss_fn: Callable | None = field(default=None, repr=False, compare=False)
    seed: int = 0
    name = "attack"
    uses_model = True  # False for the noise control (it never calls model_fn)

    def __post_init__(self):
        try:
            eps = float(self.eps)
        except (TypeError, ValueError):
            raise MalleabilityError(f"eps must be a number, got {self.eps!r}") from None
        require(eps == eps and eps >= 0 and eps != float("inf"), f"eps must be finite and >= 0, got {self.eps}")
        self.eps = eps
        require(self.space in SPACES, f"unknown attack space {self.space!r}; choose one of {', '.join(SPACES)}")
        require(not (self.renormalize and self.space == "pixel"), "renormalize applies to space='feature' only")

    # -- what every attack shares ------------------------------------------------------------
    def params(self) -> dict:
        """The attack's parameters, JSON-ready (recorded in every result)."""
        out = {k: v for k, v in asdict(self).items() if k != "loss_fn"}
        out["attack"] = self.name
        out["norm"] = "linf"
        out["loss"] = "default (model training loss)" if self.loss_fn is None else getattr(
            self.loss_fn, "__name__", "custom"
        )
        return out

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        fn = self.loss_fn if self.loss_fn is not None else default_loss
        return fn(outputs, labels)

    def gradient(self, model_fn: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d (sum of per-sample losses) / d x, detached, same dtype as x."""
        x_req = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            total = self.loss(model_fn(x_req), y).sum()
            (grad,) = torch.autograd.grad(total, x_req)
        return grad.detach()

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Back into the eps-ball around x, then into the valid set of the space."""
        x_adv = torch.max(torch.min(x_adv, x + self.eps), x - self.eps)
        if self.space == "pixel":
            x_adv = x_adv.clamp(0.0, 1.0)
        elif self.renormalize:
            x_adv = x_adv / x_adv.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return x_adv

    def generator(self, x: torch.Tensor) -> torch.Generator:
        gen = torch.Generator(device=x.device)
        gen.manual_seed(int(self.seed))
        return gen

    def __call__(self, model_fn: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        require(isinstance(x, torch.Tensor) and x.ndim == 2, "x must be a 2-D tensor (N, d)")
        require(x.is_floating_point(), f"x must be floating point, got {x.dtype}")
        require(bool(torch.isfinite(x).all()), "x has NaN or inf entries")
        require(isinstance(y, torch.Tensor) and y.shape == (x.shape[0],), "y must be a tensor of shape (N,)")
        if self.space == "pixel":
            require(bool(((x >= 0) & (x <= 1)).all()), "space='pixel' needs x in [0, 1]")
        x = x.detach()
        if x.shape[0] == 0 or self.eps == 0:
            return x.clone()
        return self.perturb(model_fn, x, y).detach().to(x.dtype)

    def perturb(self, model_fn: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
