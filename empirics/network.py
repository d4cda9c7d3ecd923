"""The two-layer network every model shares: ``f(z) = (1/sqrt(m)) relu(z Wᵀ) a``.

Only ``W`` is trained; ``a`` is fixed ±1. Models differ only in their features ``z``
(:mod:`malleability.empirics.models`). Multi-class output (not stated in the paper): ``a`` is
an (m, K) matrix of fixed ±1 signs, one column per output, drawn independently per column.
"""

from __future__ import annotations

import math

import torch

from malleability.errors import require

INIT_SCHEMES = ("paper", "ntk")


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
