"""The paper's two networks: 2L-ReLU on unit rows and MLP-Attn on linearized-attention features.

Both are ``f(z) = (1/sqrt(m)) relu(z Wᵀ) a`` with only ``W`` trained and ``a`` fixed ±1. They
differ only in the input ``z``:

* ``relu``: ``z = x`` (the unit-norm row).
* ``mlp-attn``: ``z = normalize(C x)`` with ``C = XᵀX`` of the (unit-row) *training* set. Row i
  of ``f_att(X) = X Xᵀ X`` is ``(C x_i)ᵀ`` (C is symmetric), so the paper's transductive
  attention over the whole training set is exactly this map; test points (and perturbed
  points) are embedded with the same training ``C`` — the paper does not say how test points
  are embedded, this is the reading that keeps ``f_att`` a fixed feature map.

Multi-class output (not stated in the paper): ``a`` is an (m, K) matrix of fixed ±1 signs, one
column per output, drawn independently per column.
"""

from __future__ import annotations

import math

import torch

from malleability.empirics.data import unit_rows
from malleability.errors import MalleabilityError, require

MODEL_KINDS = ("relu", "mlp-attn")
INIT_SCHEMES = ("paper", "ntk")


def check_kind(kind: str) -> str:
    if kind not in MODEL_KINDS:
        raise MalleabilityError(f"unknown model {kind!r}: choose one of {', '.join(MODEL_KINDS)}")
    return kind


def attention_matrix(x_train_unit: torch.Tensor) -> torch.Tensor:
    """``C = XᵀX`` (d, d) from the unit-norm training rows."""
    require(x_train_unit.ndim == 2, f"expected (n, d) training rows, got shape {tuple(x_train_unit.shape)}")
    return x_train_unit.T @ x_train_unit


def embed(kind: str, x_unit: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    """The model's input features: ``x_unit`` for relu, ``normalize(x_unit C)`` for mlp-attn."""
    check_kind(kind)
    if kind == "relu":
        return x_unit
    require(C is not None, "mlp-attn needs the attention matrix C = XᵀX of the training rows")
    return unit_rows(x_unit @ C.to(dtype=x_unit.dtype, device=x_unit.device))


class TwoLayerReLU(torch.nn.Module):
    """``f(z) = (1/sqrt(m)) relu(z Wᵀ) a``; W (m, d) trainable, a (m, K) fixed ±1 buffer.

    ``init='paper'``: W ~ N(0, init_std²) (the paper: 0.01). ``init='ntk'``: W ~ N(0, 1), the
    standard NTK parameterisation under which the infinite-width kernel is ``infinite_ntk``.
    The draw uses a CPU generator seeded with ``seed`` (W first, then the signs of a), so the
    same seed gives the same network on every device.
    """

    def __init__(self, d: int, width: int, num_outputs: int = 1, *, init: str = "paper", init_std: float = 0.01,
                 seed: int = 0, dtype=torch.float64, device="cpu"):
        super().__init__()
        require(int(d) >= 1, f"input dimension must be >= 1, got {d}")
        require(int(width) >= 1, f"width must be >= 1, got {width}")
        require(int(num_outputs) >= 1, f"num_outputs must be >= 1, got {num_outputs}")
        require(init in INIT_SCHEMES, f"unknown init {init!r}: choose one of {', '.join(INIT_SCHEMES)}")
        require(init != "paper" or float(init_std) > 0, f"init_std must be > 0, got {init_std}")
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        gen = torch.Generator().manual_seed(int(seed))
        scale = float(init_std) if init == "paper" else 1.0
        W = torch.randn(int(width), int(d), generator=gen, dtype=torch.float64) * scale
        signs = torch.randint(0, 2, (int(width), int(num_outputs)), generator=gen).to(torch.float64) * 2 - 1
        self.width = int(width)
        self.d = int(d)
        self.num_outputs = int(num_outputs)
        self.init = init
        self.W = torch.nn.Parameter(W.to(dtype=dtype, device=device))
        self.register_buffer("a", signs.to(dtype=dtype, device=device))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, K) outputs."""
        return torch.relu(z @ self.W.T) @ self.a / math.sqrt(self.width)
