"""The limitation judges on hand-made cells: each comes out both ways, and networks at chance are not testable."""

from __future__ import annotations

import pytest

from malleability.empirics.models import get_model
from malleability.reports.audit import limitations as L
from malleability.reports.audit.summary import summarise
from malleability.reports.audit.verdicts import verdicts

ACC = {"train": 0.9, "test": 0.8, "krr_test": 0.8, "chance": 0.11, "learned": True}
CHANCE = {"train": 0.1, "test": 0.1, "krr_test": 0.8, "chance": 0.11, "learned": False}
TASKS = ("mnist", "cifar10")
ATTACKS = ("fgsm", "pgd", "mim", "noise")


def scale(models=L.DEFAULT_LIMITATION_MODELS, ranks=(2, None)):
    return {"attention_inputs": ["raw"], "baseline": "relu", "widths": {"eps": 0.1},
            "flip": {"tasks_10class": list(TASKS)}, "limitation_models": list(models), "truncation_ranks": list(ranks)}


def flip(task, model, options, attack, rate, seed, acc=ACC):
    return {"kind": "flip-rate", "status": "computed", "label": "f", "tags": {"task": task, "model": model},
            "result": {"model": model, "model_options": get_model(model, options).options(), "dataset": task,
                       "classes": None, "attack": attack, "eps": 0.3, "seed": seed, "adv_train": False,
                       "intervention": "transformed", "flip_rate": rate, "n_flip_set": 100, "spearman": 0.5,
                       "topk_overlap": 0.5, "accuracy": acc, "readings": {"protocol": "paper"}}}


def ntk(task, model, options, width, seed, value, acc=ACC):
    return {"kind": "ntk-distance", "status": "computed", "label": "n", "tags": {"task": task, "model": model},
            "result": {"model": model, "model_options": get_model(model, options).options(), "dataset": task,
                       "width": width, "seed": seed, "distance": {"after_vs_init_absolute": value}, "accuracy": acc,
                       "readings": {"protocol": "paper"}}}


def flip_cells(rates: dict, accs: dict | None = None):
    """rates: {(model, options as tuple): flip rate of every attack}; noise flips at 0.01 for every model."""
    cells = []
    for (model, opts), rate in rates.items():
        for task in TASKS:
            for attack in ATTACKS:
                for seed in range(3):
                    acc = (accs or {}).get((model, opts), ACC)
                    cells.append(flip(task, model, dict(opts), attack, 0.01 if attack == "noise" else rate, seed, acc))
    return cells


def ntk_cells(exponents: dict, accs: dict | None = None):
    cells = []
    for (model, opts), p in exponents.items():
        for task in TASKS:
            for w in (16, 64, 256, 1024):
                for seed in range(3):
                    acc = (accs or {}).get((model, opts), ACC)
                    cells.append(ntk(task, model, dict(opts), w, seed, 10.0 * w ** p * (1 + 0.01 * (seed - 1)), acc))
    return cells


def judge(cells, sc=None):
    results = {"scale": sc or scale(), "cells": cells}
    return {v["claim"]: v for v in verdicts(results, summarise(cells, eps=0.1, baseline="relu"))}


RELU, MLP = ("relu", ()), ("mlp-attn", ())
SOFT, PATCH, QKV = ("softmax-attn", ()), ("patch-attn", ()), ("qkv-attn", ())
T2, TFULL = ("truncated-attn", (("rank", 2),)), ("truncated-attn", (("rank", None),))


