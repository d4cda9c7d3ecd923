"""Patch-Attn: inductive, ViT-style attention among the patches of one image.

Each image is cut into non-overlapping ``p × p`` patches, the tokens ``T`` (t × p²c, in
raster order, channels last like the data's HWC flattening); the features are the flattened
``T Tᵀ T`` (``attention='linear'``, the paper's linearisation applied within the image) or
``softmax(T Tᵀ / sqrt(p²c)) T`` (``'softmax'``), scaled to unit norm. Nothing depends on other
training rows (``transductive = False``), so the attention cannot carry one training point's
perturbation to another's features: this is the model without the transductive C.

The image shape comes from d (784 -> 28×28×1, 3072 -> 32×32×3) or the ``image_shape`` option;
the default patch size gives 16 tokens (MNIST 7×7, CIFAR-10 8×8).

``attention_input`` cuts the patches from ``u`` instead of ``x``: the image centred (or
standardised) pixel by pixel with the training set's statistics, as in MLP-Attn. Those statistics
are a fixed preprocessing step, fitted once on the clean training rows: the model stays inductive,
and a change of one training row does not refit them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from malleability.empirics.models import register
from malleability.empirics.models.base import AttentionInputModel, unit
from malleability.errors import MalleabilityError, require

ATTENTIONS = ("linear", "softmax")
KNOWN_SHAPES = {784: (28, 28, 1), 3072: (32, 32, 3)}
TOKENS_PER_SIDE = 4  # the default patch size gives 4 × 4 = 16 tokens


def image_shape_for(d: int, image_shape=None) -> tuple[int, int, int]:
    """(H, W, C) of a flattened image of d values (see the module docstring)."""
    if image_shape is None:
        if d not in KNOWN_SHAPES:
            raise MalleabilityError(f"patch-attn cannot infer the image shape of d = {d} values; "
                                    f"give image_shape (H, W, C)")
        return KNOWN_SHAPES[d]
    h, w, c = (int(v) for v in image_shape)
    require(h * w * c == d, f"image_shape {h}x{w}x{c} has {h * w * c} values, the rows have {d}")
    return h, w, c


def patch_tokens(x: torch.Tensor, shape: tuple[int, int, int], p: int) -> torch.Tensor:
    """(N, d) HWC-flattened images -> (N, t, p·p·C) tokens of non-overlapping p × p patches, raster order."""
    h, w, c = shape
    require(h % p == 0 and w % p == 0, f"patch size {p} does not divide the {h}x{w} image")
    n = x.shape[0]
    t = x.reshape(n, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(n, (h // p) * (w // p), p * p * c)


@register
@dataclass(frozen=True)
class PatchAttn(AttentionInputModel):
    name = "patch-attn"
    label = "Patch-Attn"
    summary = "z = normalize(flatten(T Tᵀ T)), T the p×p patches of the image itself (inductive, ViT-style)"
    transductive = False

    patch_size: int | None = field(default=None, metadata={"help": "patch side p; None -> 16 tokens (MNIST 7, CIFAR-10 8)"})
    attention: str = field(default="linear", metadata={"help": "'linear' (T Tᵀ T) | 'softmax' (softmax(T Tᵀ/sqrt(p²c)) T)"})
    image_shape: tuple | None = field(default=None, metadata={"help": "(H, W, C); None -> from d (784, 3072)"})

    def __post_init__(self):
        super().__post_init__()
        require(self.attention in ATTENTIONS, f"unknown attention {self.attention!r}: choose one of {', '.join(ATTENTIONS)}")
        require(self.patch_size is None or (isinstance(self.patch_size, int) and not isinstance(self.patch_size, bool)
                                            and self.patch_size >= 1),
                f"patch_size must be an integer >= 1, got {self.patch_size!r}")
        if self.image_shape is not None:
            require(len(self.image_shape) == 3 and all(int(v) >= 1 for v in self.image_shape),
                    f"image_shape must be (H, W, C) of positive integers, got {self.image_shape!r}")

    def patch_side(self, shape: tuple[int, int, int]) -> int:
        if self.patch_size is not None:
            return int(self.patch_size)
        h, w, _ = shape
        require(h % TOKENS_PER_SIDE == 0 and w % TOKENS_PER_SIDE == 0,
                f"no default patch size for a {h}x{w} image; give patch_size")
        return h // TOKENS_PER_SIDE

    def check_dimension(self, d: int) -> None:
        shape = image_shape_for(int(d), self.image_shape)
        p = self.patch_side(shape)
        require(shape[0] % p == 0 and shape[1] % p == 0, f"patch size {p} does not divide the {shape[0]}x{shape[1]} image")

    def fit(self, x_train_unit: torch.Tensor):
        super().fit(x_train_unit)
        self.check_dimension(x_train_unit.shape[1])
        return self.input_state(x_train_unit)

    def embed(self, x_unit: torch.Tensor, state) -> torch.Tensor:
        shape = image_shape_for(x_unit.shape[1], self.image_shape)
        T = patch_tokens(self.attention_rows(x_unit, state), shape, self.patch_side(shape))
        scores = T @ T.transpose(1, 2)
        if self.attention == "softmax":
            scores = torch.softmax(scores / math.sqrt(T.shape[2]), dim=2)
        return unit((scores @ T).reshape(x_unit.shape[0], -1))
