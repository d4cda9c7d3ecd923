"""The adversarial-training budget schedule: 'constant' (the full ε from the first step) and 'ramp'.

The budget function against its closed form, the per-step budget the training transform asks for,
config and CLI validation, the grid, the summary's pairing, the Table 4 verdict's readings and the
plot's bars.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from click.testing import CliRunner

from malleability.empirics.data import DataConfig
from malleability.empirics.experiments.flip_rate import FlipRateConfig, summarise, sweep
from malleability.empirics.experiments.flip_rate import cell as flip_cell_module
from malleability.empirics.experiments.flip_rate.config import adv_train_budget
from malleability.empirics.training import TrainConfig
from malleability.errors import MalleabilityError
from malleability.reports import audit as A
from malleability.reports.audit.summary import summarise as audit_summarise
from malleability.reports.audit.verdicts import verdicts
from malleability.reports.cli import main

DATA = DataConfig("mnist", n=30, n_test=6)


def _cfg(**kw):
    base = dict(data=DATA, train=TrainConfig(epochs=10, batch_size=8), model="relu", attack="pgd", adv_train=True,
                width=8)
    return FlipRateConfig(**{**base, **kw})


# ---------------------------------------------------------------------------------------------
# the budget


def test_budget_closed_form():
    assert [adv_train_budget(0.3, e, "constant", None) for e in range(3)] == [0.3] * 3
    ramp = [adv_train_budget(0.3, e, "ramp", 4) for e in range(7)]
    assert ramp == pytest.approx([0.075, 0.15, 0.225, 0.3, 0.3, 0.3, 0.3])
    assert adv_train_budget(0.3, 0, "ramp", 1) == 0.3  # a one-epoch ramp is the constant schedule
    assert all(a <= b for a, b in zip(ramp, ramp[1:])) and max(ramp) == 0.3
    with pytest.raises(MalleabilityError, match="ramp_epochs"):
        adv_train_budget(0.3, 0, "ramp", None)
    with pytest.raises(MalleabilityError, match="schedule"):
        adv_train_budget(0.3, 0, "cosine", 4)


def test_config_validation_and_default_ramp_length():
    assert _cfg().adv_train_schedule == "constant" and _cfg().ramp_epochs() is None
    assert _cfg(adv_train_schedule="ramp").ramp_epochs() == 2  # a fifth of 10 epochs
    assert _cfg(adv_train_schedule="ramp", train=TrainConfig(epochs=2)).ramp_epochs() == 1  # at least 1
    assert _cfg(adv_train_schedule="ramp", train=TrainConfig(epochs=500)).ramp_epochs() == 100
    assert _cfg(adv_train_schedule="ramp", adv_train_ramp_epochs=7).ramp_epochs() == 7
    with pytest.raises(MalleabilityError, match="unknown adv_train_schedule"):
        _cfg(adv_train_schedule="cosine")
    with pytest.raises(MalleabilityError, match="adversarial training only"):
        _cfg(adv_train=False, adv_train_schedule="ramp")
    with pytest.raises(MalleabilityError, match="adv_train_ramp_epochs"):
        _cfg(adv_train_schedule="ramp", adv_train_ramp_epochs=0)
    old = {k: v for k, v in _cfg().to_json().items() if not k.startswith("adv_train_")}  # a config of earlier versions
    assert FlipRateConfig.from_json({**old, "adv_train": True}).adv_train_schedule == "constant"


@pytest.mark.parametrize("schedule,expected", [("constant", [0.3] * 8), ("ramp", [0.15] * 4 + [0.3] * 4)])
def test_the_transform_asks_for_each_epochs_budget(monkeypatch, schedule, expected):
    """30 rows in batches of 8 are 4 steps per epoch; the ramp over 2 epochs halves the first epoch's budget."""
    asked = []

    def fake_attack(cfg, *, eps, name, options, loss_fn, seed):
        asked.append(eps)
        return lambda model_fn, x, y: x

    monkeypatch.setattr(flip_cell_module, "build_attack", fake_attack)
    monkeypatch.setattr(flip_cell_module, "_model_fn", lambda model, space: None)

    class Net:
        def loss_fn(self):
            return None

    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(30, 784, generator=g, dtype=torch.float64)
    unit = pixels / pixels.norm(dim=1, keepdim=True)
    cfg = _cfg(adv_train_schedule=schedule, adv_train_ramp_epochs=2 if schedule == "ramp" else None)
    transform = flip_cell_module.adversarial_batch_transform(cfg, pixels, unit)
    for _ in range(8):
        out = transform(Net(), unit[:8], torch.zeros(8, dtype=torch.long))
    assert asked == pytest.approx(expected)
    assert torch.allclose(out.norm(dim=1), torch.ones(8, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# grid and summary


def test_sweep_gives_each_schedule_its_own_adversarial_cells():
    cfgs = sweep(DATA, TrainConfig(epochs=5), models=["relu"], attacks=["pgd"], eps_list=[0.3], seeds=[0, 1],
                 adv_modes=(False, True), adv_schedules=("constant", "ramp"), width=8)
    modes = sorted((c.adv_train, c.adv_train_schedule, c.train.seed) for c in cfgs)
    assert modes == [(False, "constant", 0), (False, "constant", 1), (True, "constant", 0), (True, "constant", 1),
                     (True, "ramp", 0), (True, "ramp", 1)]
    with pytest.raises(MalleabilityError, match="schedule"):
        sweep(DATA, TrainConfig(epochs=5), models=["relu"], attacks=["pgd"], eps_list=[0.3], seeds=[0],
              adv_modes=(True,), adv_schedules=())


def _row(seed, rate, *, adv=False, schedule=None, learned=True):
    readings = {"protocol": "paper"}
    if adv and schedule is not None:
        readings["adv_train_schedule"] = schedule
    return {"model": "relu", "dataset": "mnist", "classes": None, "attack": "pgd", "eps": 0.3, "seed": seed,
            "intervention": "transformed", "adv_train": adv, "flip_rate": rate, "spearman": 0.5, "topk_overlap": 0.4,
            "n_flip_set": 60, "readings": readings,
            "accuracy": {"train": 0.9, "test": 0.8, "krr_test": 0.8, "chance": 0.1, "learned": learned}}


def test_summary_never_pools_schedules_and_pairs_each_with_the_standard_cells():
    rows = [_row(s, 0.05) for s in range(2)]
    rows += [_row(s, 0.10, adv=True) for s in range(2)]  # a row of earlier versions: no schedule recorded
    rows += [_row(s, 0.40, adv=True, schedule="ramp") for s in range(2)]
    out = summarise(rows)
    by = {(c["adv_train"], c["adv_schedule"]): c["flip_rate"]["mean"] for c in out["cells"]}
    assert by == {(False, None): pytest.approx(0.05), (True, "constant"): pytest.approx(0.10),
                  (True, "ramp"): pytest.approx(0.40)}
    abl = {a["adv_schedule"]: (a["standard"]["mean"], a["adversarial_training"]["mean"]) for a in out["ablation"]}
    assert abl == {"constant": (pytest.approx(0.05), pytest.approx(0.10)),
                   "ramp": (pytest.approx(0.05), pytest.approx(0.40))}


# ---------------------------------------------------------------------------------------------
# the Table 4 verdict


def _audit_cell(model, reading, rate, seed, *, adv=False, schedule="constant", learned=True):
    row = _row(seed, rate, adv=adv, schedule=schedule if adv else None, learned=learned)
    row.update(model=model, model_options={"attention_input": reading} if model == "mlp-attn" else {}, n_flip_set=1000)
    return {"kind": "flip-rate", "status": "computed", "label": "f", "result": row,
            "tags": {"task": "mnist", "model": model, "reading": reading if model == "mlp-attn" else "-"}}


def test_table4_judges_each_schedule_as_its_own_reading():
    """ReLU collapses under the full budget (not testable) but learns under the ramp, where both ratios match."""
    cells = []
    for seed in range(2):
        cells += [_audit_cell("relu", "-", 0.033, seed), _audit_cell("mlp-attn", "raw", 0.289, seed),
                  _audit_cell("relu", "-", 0.12, seed, adv=True, learned=False),
                  _audit_cell("mlp-attn", "raw", 0.42, seed, adv=True),
                  _audit_cell("relu", "-", 0.43, seed, adv=True, schedule="ramp"),
                  _audit_cell("mlp-attn", "raw", 0.42, seed, adv=True, schedule="ramp")]
    scale = {"attention_inputs": ["raw"], "baseline": "relu", "widths": {"eps": 0.1},
             "flip": {"adv_train_schedules": ["constant", "ramp"]}}
    results = {"scale": scale, "cells": cells}
    (t4,) = [v for v in verdicts(results, audit_summarise(cells, eps=0.1, baseline="relu")) if v["claim"] == "table4"]
    assert t4["readings"] == {"raw": "not-testable", "raw/eps-ramp": "holds"}
    assert t4["verdict"] == "depends"  # as stated (raw, constant) cannot be decided; the ramp reading holds
    assert "raw/eps-ramp mnist relu: 13.03 vs paper 13.15" in t4["detail"]
    # the check can fail: a ramp that leaves the rate where it was is outside a factor 2 of the paper's 13x
    flat = [c if not (c["result"]["adv_train"] and c["result"]["readings"].get("adv_train_schedule") == "ramp"
                      and c["result"]["model"] == "relu")
            else {**c, "result": {**c["result"], "flip_rate": 0.04}} for c in cells]
    (t4,) = [v for v in verdicts({**results, "cells": flat}, audit_summarise(flat, eps=0.1, baseline="relu"))
             if v["claim"] == "table4"]
    assert t4["readings"]["raw/eps-ramp"] == "fails"


# ---------------------------------------------------------------------------------------------
# plan, CLI, plot


def test_the_plan_runs_table4_under_every_schedule_and_an_override_narrows_it():
    over = ["flip.adv_training=true", "flip.tasks_10class=mnist"]

    def table4(*extra):
        cells = A.plan_cells(A.get_scale("tiny", [*over, *extra])).cells
        return sorted({(c.tags["model"], c.tags["adv_schedule"]) for c in cells
                       if c.tags.get("table") == "table4" and c.tags["adv_train"]})

    assert table4() == [("mlp-attn", "constant"), ("mlp-attn", "ramp"), ("relu", "constant"), ("relu", "ramp")]
    assert table4("flip.adv_train_schedules=ramp") == [("mlp-attn", "ramp"), ("relu", "ramp")]
    cells = A.plan_cells(A.get_scale("tiny", [*over, "flip.adv_train_ramp_epochs=3"])).cells
    assert {c.config.adv_train_ramp_epochs for c in cells if c.tags.get("adv_schedule") == "ramp"} == {3}
    labels = [c.label for c in cells if c.tags.get("adv_schedule") == "ramp"]
    assert labels and all("adv-train ramp" in label for label in labels)
    for bad in ("flip.adv_train_schedules=cosine", "flip.adv_train_ramp_epochs=0", "flip.adv_train_schedules=ramp,ramp"):
        with pytest.raises(MalleabilityError, match="adv_train"):
            A.get_scale("tiny", [*over, bad])


@pytest.mark.parametrize("args,message", [
    (["--adv-train-schedule", "ramp"], "applies to adversarial training"),
    (["--adv-train", "--adv-train-schedule", "cosine"], "unknown --adv-train-schedule cosine"),
    (["--adv-train", "--adv-train-schedule", ","], "empty entry"), (["--adv-train", "--adv-train-schedule", ""], "is empty"),
    (["--adv-train", "--adv-train-schedule", "ramp", "--adv-train-ramp-epochs", "0"], "must be >= 1"),
])
def test_cli_rejects_bad_schedules_in_one_line(args, message):
    res = CliRunner().invoke(main, ["flip-rate", "--dataset", "mnist", "--attack", "pgd", *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_ablation_runs_both_schedules_on_real_data(tmp_path):
    import json

    res = CliRunner().invoke(main, ["flip-rate", "--dataset", "mnist", "--n", "24", "--n-test", "6", "--attack", "pgd",
                                    "--seeds", "1", "--epochs", "2", "--width", "8", "--models", "relu",
                                    "--ablation", "--adv-train-schedule", "constant,ramp", "--adv-train-steps", "1",
                                    "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output[res.output.index("{"):])
    params = sorted((r["adv_train_params"] or {}).get("schedule", "-") for r in doc["rows"])
    assert params == ["-", "constant", "ramp"]
    ramp = next(r for r in doc["rows"] if (r["adv_train_params"] or {}).get("schedule") == "ramp")
    assert ramp["adv_train_params"]["ramp_epochs"] == 1 and ramp["readings"]["adv_train_schedule"] == "ramp"
    assert sorted(a["adv_schedule"] for a in doc["summary"]["ablation"]) == ["constant", "ramp"]


def test_plot_draws_a_hatched_ramp_bar_with_its_own_legend_entry(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    from malleability.reports.report import plots

    readings = "space=pixel;recompute=retrain;ntk_at=trained;protocol=paper"

    def stat(mean):
        return {"mean": mean, "ci95": [max(0.0, mean - 0.05), min(1.0, mean + 0.05)]}

    def cell(flip, learned, adv, schedule):
        return {"model": "relu", "attack": "pgd", "eps": 0.3, "adv_train": adv, "adv_schedule": schedule,
                "readings": readings, "flip_rate": stat(flip),
                "accuracy": {"test": stat(0.5), "chance": 0.1, "learned": learned}}

    cells = [cell(0.05, True, False, None), cell(0.12, False, True, "constant"), cell(0.4, True, True, "ramp")]
    ablation = [{"model": "relu", "attack": "pgd", "eps": 0.3, "readings": readings, "adv_train": False,
                 "adv_schedule": s, "standard": stat(0.05), "adversarial_training": stat(v)}
                for s, v in (("constant", 0.12), ("ramp", 0.4))]
    figs = []
    monkeypatch.setattr(plots, "_save", lambda plt, fig, path: figs.append(fig) or True)
    results = {"scale": {"flip": {"eps": 0.3}}, "labels": {}, "paper_numbers": [],
               "summary": {"flip": {"mnist": {"cells": cells, "ablation": ablation}}}}
    assert plots.plot_flip(results, tmp_path / "f.png")
    ax = figs[0].axes[-1]
    bars = sorted(ax.patches, key=lambda p: p.get_x())
    assert [round(b.get_height(), 2) for b in bars] == [0.05, 0.12, 0.4]
    assert [bool(b.get_hatch()) for b in bars] == [False, True, False]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["standard training", "PGD adversarial training", "PGD adversarial training, ε ramp"]
    assert math.isclose(bars[1].get_width(), 0.8 / 3)
    assert dataclasses.is_dataclass(_cfg())