def test_variants_of_a_scale():
    class S:
        limitation_models = ("softmax-attn", "truncated-attn")
        truncation_ranks = (1, None)

    # rank=full is MLP-Attn itself: not planned again
    raw = [("softmax-attn", {"attention_input": "raw"}, "raw"),
           ("truncated-attn", {"attention_input": "raw", "rank": 1}, "raw rank=1")]
    assert L.limitation_variants(S()) == raw
    S.attention_inputs = ("raw", "center")
    both = L.limitation_variants(S())
    assert both[:1] + both[2:3] == raw and len(both) == 4
    assert ("softmax-attn", {"attention_input": "center"}, "center") in both
    assert ("truncated-attn", {"attention_input": "center", "rank": 1}, "center rank=1") in both
    assert L.limitation_variants(object()) == []
    assert L.variant_key("truncated-attn", {"rank": 5}) == "truncated-attn[rank=5]"
    assert L.variant_key("truncated-attn", {"rank": 5}, "center") == "truncated-attn[attention_input=center,rank=5]"
    assert L.variant_key("relu", attention_input="center") == "relu"  # no such option: the reading does not apply


def test_no_rows_without_limitation_models():
    v = judge(flip_cells({RELU: 0.05, MLP: 0.2}), sc={**scale(), "limitation_models": []})
    assert not {"limitation-softmax", "limitation-inductive", "prop-b4", "limitation-truncation"} & set(v)


@pytest.mark.parametrize("soft_rate, verdict", [(0.4, "holds"), (0.1, "fails")])
def test_softmax_amplifies_both_ways(soft_rate, verdict):
    v = judge(flip_cells({RELU: 0.05, MLP: 0.2, SOFT: soft_rate}))["limitation-softmax"]
    assert v["verdict"] == verdict, v["detail"]


def test_softmax_at_chance_is_not_testable():
    v = judge(flip_cells({RELU: 0.05, MLP: 0.2, SOFT: 0.4}, accs={SOFT: CHANCE}))["limitation-softmax"]
    assert v["verdict"] == "not-testable"


@pytest.mark.parametrize("patch_rate, verdict", [(0.3, "holds"), (0.06, "fails")])
def test_inductive_gap_both_ways(patch_rate, verdict):
    # ReLU 0.05: ratio 6 clears the 2x gap, ratio 1.2 does not
    v = judge(flip_cells({RELU: 0.05, PATCH: patch_rate}))["limitation-inductive"]
    assert v["verdict"] == verdict, v["detail"]


def test_prop_b4_holds_when_the_kernel_does_not_converge_and_influence_is_malleable():
    cells = ntk_cells({QKV: 0.3}) + flip_cells({RELU: 0.05, QKV: 0.3})
    v = judge(cells)["prop-b4"]
    assert v["verdict"] == "holds", v["detail"]


def test_prop_b4_fails_when_the_kernel_converges_and_only_depends_when_one_half_holds():
    v = judge(ntk_cells({QKV: -0.5}) + flip_cells({RELU: 0.05, QKV: 0.06}))["prop-b4"]
    assert v["verdict"] == "fails"
    # converging kernel, malleable influence: the as-stated conjunction fails, the flip reading holds
    v = judge(ntk_cells({QKV: -0.5}) + flip_cells({RELU: 0.05, QKV: 0.3}))["prop-b4"]
    assert v["verdict"] == "depends" and "raw/flip/rate" in v["readings_holding"]


def test_truncation_restores_at_a_rank_or_not():
    good = ntk_cells({T2: -0.4, TFULL: 0.3, MLP: 0.3}) + flip_cells({RELU: 0.05, MLP: 0.3, T2: 0.1, TFULL: 0.3})
    v = judge(good)["limitation-truncation"]
    assert v["verdict"] == "depends" and v["readings_holding"] == ["raw/rank=2"], v["detail"]
    assert "raw/rank=full" not in v["readings"]
    assert [r["rank"] for r in v["per_rank"]] == [2, None] and v["per_rank"][0]["accuracy_test"] == pytest.approx(0.8)
    assert {r["attention_input"] for r in v["per_rank"]} == {"raw"}
    bad = ntk_cells({T2: 0.2, TFULL: 0.3, MLP: 0.3}) + flip_cells({RELU: 0.05, MLP: 0.3, T2: 0.3, TFULL: 0.3})
    assert judge(bad)["limitation-truncation"]["verdict"] == "fails"


