"""The cost model of cells that train on a GPU: fitted from the committed H200 cells, checked against them.

The fit (calibrate.fit_device) is checked on seconds made from known coefficients, the committed
constants are checked to be that fit of the committed measurements, and the model is checked to
predict those measurements where the CPU model does not.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from malleability.reports.audit import get_scale
from malleability.reports.audit import cost_model as CM
from malleability.reports.audit.calibrate import COLUMN_CLASS, cells_from_rows, fit_device
from malleability.reports.audit.cost_model import cell_seconds, features
from malleability.reports.audit.plan import estimate_seconds, plan_cells

H200 = Path(__file__).resolve().parents[1] / "reports" / "gpu-h200"


def _measured():
    ntk = []
    for name in ("ntk-mnist-paper", "ntk-mnist-lazy"):
        ntk += cells_from_rows("ntk-distance", json.loads((H200 / f"{name}.json").read_text())["rows"])
    flip = cells_from_rows("flip-rate", json.loads((H200 / "flip-mnist.json").read_text())["rows"])
    return ntk, flip


@pytest.fixture(scope="module")
def measured():
    return _measured()


def _plan_key(cfg):
    return (cfg.model, int(cfg.width), cfg.train.protocol, int(cfg.train.seed), cfg.data.dataset,
            getattr(cfg, "attack", None))


def test_rows_rebuild_the_planners_cells_of_the_same_settings(measured):
    ntk, flip = measured
    assert len(ntk) == 176 and len(flip) == 12
    plan = {(_plan_key(c.config), c.kind): c for c in plan_cells(get_scale("paper"), device="cuda").cells
            if c.kind in ("ntk-distance", "flip-rate") and not getattr(c.config, "adv_train", False)}
    for cell, seconds in ntk + flip:
        assert seconds > 0
        twin = plan[(_plan_key(cell.config), cell.kind)]
        cfg = twin.config
        if cell.kind == "flip-rate":  # the slice ran without the null floor the paper plan adds
            assert cell.config.null_eps is None and cfg.null_eps is not None
            cfg = dataclasses.replace(cfg, null_eps=None)
        assert features(cell) == features(dataclasses.replace(twin, config=cfg))


def test_fit_device_reproduces_known_seconds_and_scales_the_unmeasured_columns(measured):
    ntk, flip = measured
    true_ntk = np.array([0.3, 4e-4, 2e-13, 0.0, 0.0, 0.0])

    def seconds(cell, coef):
        return float(np.dot(features(cell), coef))

    made_ntk = [(c, seconds(c, true_ntk)) for c, _ in ntk]
    got = fit_device(made_ntk)
    ratios = got["ratios"]
    # the step column is identified (paper: 8 steps an epoch, lazy: 1); the kernel column is the training
    # column plus a constant at these sizes, so only the predictions are unique
    assert ratios["step"] == pytest.approx(true_ntk[1] / CM.DEVICE_FIT_BASE["ntk-distance"][1], rel=1e-5)
    for cell, s in made_ntk:
        assert seconds(cell, got["ntk-distance"]) == pytest.approx(s, rel=1e-5)
    # columns no measured cell exercises: the CPU's, scaled by the ratio of their class
    for j in (4, 5):
        cls = COLUMN_CLASS["ntk-distance"][j]
        assert got["ntk-distance"][j] == pytest.approx(CM.DEVICE_FIT_BASE["ntk-distance"][j] * ratios[cls])

    # flip cells: the training and kernel columns are ntk-distance's, the intercept is fitted to the rest
    fitted = got["ntk-distance"]
    flip_coef = [0.8] + [0.0] * 9
    flip_coef[1], flip_coef[2], flip_coef[5] = fitted[1], fitted[2], fitted[3]
    for j in (3, 4, 6, 7, 8, 9):
        flip_coef[j] = CM.DEVICE_FIT_BASE["flip-rate"][j] * ratios[COLUMN_CLASS["flip-rate"][j]]
    made_flip = [(c, seconds(c, flip_coef)) for c, _ in flip]
    np.testing.assert_allclose(fit_device(made_ntk, made_flip)["flip-rate"], flip_coef, rtol=1e-5, atol=1e-15)

    # a fit that ignored the measurements would miss a doubled step cost
    doubled = fit_device([(c, seconds(c, true_ntk * [1, 2, 1, 1, 1, 1])) for c, _ in ntk])
    assert doubled["ratios"]["step"] == pytest.approx(2 * ratios["step"], rel=1e-5)


def test_fit_device_refuses_too_few_cells(measured):
    from malleability.errors import MalleabilityError

    with pytest.raises(MalleabilityError, match="several widths"):
        fit_device(measured[0][:2])


def test_committed_cuda_coefficients_are_the_fit_of_the_committed_h200_cells(measured):
    got = fit_device(*measured)
    for kind in ("ntk-distance", "flip-rate"):
        np.testing.assert_allclose(CM.CUDA_COEFFICIENTS[kind], got[kind], rtol=5e-4, atol=1e-15)


def test_cuda_model_predicts_the_h200_seconds_the_cpu_model_overestimates(measured):
    for pairs in measured:
        seconds = sum(s for _, s in pairs)
        cuda = sum(cell_seconds(c) for c, _ in pairs)
        cpu = sum(cell_seconds(c, CM.COEFFICIENTS) for c, _ in pairs)
        assert 0.7 < cuda / seconds < 1.3  # the audit's 30% target, on the cells it was fitted to
        assert cpu / seconds > 5  # the CPU model on these cells: the reason a device model exists


def test_cell_seconds_takes_the_device_model_only_for_cells_that_train_on_cuda():
    scale = get_scale("quick")
    cuda = [c for c in plan_cells(scale, device="cuda").cells if c.kind == "ntk-distance"]
    cpu = [c for c in plan_cells(scale, device="cpu").cells if c.kind == "ntk-distance"]
    assert len(cuda) == len(cpu) > 0
    for gpu_cell, cpu_cell in zip(cuda, cpu):
        assert CM.on_cuda(gpu_cell) and not CM.on_cuda(cpu_cell)
        assert cell_seconds(cpu_cell) == pytest.approx(CM.AUDIT_OVERHEAD_S["ntk-distance"] + cell_seconds(cpu_cell, CM.COEFFICIENTS))
        assert cell_seconds(gpu_cell) == pytest.approx(cell_seconds(gpu_cell, CM.CUDA_COEFFICIENTS))
    theory_gpu = [c for c in plan_cells(scale, device="cuda").cells if c.kind == "theory"]
    theory_cpu = [c for c in plan_cells(scale, device="cpu").cells if c.kind == "theory"]
    assert [cell_seconds(c) for c in theory_gpu] == [cell_seconds(c) for c in theory_cpu]


def test_audit_dry_run_with_device_cuda_prints_the_device_models_estimate():
    from malleability.reports.cli import main

    r = CliRunner().invoke(main, ["audit", "--scale", "quick", "--device", "cuda", "--dry-run"])
    assert r.exit_code == 0, r.output
    minutes = float(r.output.split("estimate ")[1].split(" min")[0])
    cells = plan_cells(get_scale("quick"), device="cuda").cells
    assert minutes == pytest.approx(estimate_seconds(cells, 1) / 60, abs=0.06)
    assert "NVIDIA H200" in r.output and "1 worker(s) with device cuda" in r.output


def test_the_cuda_estimate_names_the_card_it_was_measured_on():
    from malleability.reports.audit.run import announce_estimate

    cells = [c for c in plan_cells(get_scale("tiny"), device="cuda").cells if c.kind == "ntk-distance"]
    said = []
    est, speed = announce_estimate(cells, 1, "cuda", None, said.append, "audit")
    assert speed is None and est == pytest.approx(estimate_seconds(cells, 1))
    assert "NVIDIA H200" in said[0] and "reference CPU" not in said[0]
