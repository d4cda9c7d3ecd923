"""What a model is: a feature map fitted on the training rows, under the same two-layer network.

Every model of the audit is ``f(x) = (1/sqrt(m)) relu(z(x) Wᵀ) a`` with only ``W`` trained
(:class:`malleability.empirics.network.TwoLayerReLU`); models differ only in the features
``z(x)``. A model is one frozen dataclass, subclass of :class:`FeatureModel`, in one file of
this package; its dataclass fields are its options (with help text), and it registers itself
with :func:`malleability.empirics.models.register`. Training, the empirical NTK, influence,
attacks, experiments and reports work for every registered model without naming it.

* :meth:`FeatureModel.fit` computes the model's state from the unit-norm training rows
  (e.g. the attention matrix ``C``); :meth:`FeatureModel.embed` maps unit rows to features
  with that state, differentiably (attacks take gradients through it).
* :class:`AttentionInputModel` is the base of the attention models: its ``attention_input``
  option says what the attention sees (the raw unit rows, or rows centred or standardised with
  the training rows' statistics).
* ``transductive = True`` says the features of every point depend on the training rows, so a
  change of the training data refits the state (or keeps it, under the ``fixed`` reading).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from malleability.errors import require

State = dict  # name -> tensor, computed by fit() from the training rows


def unit(t: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit ℓ2 norm, differentiably; an all-zero row stays zero (no direction)."""
    scale = t.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)
    s = t / scale  # bounded entries: the norm cannot overflow or underflow
    return s / s.norm(dim=1, keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)


@dataclass(frozen=True)
class FeatureModel:
    """Base class: the identity features (the 2L-ReLU baseline overrides nothing but its name)."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    transductive: ClassVar[bool] = False
    param_names: ClassVar[tuple[str, ...]] = ()  # trainable feature parameters, trained jointly with W

    def fit(self, x_train_unit: torch.Tensor) -> State:
        """The state the features need, from the unit-norm training rows (n, d)."""
        require(x_train_unit.ndim == 2, f"expected (n, d) training rows, got shape {tuple(x_train_unit.shape)}")
        return {}

    def check_dimension(self, d: int) -> None:
        """Refuse, before any work, rows of d values that these options cannot take (default: any d)."""
        require(int(d) >= 1, f"rows need at least one value, got d = {d}")

    def check_rows(self, n: int) -> None:
        """Refuse, before any work, a training set of n rows that these options cannot use (default: any n)."""

    def init_params(self, d: int, seed: int) -> dict | None:
        """Initial values of the trainable feature parameters named in ``param_names`` (None: no parameters)."""
        return None

    def state_elements(self, n: int, d: int) -> int:
        """A generous count of the float64 values this model holds beyond the network's own (its fitted
        state, its trainable parameters with their gradients and Adam moments, its per-row activations),
        for the memory check made before any work (default: none)."""
        return 0

    def embed(self, x_unit: torch.Tensor, state: State) -> torch.Tensor:
        """Features (N, d') of unit rows (N, d); differentiable in ``x_unit``."""
        return x_unit

    def features(self, x_unit: torch.Tensor, state: State) -> torch.Tensor:
        """:meth:`embed` with the state cast to the rows' dtype and device."""
        cast = {k: v.to(dtype=x_unit.dtype, device=x_unit.device) for k, v in (state or {}).items()}
        return self.embed(x_unit, cast)

    def options(self) -> dict:
        """The model's options (its dataclass fields), JSON-ready."""
        return dataclasses.asdict(self)

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "summary": self.summary,
                "transductive": self.transductive, "options": self.options()}


ATTENTION_INPUTS = ("raw", "center", "standardize")


@dataclass(frozen=True)
class AttentionInputModel(FeatureModel):
    """A model whose attention reads ``u`` rather than the unit row ``x`` (the ``attention_input`` option):

    * ``raw``: ``u = x``, the paper's text. With non-negative pixels the attention's outputs are then
      nearly collinear (every row close to the top eigenvector of the data's Gram matrix).
    * ``center``: ``u = x − μ`` with μ the mean of the training rows.
    * ``standardize``: ``u = (x − μ) / σ`` per coordinate (σ = 1 where a coordinate is constant).

    μ and σ come from the training rows only (:meth:`input_state`); test points use the same statistics.
    """

    attention_input: str = field(default="raw", metadata={"help": "'raw' | 'center' | 'standardize' (training-set statistics)"})

    def __post_init__(self):
        require(self.attention_input in ATTENTION_INPUTS,
                f"unknown attention input {self.attention_input!r}: choose one of {', '.join(ATTENTION_INPUTS)}")

    def input_state(self, x_train_unit: torch.Tensor) -> State:
        """μ and σ of the training rows where the reading needs them (nothing under ``raw``)."""
        if self.attention_input == "raw":
            return {}
        sigma = x_train_unit.std(dim=0, keepdim=True, unbiased=False)
        return {"mu": x_train_unit.mean(dim=0, keepdim=True),
                "sigma": torch.where(sigma > 0, sigma, torch.ones_like(sigma))}

    def attention_rows(self, x_unit: torch.Tensor, state: State) -> torch.Tensor:
        """``u`` of the rows under this reading, with the training statistics of ``state``."""
        if self.attention_input == "raw":
            return x_unit
        require("mu" in state, f"{self.name} under attention_input={self.attention_input} needs the training "
                               f"statistics (fit)")
        u = x_unit - state["mu"]
        return u / state["sigma"] if self.attention_input == "standardize" else u
