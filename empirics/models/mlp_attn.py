"""MLP-Attn: the network on linearized-attention features, transductive over the training set.

``z = normalize(C u)`` with ``C = UᵀU`` over the training rows ``U``. Row i of
``f_att(X) = X Xᵀ X`` is ``(C x_i)ᵀ`` (C is symmetric), so the paper's attention over the whole
training set is exactly this map. Test and perturbed points are embedded with the same
training ``C``: the paper does not say how test points are embedded, and this reading keeps
``f_att`` a fixed feature map.

``attention_input`` (what ``u`` is; the paper's text is ``raw``):

* ``raw``: ``u = x``, the unit row. With non-negative pixels every row of ``C u`` is then
  close to the top eigenvector of C (the features are nearly collinear).
* ``center``: ``u = x − μ`` with μ the mean of the training rows.
* ``standardize``: ``u = (x − μ) / σ`` per coordinate (σ = 1 where a coordinate is constant).

μ and σ come from the training rows only; test points use the same statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from malleability.empirics.models import register
from malleability.empirics.models.base import FeatureModel, State, unit
from malleability.errors import require

ATTENTION_INPUTS = ("raw", "center", "standardize")


@register
@dataclass(frozen=True)
class MLPAttn(FeatureModel):
    name = "mlp-attn"
    label = "MLP-Attn"
    summary = "z = normalize(C u), C = UᵀU over the training rows (linearized attention, identity Q/K/V)"
    transductive = True

    attention_input: str = field(default="raw", metadata={"help": "'raw' | 'center' | 'standardize' (training-set statistics)"})

    def __post_init__(self):
        require(self.attention_input in ATTENTION_INPUTS,
                f"unknown attention input {self.attention_input!r}: choose one of {', '.join(ATTENTION_INPUTS)}")

    def attention_rows(self, x_unit: torch.Tensor, state: State) -> torch.Tensor:
        if self.attention_input == "raw":
            return x_unit
        u = x_unit - state["mu"]
        return u / state["sigma"] if self.attention_input == "standardize" else u

    def fit(self, x_train_unit: torch.Tensor) -> State:
        super().fit(x_train_unit)
        state: State = {}
        if self.attention_input != "raw":
            state["mu"] = x_train_unit.mean(dim=0, keepdim=True)
            sigma = x_train_unit.std(dim=0, keepdim=True, unbiased=False)
            state["sigma"] = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
        u = self.attention_rows(x_train_unit, state)
        state["C"] = u.T @ u
        return state

    def embed(self, x_unit: torch.Tensor, state: State) -> torch.Tensor:
        require("C" in state, "mlp-attn needs its fitted state (the attention matrix C of the training rows)")
        return unit(self.attention_rows(x_unit, state) @ state["C"])