def test_truncation_at_chance_is_not_testable():
    cells = ntk_cells({T2: -0.4, MLP: 0.3}, accs={T2: CHANCE}) + flip_cells({RELU: 0.05, MLP: 0.3, T2: 0.1},
                                                                            accs={T2: CHANCE})
    assert judge(cells)["limitation-truncation"]["verdict"] == "not-testable"


def test_criteria_are_written_for_every_judge():
    assert set(L.criteria()) == {"limitation-softmax", "limitation-inductive", "prop-b4", "limitation-truncation"}


def test_truncation_accuracy_is_compared_with_mlp_attn_on_the_same_data_sets():
    # MLP-Attn runs on both data sets (0.8 on mnist, 0.3 on cifar10), truncated-attn on mnist only
    low = {**ACC, "test": 0.3}
    mlp = [c for c in ntk_cells({MLP: 0.3}) if c["tags"]["task"] == "mnist"]
    mlp += [c for c in ntk_cells({MLP: 0.3}, accs={MLP: low}) if c["tags"]["task"] == "cifar10"]
    trunc = [c for c in ntk_cells({T2: -0.4, TFULL: 0.3}) if c["tags"]["task"] == "mnist"]
    v = judge(mlp + trunc)["limitation-truncation"]
    assert [r["accuracy_test_mlp_attn"] for r in v["per_rank"]] == [pytest.approx(0.8)] * 2, v["per_rank"]
    # on both data sets the reference is their mean
    both = judge(mlp + ntk_cells({T2: -0.4, TFULL: 0.3}))["limitation-truncation"]
    assert both["per_rank"][0]["accuracy_test_mlp_attn"] == pytest.approx(0.55)


CENTER = (("attention_input", "center"),)
MLP_C, SOFT_C, PATCH_C = ("mlp-attn", CENTER), ("softmax-attn", CENTER), ("patch-attn", CENTER)
QKV_C, T2_C = ("qkv-attn", CENTER), ("truncated-attn", CENTER + (("rank", 2),))


def both_readings():
    return {**scale(), "attention_inputs": ["raw", "center"]}


def test_softmax_is_compared_with_mlp_attn_under_the_same_attention_input():
    # raw: softmax 0.4 > MLP-Attn 0.2 holds; center: softmax 0.4 < MLP-Attn (center) 0.6 fails
    cells = flip_cells({RELU: 0.05, MLP: 0.2, SOFT: 0.4, MLP_C: 0.6, SOFT_C: 0.4})
    v = judge(cells, sc=both_readings())["limitation-softmax"]
    assert v["as_stated"] == "raw/rate" and v["readings"]["raw/rate"] == "holds"
    # the as-stated (raw) reading decides the verdict; the failing centred reading is listed beside it
    assert v["readings"]["center/rate"] == "fails" and v["verdict"] == "holds", v["readings"]
    assert "center/rate" in v["readings_failing"]
    # center cells of softmax-attn alone, without MLP-Attn (center): that reading is untested, not failed
    v = judge(flip_cells({RELU: 0.05, MLP: 0.2, SOFT: 0.4, SOFT_C: 0.1}), sc=both_readings())["limitation-softmax"]
    assert "center/rate" not in v["readings"] and v["verdict"] == "holds"


def test_inductive_gap_per_attention_input():
    v = judge(flip_cells({RELU: 0.05, PATCH: 0.06, PATCH_C: 0.3}), sc=both_readings())["limitation-inductive"]
    assert v["readings"]["raw/rate"] == "fails" and v["readings"]["center/rate"] == "holds", v["readings"]
    assert v["verdict"] == "depends" and "center/rate" in v["readings_holding"]  # as stated fails, another reading holds


