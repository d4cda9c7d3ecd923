"""Softmax-Attn: row-normalised attention over the training rows, transductive like MLP-Attn.

``z = normalize(softmax(x Xᵀ / τ) X)`` with ``X`` the unit-norm training rows: each point
attends over the whole training set with softmax weights (identity Q/K/V, like the paper's
linearised model, but with the row normalisation the paper's linearisation drops). Test and
perturbed points are embedded against the same training rows. ``temperature`` τ defaults to
``sqrt(d)`` (the usual 1/sqrt(d_k) scaling with d_k = d). ``attention_input`` replaces ``x`` and
``X`` by ``u`` and ``U`` as in MLP-Attn (training statistics), so under ``center`` the map is
``normalize(softmax(u Uᵀ / τ) U)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from malleability.empirics.models import register
from malleability.empirics.models.base import AttentionInputModel, State, unit
from malleability.errors import require


def check_temperature(temperature) -> None:
    require(temperature is None or (isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
                                    and math.isfinite(temperature) and temperature > 0),
            f"temperature must be a finite number > 0 (or None for sqrt(d)), got {temperature!r}")


def resolved_temperature(temperature, d: int) -> float:
    return math.sqrt(d) if temperature is None else float(temperature)


@register
@dataclass(frozen=True)
class SoftmaxAttn(AttentionInputModel):
    name = "softmax-attn"
    label = "Softmax-Attn"
    summary = "z = normalize(softmax(u Uᵀ/τ) U) over the training rows U (row-normalised attention, identity Q/K/V)"
    transductive = True

    temperature: float | None = field(default=None, metadata={"help": "softmax temperature τ > 0; None -> sqrt(d)"})

    def __post_init__(self):
        super().__post_init__()
        check_temperature(self.temperature)

    def fit(self, x_train_unit: torch.Tensor) -> State:
        super().fit(x_train_unit)
        state = self.input_state(x_train_unit)
        state["X"] = self.attention_rows(x_train_unit, state).clone()  # U: the training rows as the attention reads them
        return state

    def embed(self, x_unit: torch.Tensor, state: State) -> torch.Tensor:
        require("X" in state, "softmax-attn needs its fitted state (the training rows X)")
        X = state["X"]
        require(x_unit.shape[1] == X.shape[1], f"rows of dimension {x_unit.shape[1]} against training rows of {X.shape[1]}")
        u = self.attention_rows(x_unit, state)
        scores = u @ X.T
        tau = resolved_temperature(self.temperature, X.shape[1])
        scaled = scores / tau
        if not bool(torch.isfinite(scaled).all()):
            # a tiny τ overflows s/τ (inf - inf inside softmax); (s - max s)/τ only reaches -inf, so τ -> 0 is
            # hard attention on the nearest training rows. A τ below the dtype's smallest normal number rounds
            # to 0 (0/0 on the maximum); there the weights are already one-hot, so the clamp changes nothing.
            shifted = scores - scores.max(dim=1, keepdim=True).values.detach()
            scaled = shifted / max(tau, torch.finfo(scores.dtype).tiny)
        weights = torch.softmax(scaled, dim=1)
        return unit(weights @ X)
