"""Full-size twins of the scaled-down experiment tests.

CI runs the scaled-down versions (tests/test_ntk.py, test_ntk_distance.py, test_malleability.py,
test_audit.py); these run the same checks at the sizes the benchmarks and the `default` audit use.
They are skipped unless MALLEABILITY_SLOW=1 (see conftest.py): `MALLEABILITY_SLOW=1 pytest -m slow`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from malleability.empirics.data import DataConfig, load_dataset
from malleability.empirics.experiments.flip_rate import FlipRateConfig, run_flip_rate_cell
from malleability.empirics.experiments.flip_rate import summarise as summarise_flip_rates
from malleability.empirics.ntk import empirical_ntk, empirical_ntk_reference, infinite_ntk
from malleability.empirics.training import TrainConfig

pytestmark = pytest.mark.slow


def test_closed_form_equals_reference_at_benchmark_width(data_root):
    """Twin of test_ntk.py::test_closed_form_equals_both_references at d=784, m=1024 on real rows."""
    ds = load_dataset(DataConfig("mnist", n=256, n_test=1, seed=3, data_root=str(data_root)))
    z = torch.from_numpy(ds.x_train)
    W = torch.randn(1024, z.shape[1], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    fast, ref = empirical_ntk(z, z, W), empirical_ntk_reference(z, z, W)
    assert float((fast - ref).abs().max() / ref.abs().max()) <= 1e-10


def test_init_vs_infinite_slope_on_500_mnist_rows(data_root):
    """Twin of test_ntk.py::test_init_vs_infinite_distance_shrinks_like_inverse_sqrt_width (n=40 there)."""
    ds = load_dataset(DataConfig("mnist", n=500, n_test=1, seed=0, data_root=str(data_root)))
    z = torch.from_numpy(ds.x_train)
    k_inf = infinite_ntk(z, z)
    lx, ly = [], []
    for m in (16, 64, 256, 1024, 4096):
        for s in range(4):
            W = torch.randn(m, z.shape[1], generator=torch.Generator().manual_seed(77 * m + s), dtype=torch.float64)
            rel = torch.linalg.matrix_norm(empirical_ntk(z, z, W) - k_inf) / torch.linalg.matrix_norm(k_inf)
            lx.append(math.log(m))
            ly.append(math.log(float(rel)))
    slope = np.polyfit(lx, ly, 1)[0]
    assert -0.56 < slope < -0.44, slope


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_flip_rate_cells_at_default_size(data_root, attack):
    """Twin of test_flip_rate.py's tiny cells: both models, 2 seeds, the CPU default size."""
    rows = []
    for model in ("relu", "mlp-attn"):
        for seed in (0, 1):
            cfg = FlipRateConfig(
                data=DataConfig("mnist", n=1000, n_test=200, seed=0, data_root=str(data_root)),
                train=TrainConfig(epochs=50, seed=seed), model=model, attack=attack, eps=0.3, width=256)
            row = run_flip_rate_cell(cfg)
            assert 0.0 <= row["flip_rate"] <= 1.0 and row["n_flip_set"] == 100
            assert row["spearman"] is None or -1.0 <= row["spearman"] <= 1.0
            rows.append(row)
    # the ReLU baseline must actually learn MNIST at this size, else its flip rates mean nothing
    relu_acc = [r["accuracy"] for r in rows if r["model"] == "relu"]
    assert all(a["test"] > 0.7 for a in relu_acc), relu_acc
    summary = summarise_flip_rates(rows)
    assert summary["ratios"], summary
