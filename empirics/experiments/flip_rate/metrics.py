"""Pure metrics of the flip-rate experiment, and the influence of a trained network."""

from __future__ import annotations

import math

import numpy as np
import torch

from malleability.empirics.experiments.flip_rate.config import finite
from malleability.empirics.influence import loo_influence, regression_targets
from malleability.empirics.models import FeatureModel, State
from malleability.empirics.ntk import empirical_ntk
from malleability.errors import require




def top_tau_indices(scores: np.ndarray, tau: float) -> np.ndarray:
    """Indices of the ceil(tau n) (at least 1) largest scores, largest first (ties by index)."""
    scores = np.asarray(scores, dtype=np.float64)
    require(scores.ndim == 1 and scores.size >= 1, "scores must be a non-empty 1-D array")
    require(finite(tau) and 0 < tau <= 1, f"tau must lie in (0, 1], got {tau}")
    k = max(1, int(math.ceil(tau * scores.size - 1e-9)))
    return np.argsort(-scores, kind="stable")[:k]


# Float64 influences moved by a relative 1e-11 when only the kernel's rounding changed (two commits of
# the closed-form NTK, same data); an edge closer than 1e-8 is decided by rounding, with a 1000x margin.
EDGE_TIE_RTOL = 1e-8


def flip_set_edge(scores: np.ndarray, k: int, *, rtol: float = EDGE_TIE_RTOL) -> dict:
    """How firmly the flip set's edge is decided: the relative gap between the k-th and (k+1)-th
    largest score, and how many scores lie within ``rtol`` (relative) of the k-th.

    A gap at or below ``rtol`` means the flip set's membership (and every number that follows from
    it) can change with the arithmetic's rounding alone; the null-eps floor keeps the flip set, so
    it cannot show this.
    """
    scores = np.asarray(scores, dtype=np.float64)
    require(scores.ndim == 1 and scores.size >= 1, "scores must be a non-empty 1-D array")
    require(np.all(np.isfinite(scores)) and np.all(scores >= 0), "scores must be finite and non-negative")
    require(isinstance(k, (int, np.integer)) and 1 <= k <= scores.size, f"k must lie in [1, {scores.size}], got {k}")
    require(finite(rtol) and rtol >= 0, f"rtol must be a non-negative number, got {rtol}")
    ordered = np.sort(scores)[::-1]
    cut = float(ordered[k - 1])
    row = {"k": int(k), "cut": cut, "next": None, "gap_relative": None, "rtol": float(rtol),
           "near_cut": int(np.sum(np.abs(scores - cut) <= rtol * cut)), "decided_by_rounding": False}
    if k < scores.size:
        nxt = float(ordered[k])
        gap = (cut - nxt) / cut if cut > 0 else 0.0
        row.update(next=nxt, gap_relative=gap, decided_by_rounding=bool(gap <= rtol))
    return row


def flip_rate(before: np.ndarray, after: np.ndarray) -> float:
    """Fraction of points whose influence changes sign strictly (before * after < 0)."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    require(before.shape == after.shape and before.ndim == 1 and before.size >= 1, "flip_rate needs two equal, non-empty 1-D arrays")
    return float(np.mean(before * after < 0))


def spearman(before: np.ndarray, after: np.ndarray) -> tuple[float | None, str | None]:
    """(rho, None), or (None, reason) when Spearman's rho is undefined."""
    import scipy.stats

    before, after = np.asarray(before, float), np.asarray(after, float)
    require(before.shape == after.shape and before.ndim == 1, "spearman needs two equal 1-D arrays")
    if before.size < 2:
        return None, "fewer than 2 points"
    if np.ptp(before) == 0:
        return None, "influence before is constant"
    if np.ptp(after) == 0:
        return None, "influence after is constant"
    rho = float(scipy.stats.spearmanr(before, after).statistic)
    if not math.isfinite(rho):
        return None, "spearman rho is not finite"
    return rho, None


def topk_overlap(before: np.ndarray, after: np.ndarray, k: int) -> float:
    """|top-k by |before| ∩ top-k by |after|| / k (k clipped to the number of points)."""
    before, after = np.abs(np.asarray(before, float)), np.abs(np.asarray(after, float))
    require(before.shape == after.shape and before.size >= 1, "topk_overlap needs two equal, non-empty arrays")
    k = max(1, min(int(k), before.size))
    a = set(np.argsort(-before, kind="stable")[:k].tolist())
    b = set(np.argsort(-after, kind="stable")[:k].tolist())
    return len(a & b) / k


# --------------------------------------------------------------------------------------------
# influence of a trained network


def krr_targets(labels: np.ndarray, num_outputs: int, reading: str) -> np.ndarray:
    """KRR targets: binary (one output) +-1; multi-class one-hot 0/1 ('onehot') or +-1 ('pm1')."""
    y = regression_targets(np.asarray(labels, dtype=np.int64), num_outputs)
    return 2.0 * y - 1.0 if (num_outputs > 1 and reading == "pm1") else y


def network_influence(model: FeatureModel, W: torch.Tensor, state: State, x_train_unit: torch.Tensor,
                      y_train: np.ndarray, x_test_unit: torch.Tensor, y_test: np.ndarray, num_outputs: int,
                      lam: float, targets: str = "onehot", *, a: torch.Tensor | None = None):
    """Exact LOO influence with the empirical NTK of a network with first layer W, in float64.

    Features are ``model.features(x, state)``; the kernel is the block shared by all outputs
    (see :data:`malleability.empirics.influence.MULTI_OUTPUT_READING`). A model with trainable
    feature parameters (held in the state) uses the NTK over all trained parameters, W and the
    model's, with the output weights ``a`` (default: the state's ``output_weights``), averaged over
    the diagonal output blocks (:mod:`malleability.empirics.ntk_params`).
    """
    from malleability.empirics.ntk_params import full_ntk, has_params
    from malleability.empirics.training import OUTPUT_WEIGHTS

    W64 = W.detach().to(torch.float64)
    if has_params(model, state):
        a = (state or {}).get(OUTPUT_WEIGHTS) if a is None else a
        require(a is not None, f"model {model.name!r} has trained feature parameters: its influence needs the "
                               f"network's output weights a")
        x_tr = x_train_unit.detach().to(device=W64.device, dtype=torch.float64)
        x_te = x_test_unit.detach().to(device=W64.device, dtype=torch.float64)
        K = full_ntk(model, state, W64, a, x_tr).cpu().numpy()
        K_test = full_ntk(model, state, W64, a, x_te, x_tr).cpu().numpy()
        return loo_influence(K, K_test, krr_targets(y_train, num_outputs, targets),
                             krr_targets(y_test, num_outputs, targets), lam)
    state64 = {k: v.detach() for k, v in (state or {}).items()}
    z_tr = model.features(x_train_unit.detach().to(device=W64.device, dtype=torch.float64), state64)
    z_te = model.features(x_test_unit.detach().to(device=W64.device, dtype=torch.float64), state64)
    K = empirical_ntk(z_tr, z_tr, W64).cpu().numpy()
    K_test = empirical_ntk(z_te, z_tr, W64).cpu().numpy()
    return loo_influence(K, K_test, krr_targets(y_train, num_outputs, targets),
                         krr_targets(y_test, num_outputs, targets), lam)


