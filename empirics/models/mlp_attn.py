"""MLP-Attn: the network on linearized-attention features, transductive over the training set.

``z = normalize(C u)`` with ``C = UᵀU`` over the training rows ``U``. Row i of
``f_att(X) = X Xᵀ X`` is ``(C x_i)ᵀ`` (C is symmetric), so the paper's attention over the whole
training set is exactly this map. Test and perturbed points are embedded with the same
training ``C``: the paper does not say how test points are embedded, and this reading keeps
``f_att`` a fixed feature map.

``attention_input`` is what the attention reads (the paper's text is ``raw``; see
:class:`~malleability.empirics.models.base.AttentionInputModel`). Under ``raw`` every row of
``C x`` is close to the top eigenvector of C when the pixels are non-negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from malleability.empirics.models import register
from malleability.empirics.models.base import ATTENTION_INPUTS, AttentionInputModel, State, unit
from malleability.errors import require

__all__ = ["ATTENTION_INPUTS", "MLPAttn"]


@register
@dataclass(frozen=True)
class MLPAttn(AttentionInputModel):
    name = "mlp-attn"
    label = "MLP-Attn"
    summary = "z = normalize(C u), C = UᵀU over the training rows (linearized attention, identity Q/K/V)"
    transductive = True

    def fit(self, x_train_unit: torch.Tensor) -> State:
        super().fit(x_train_unit)
        state = self.input_state(x_train_unit)
        u = self.attention_rows(x_train_unit, state)
        state["C"] = u.T @ u
        return state

    def embed(self, x_unit: torch.Tensor, state: State) -> torch.Tensor:
        require("C" in state, "mlp-attn needs its fitted state (the attention matrix C of the training rows)")
        return unit(self.attention_rows(x_unit, state) @ state["C"])
