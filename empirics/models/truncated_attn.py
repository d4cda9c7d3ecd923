"""Truncated-Attn: MLP-Attn with C replaced by its best rank-r approximation C_r.

The paper's remark proposes low-rank (truncated) attention as a regulariser that could restore
NTK convergence; it is never tested there. ``C = UᵀU`` is positive semi-definite, so its rank-r
truncation is ``C_r = Q_r S_r² Q_rᵀ`` from the r largest singular values S_r and right singular
vectors Q_r of U (Eckart–Young; ties at the cut are broken by LAPACK's order). ``rank=None`` is
the full C, exactly MLP-Attn. ``attention_input`` is MLP-Attn's (the statistics of the training
rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from malleability.empirics.models import register
from malleability.empirics.models.base import State
from malleability.empirics.models.mlp_attn import MLPAttn
from malleability.errors import require


def truncate_gram(u: torch.Tensor, rank: int) -> torch.Tensor:
    """The rank-r truncation of ``uᵀu`` (d × d), from the thin SVD of u."""
    _, s, vh = torch.linalg.svd(u, full_matrices=False)
    q = vh[:rank].T
    return (q * s[:rank] ** 2) @ q.T


@register
@dataclass(frozen=True)
class TruncatedAttn(MLPAttn):
    name = "truncated-attn"
    label = "Truncated-Attn"
    summary = "z = normalize(C_r u), C_r the rank-r truncation of C = UᵀU (low-rank linearized attention)"
    transductive = True

    rank: int | None = field(default=None, metadata={"help": "rank r of C_r, 1 <= r <= d; None -> full C (MLP-Attn)"})

    def __post_init__(self):
        super().__post_init__()
        require(self.rank is None or (isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1),
                f"rank must be an integer >= 1 (or None for full rank), got {self.rank!r}")

    def check_dimension(self, d: int) -> None:
        super().check_dimension(d)
        require(self.rank is None or self.rank <= int(d), f"rank {self.rank} exceeds the dimension d = {d}")

    def check_rows(self, n: int) -> None:
        # rank(C) = rank(U) <= n: any r above n keeps all of C, so the run would be MLP-Attn under another name
        require(self.rank is None or self.rank <= int(n),
                f"rank {self.rank} exceeds the n = {n} training rows: C = UᵀU has rank at most n, so C_r would be "
                f"the full C (MLP-Attn); use a rank <= {n}")

    def fit(self, x_train_unit: torch.Tensor) -> State:
        state = super().fit(x_train_unit)
        if self.rank is None:
            return state
        self.check_dimension(x_train_unit.shape[1])
        state["C"] = truncate_gram(self.attention_rows(x_train_unit, state), int(self.rank))
        return state
