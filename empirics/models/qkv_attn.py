"""QKV-Attn: linearized attention over the training rows with learnable W_Q, W_K, W_V (Prop B.4).

``z(x) = normalize((u W_Q)(U W_K)ᵀ(U W_V)) = normalize(u W_Q W_Kᵀ C W_V)`` with ``C = UᵀU``
over the training rows (``u`` as in MLP-Attn's ``attention_input``), so the features have
``d_k`` coordinates. The projections are trained jointly with the network's W (the state holds
C; the projections are the model's *parameters*, see :meth:`QKVAttn.init_params`).

Init ("standard", what Prop B.4 assumes but does not state): entries i.i.d. N(0, 1/d), drawn
by a CPU generator seeded from the training seed on a stream of its own (the network's W uses
``seed``, the batch order ``seed + 1``), so a run is still a pure function of its config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from malleability.empirics.models import register
from malleability.empirics.models.base import State, unit
from malleability.empirics.models.mlp_attn import MLPAttn
from malleability.errors import require

PARAM_NAMES = ("W_Q", "W_K", "W_V")
_PARAM_STREAM = 0x5EED_0000  # offset that keeps the projections' generator apart from W's and the batches'


@register
@dataclass(frozen=True)
class QKVAttn(MLPAttn):
    name = "qkv-attn"
    label = "QKV-Attn"
    summary = "z = normalize(u W_Q W_Kᵀ C W_V), C = UᵀU over the training rows; W_Q, W_K, W_V (d × d_k) trained"
    transductive = True
    param_names = PARAM_NAMES

    d_k: int = field(default=64, metadata={"help": "width d_k >= 1 of the query/key/value projections"})

    def __post_init__(self):
        super().__post_init__()
        require(isinstance(self.d_k, int) and not isinstance(self.d_k, bool) and self.d_k >= 1,
                f"d_k must be an integer >= 1, got {self.d_k!r}")

    def init_params(self, d: int, seed: int, dtype=torch.float64, device="cpu") -> dict[str, torch.Tensor]:
        """W_Q, W_K, W_V ~ N(0, 1/d) entrywise (d × d_k each), seeded; float64 draw, then cast."""
        gen = torch.Generator().manual_seed(_PARAM_STREAM + int(seed))
        return {k: (torch.randn(int(d), self.d_k, generator=gen, dtype=torch.float64) / math.sqrt(d)).to(dtype=dtype, device=device)
                for k in PARAM_NAMES}

    def embed_factored(self, x_unit: torch.Tensor, state: State, taps: dict[str, torch.Tensor]):
        """:meth:`embed` with every parameter use written ``y = v @ P`` (+ ``taps[name]``, zeros of y's
        shape): returns (features, {name: v}). Each parameter enters each row's features once, through
        such a product, so a row's gradient w.r.t. P is the outer product of v and ∂f/∂y
        (used by :mod:`malleability.empirics.ntk_params` for the factored NTK)."""
        u = self.attention_rows(x_unit, state)
        q = u @ state["W_Q"] + taps["W_Q"]
        t = q @ state["W_K"].T + taps["W_K"]
        r = t @ state["C"]
        s = r @ state["W_V"] + taps["W_V"]
        return unit(s), {"W_Q": u, "W_K": q, "W_V": r}

    def state_elements(self, n: int, d: int) -> int:
        # C (d × d); W_Q, W_K, W_V with gradient and two Adam moments; q, t, r, s for every row
        return int(d) * int(d) + 4 * 3 * int(d) * self.d_k + int(n) * (2 * self.d_k + 2 * int(d))

    def tap_shapes(self, n: int, d: int) -> dict[str, tuple[int, int]]:
        return {"W_Q": (n, self.d_k), "W_K": (n, d), "W_V": (n, self.d_k)}

    def embed(self, x_unit: torch.Tensor, state: State) -> torch.Tensor:
        require("C" in state, "qkv-attn needs its fitted state (the attention matrix C of the training rows)")
        missing = [k for k in PARAM_NAMES if k not in state]
        require(not missing, f"qkv-attn needs its parameters {', '.join(missing)} (init_params or a trained model)")
        # row-vector products left to right: a per-row Jacobian then never multiplies C by a matrix
        q = self.attention_rows(x_unit, state) @ state["W_Q"]
        return unit(((q @ state["W_K"].T) @ state["C"]) @ state["W_V"])