def test_prop_b4_per_attention_input_and_at_chance_under_one():
    cells = ntk_cells({QKV: 0.3, QKV_C: 0.3}, accs={QKV_C: CHANCE}) + flip_cells({RELU: 0.05, QKV: 0.3, QKV_C: 0.3},
                                                                                accs={QKV_C: CHANCE})
    v = judge(cells, sc=both_readings())["prop-b4"]
    assert v["readings"]["raw/ntk/after_vs_init_absolute+flip/rate"] == "holds"
    assert v["readings"]["center/ntk/after_vs_init_absolute+flip/rate"] == "not-testable", v["readings"]


def test_truncation_per_attention_input():
    # center: rank 2 converges and flips less than MLP-Attn (center); raw: no truncated cells at all
    cells = (ntk_cells({T2_C: -0.4, MLP_C: 0.3, MLP: 0.3})
             + flip_cells({RELU: 0.05, MLP: 0.3, MLP_C: 0.3, T2_C: 0.1}))
    v = judge(cells, sc=both_readings())["limitation-truncation"]
    assert v["readings"] == {"center/rank=2": "holds"}, v["readings"]
    assert [(r["attention_input"], r["rank"]) for r in v["per_rank"]] == [("center", 2), ("center", None)]


def test_truncation_full_rank_without_its_own_cells_is_mlp_attn_on_the_same_data_sets():
    # MLP-Attn on mnist (rising) and cifar10 (falling); truncated-attn rank 2 on mnist only, no rank=full cells
    mlp = ntk_cells({MLP: 0.3})
    mlp = [c for c in mlp if c["tags"]["task"] == "mnist"] + [c for c in ntk_cells({MLP: -0.6})
                                                              if c["tags"]["task"] == "cifar10"]
    trunc = [c for c in ntk_cells({T2: -0.4}) if c["tags"]["task"] == "mnist"]
    # MLP-Attn is attacked with every attack, truncated-attn with PGD only: rank=full shows PGD only
    flips = flip_cells({RELU: 0.05, MLP: 0.3}) + [c for c in flip_cells({T2: 0.1}) if c["result"]["attack"] == "pgd"]
    v = judge(mlp + trunc + flips)["limitation-truncation"]
    full = [r for r in v["per_rank"] if r["rank"] is None]
    assert len(full) == 1 and set(full[0]["ntk_slopes"]) == {"mnist"}, full
    assert full[0]["ntk_slopes"]["mnist"]["class"] == "rises", full
    assert set(full[0]["flip_ratios"]) == set(v["per_rank"][0]["flip_ratios"]) and full[0]["flip_ratios"], v["per_rank"]
    assert "raw/rank=full" not in v["readings"] and v["readings"]["raw/rank=2"] == "holds", v["readings"]
    # with cells of its own, rank=full reads those (an older results.json)
    own = judge(mlp + trunc + ntk_cells({TFULL: -0.5}) + flip_cells({RELU: 0.05, MLP: 0.3, T2: 0.1}))
    full = [r for r in own["limitation-truncation"]["per_rank"] if r["rank"] is None][0]
    assert full["ntk_slopes"]["mnist"]["class"] == "falls"


def test_prop_b4_kernel_reading_on_two_points_is_not_testable_where_more_points_fail():
    # a converging kernel fails the kernel half on four widths x three seeds; two points (no interval) decide nothing
    full = judge(ntk_cells({QKV: -0.5}) + flip_cells({RELU: 0.05, QKV: 0.3}))["prop-b4"]
    two = [c for c in ntk_cells({QKV: -0.5}) if c["result"]["width"] in (16, 1024) and c["result"]["seed"] == 0]
    thin = judge(two + flip_cells({RELU: 0.05, QKV: 0.3}))["prop-b4"]
    ntk_readings = [name for name in full["readings"] if "/ntk/" in name]
    assert ntk_readings and all(full["readings"][name] == "fails" for name in ntk_readings), full["readings"]
    assert all(thin["readings"][name] == "not-testable" for name in ntk_readings), thin["readings"]
