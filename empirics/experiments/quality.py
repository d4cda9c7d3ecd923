"""Did the network learn, and how far did training move it: the numbers shown beside every result.

A result from a network that did not learn proves nothing, so every cell of every experiment
records, with :func:`model_quality`, the network's train and test accuracy and final loss, the
test accuracy of the kernel-regression surrogate the experiment measures (where it has one),
the chance level (the majority-class share of the test set) and ``learned``: a one-sided exact
binomial test at the 1% level that the test accuracy exceeds chance
(:func:`malleability.stats.above_chance`).
"""

from __future__ import annotations

import numpy as np
import torch

from malleability.stats import above_chance

GATE = "learned: test accuracy above chance (majority-class share), one-sided exact binomial test at the 1% level"


def predicted_classes(outputs) -> np.ndarray:
    """Class predictions from (N, K) outputs: argmax, or the sign for one ±1 output."""
    out = np.asarray(outputs.detach().cpu() if isinstance(outputs, torch.Tensor) else outputs, dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    return (out[:, 0] > 0).astype(np.int64) if out.shape[1] == 1 else out.argmax(axis=1)


def accuracy(pred: np.ndarray, y: np.ndarray) -> float | None:
    y = np.asarray(y)
    return float((np.asarray(pred) == y).mean()) if y.size else None


def chance_level(y_test: np.ndarray, num_classes: int) -> float:
    """The majority-class share of the test labels (what always guessing one class scores)."""
    y = np.asarray(y_test, dtype=np.int64)
    if y.size == 0:
        return 1.0 / max(1, int(num_classes))
    return float(np.bincount(y, minlength=int(num_classes)).max() / y.size)


def model_quality(trained, x_train_unit, y_train, x_test_unit, y_test, *, krr_predictions=None) -> dict:
    """Train/test accuracy, final loss, surrogate accuracy, chance and the ``learned`` gate of one network."""
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    dt, dev = trained.net.W.dtype, trained.net.W.device
    with torch.no_grad():
        train_pred = predicted_classes(trained.net(trained.features(torch.as_tensor(x_train_unit).to(dev, dt))))
        test_pred = (predicted_classes(trained.net(trained.features(torch.as_tensor(x_test_unit).to(dev, dt))))
                     if y_test.size else np.array([], dtype=np.int64))
    chance = chance_level(y_test, trained.num_classes)
    test_acc = accuracy(test_pred, y_test)
    gate = above_chance(int((test_pred == y_test).sum()), int(y_test.size), chance) if y_test.size else \
        {"learned": None, "p_value": None, "reason": "no test points"}
    return {
        "train": accuracy(train_pred, y_train),
        "test": test_acc,
        "krr_test": accuracy(predicted_classes(krr_predictions), y_test) if krr_predictions is not None and y_test.size
        else None,
        "chance": chance,
        "learned": gate["learned"],
        "p_value": gate["p_value"],
        "n_test": int(y_test.size),
        "final_loss": trained.history[-1] if trained.history else None,
        "gate": GATE,
    }


def weight_change(W0: torch.Tensor, WT: torch.Tensor) -> float:
    """‖W_T − W_0‖_F / ‖W_0‖_F: how far training moved the first layer."""
    W0, WT = W0.detach().double(), WT.detach().double()
    return float((WT - W0).norm() / W0.norm().clamp_min(torch.finfo(torch.float64).tiny))


def pattern_flip_share(z: torch.Tensor, W0: torch.Tensor, WT: torch.Tensor) -> float:
    """Share of the ReLU activation patterns 1[w_rᵀ z_i > 0] over the rows z that training flipped."""
    z = z.detach().double()
    return float(((z @ W0.detach().double().T > 0) != (z @ WT.detach().double().T > 0)).double().mean())
