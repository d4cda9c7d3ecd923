"""Each verdict rule on hand-made cells: the four outcomes, flat slopes, did-not-learn cells, readings."""

from __future__ import annotations

import math

import pytest

from malleability.reports.audit import paper_numbers as P
from malleability.reports.audit.summary import summarise
from malleability.reports.audit.verdicts import combine, reading_outcome, verdicts

SCALE = {"attention_inputs": ["raw", "center"], "baseline": "relu", "widths": {"eps": 0.1}}
ACC = {"train": 0.9, "test": 0.8, "krr_test": 0.8, "chance": 0.11, "learned": True}
CHANCE = {"train": 0.1, "test": 0.1, "krr_test": 0.8, "chance": 0.11, "learned": False}


def _flip(task, model, reading, attack, rate, seed, adv=False, acc=ACC, noise_rate=None):
    options = {"attention_input": reading} if model == "mlp-attn" else {}
    classes = {"mnist-3v8": [3, 8], "cifar10-cars-planes": [1, 0]}.get(task)
    dataset = "cifar10" if task.startswith("cifar10") else "mnist"
    return {"kind": "flip-rate", "status": "computed", "label": "f",
            "tags": {"task": task, "model": model, "reading": reading if model == "mlp-attn" else "-"},
            "result": {"model": model, "model_options": options, "dataset": dataset, "classes": classes,
                       "attack": attack, "eps": 0.3, "seed": seed, "adv_train": adv, "intervention": "transformed",
                       "flip_rate": rate, "n_flip_set": 100, "spearman": 0.5, "topk_overlap": 0.5, "accuracy": acc,
                       "readings": {"protocol": "paper"}}}


def _table2(attn_rate, relu_rate, *, attn_acc=ACC, center_rate=None):
    cells = []
    for task in ("mnist", "cifar10"):
        for attack in ("fgsm", "pgd", "mim", "noise"):
            for seed in range(3):
                r = 0.01 if attack == "noise" else relu_rate
                a = 0.01 if attack == "noise" else attn_rate
                cells.append(_flip(task, "relu", "-", attack, r, seed))
                cells.append(_flip(task, "mlp-attn", "raw", attack, a, seed, acc=attn_acc))
                if center_rate is not None:
                    c = 0.01 if attack == "noise" else center_rate
                    cells.append(_flip(task, "mlp-attn", "center", attack, c, seed))
    return cells


def _judge(cells):
    results = {"scale": SCALE, "cells": cells}
    summary = summarise(cells, eps=0.1, baseline="relu")
    return {v["claim"]: v for v in verdicts(results, summary)}


def test_combine_rules():
    assert combine("a", {"a": "holds", "b": "fails"}) == "holds"
    assert combine("a", {"a": "fails", "b": "holds"}) == "depends"
    assert combine("a", {"a": "not-testable", "b": "holds"}) == "depends"
    assert combine("a", {"a": "fails", "b": "fails"}) == "fails"
    assert combine("a", {"a": "not-testable", "b": "fails"}) == "fails"
    assert combine("a", {"a": "not-testable"}) == "not-testable"
    assert combine(None, {"x": "holds"}) == "depends"
    assert combine("a", {}) == "not-run"
    assert reading_outcome([True, True]) == "holds" and reading_outcome([True, False]) == "fails"
    assert reading_outcome([None, True]) == "not-testable" and reading_outcome([None, False]) == "fails"
    assert reading_outcome([]) is None


def test_table2_holds_as_stated_when_ratios_match_the_paper():
    # paper ratios 6.2..10.5 (MNIST) and 8..6.4 (CIFAR-10); ours 0.24 / 0.03 = 8: within a factor 2 everywhere
    v = _judge(_table2(0.24, 0.03))
    assert v["table2"]["verdict"] == "holds" and v["table2"]["verdict_label"] == "holds as stated"
    assert v["headline-6-9x"]["verdict"] == "holds"


def test_table2_fails_when_the_models_are_equally_malleable():
    v = _judge(_table2(0.1, 0.1))
    assert v["table2"]["verdict"] == "fails" and v["table2"]["readings_failing"] == ["raw/excess", "raw/rate"]
    assert v["headline-6-9x"]["verdict"] == "fails"


def test_a_network_at_chance_makes_the_verdict_not_testable_never_failed():
    v = _judge(_table2(0.1, 0.1, attn_acc=CHANCE))
    assert v["table2"]["verdict"] == "not-testable" and v["table2"]["readings_not_testable"]
    assert "did not learn" in v["table2"]["detail"]
    assert v["headline-6-9x"]["verdict"] == "not-testable"


def test_holds_only_under_the_centred_reading():
    v = _judge(_table2(0.1, 0.03, attn_acc=CHANCE, center_rate=0.24))
    assert v["table2"]["verdict"] == "depends"
    assert "center/rate" in v["table2"]["readings_holding"] and "raw/rate" in v["table2"]["readings_not_testable"]


def test_headline_under_v2_only():
    v = _judge(_table2(0.09, 0.03))  # ratio 3: inside v2's 2-9x, outside v1's 6-9x
    assert v["headline-6-9x"]["verdict"] == "depends" and v["headline-6-9x"]["readings_holding"] == ["v2"]


def _ntk(task, model, reading, width, seed, value, acc=ACC):
    options = {"attention_input": reading} if model == "mlp-attn" else {}
    return {"kind": "ntk-distance", "status": "computed", "label": "n",
            "tags": {"task": task, "model": model},
            "result": {"model": model, "model_options": options, "dataset": task, "width": width, "seed": seed,
                       "distance": {"after_vs_init_absolute": value}, "accuracy": acc,
                       "readings": {"protocol": "paper"}}}


def _ntk_cells(law_relu, law_attn, acc=ACC):
    cells = []
    for task in ("mnist", "cifar10"):
        for w in (16, 64, 256, 1024, 4096):
            for s in range(3):
                noise = 1 + 0.01 * (s - 1)
                cells.append(_ntk(task, "relu", "-", w, s, law_relu(task, w) * noise))
                cells.append(_ntk(task, "mlp-attn", "raw", w, s, law_attn(task, w) * noise, acc=acc))
    return cells


def test_ntk_trend_agrees_by_slope_class():
    def relu(task, w):  # the paper: MNIST 2L-ReLU flat (-0.02), CIFAR-10 falls (-0.27)
        return 45.0 * w ** (-0.02 if task == "mnist" else -0.3)

    v = _judge(_ntk_cells(relu, lambda task, w: 5.0 * w ** 0.25))
    assert v["ntk-trend"]["verdict"] == "holds", v["ntk-trend"]["detail"]
    assert "4 of 4 testable model/data pairs agree" in v["ntk-trend"]["detail"]


def test_ntk_trend_on_two_points_is_not_testable_never_a_verdict_from_the_sign():
    # two widths, one seed: a slope without an interval cannot say "flat", so it decides nothing
    def relu(task, w):
        return 45.0 * w ** (-0.02 if task == "mnist" else -0.3)

    cells = [c for c in _ntk_cells(relu, lambda task, w: 5.0 * w ** 0.25)
             if c["result"]["width"] in (16, 4096) and c["result"]["seed"] == 0]
    v = _judge(cells)
    assert v["ntk-trend"]["verdict"] == "not-testable", v["ntk-trend"]["detail"]
    assert "0 of 0 testable" in v["ntk-trend"]["detail"]


def test_flat_slope_against_a_flat_paper_slope_agrees_and_against_a_rise_fails():
    # a flat MLP-Attn where the paper's rises: disagreement; MNIST ReLU +0.01 vs paper -0.02 (both flat): agreement
    v = _judge(_ntk_cells(lambda task, w: 45.0 * w ** (0.01 if task == "mnist" else -0.3), lambda task, w: 5.0))
    assert v["ntk-trend"]["verdict"] == "fails"
    assert "2 of 4 testable model/data pairs agree" in v["ntk-trend"]["detail"]


def test_ntk_trend_not_testable_when_attention_did_not_learn():
    v = _judge(_ntk_cells(lambda task, w: 45.0 * w ** -0.3, lambda task, w: 5.0 * w ** 0.25, acc=CHANCE))
    assert v["ntk-trend"]["verdict"] == "fails" or v["ntk-trend"]["verdict"] == "not-testable"
    assert "not testable: did not learn" in v["ntk-trend"]["detail"]


def test_table1_magnitudes_are_not_comparable():
    v = _judge(_ntk_cells(lambda task, w: 45.0, lambda task, w: 10.0))
    assert v["table1-values"]["verdict"] == "not-comparable" and "paper 45.1" in v["table1-values"]["detail"]


def _kappa(task, ns_kappas):
    views = []
    for n, kappa in ns_kappas:
        views.append({"n": n, "d": 784, "views": {"relu": {"conditioning": {"log10_kappa_G": math.log10(kappa)},
                                                           "predicted": {}}}})
    match = [{"view": "relu", "reading": "kappa_G", "n": min(ns_kappas, key=lambda p: abs(math.log10(p[1] / P.KAPPA["values"][task])))[0],
              "log10_kappa": None, "paper_kappa": P.KAPPA["values"][task]}]
    best = min(ns_kappas, key=lambda p: abs(math.log10(p[1] / P.KAPPA["values"][task])))
    match[0]["log10_kappa"] = math.log10(best[1])
    match[0]["log10_gap"] = math.log10(best[1] / P.KAPPA["values"][task])
    return {"kind": "widths", "status": "computed", "label": "w", "tags": {"task": task},
            "result": {"report": {"per_n": views, "paper_kappa_match": match}}}


def test_kappa_holds_at_the_n_that_matches_and_fails_when_none_does():
    v = _judge([_kappa("mnist", [(50, 400.0), (100, 2.0e3), (500, 3.2e7)])])
    assert v["kappa-values"]["verdict"] == "depends"
    assert v["kappa-values"]["readings_holding"] == ["kappa_G (mnist n=100)"]
    v = _judge([_kappa("mnist", [(500, 3.2e7), (1000, 1e9)])])
    assert v["kappa-values"]["verdict"] == "fails"


def test_theory_verdicts_are_taken_from_the_checker():
    cell = {"kind": "theory", "status": "computed", "label": "t", "tags": {"claim": "prop4.5"},
            "result": {"id": "prop4.5", "statement": "s", "verdict": "depends", "as_stated": "as-printed",
                       "readings": [{"name": "as-printed", "verdict": "fails"}, {"name": "exact-query", "verdict": "holds"}],
                       "counterexample": {"reading": "as-printed", "matrix": [[2]]}}}
    v = _judge([cell])
    assert v["prop4.5"]["verdict"] == "depends" and v["prop4.5"]["readings_holding"] == ["exact-query"]
    assert "[[2]]" in v["prop4.5"]["detail"]
    failed = {**cell, "status": "failed", "result": None, "error": "boom"}
    assert _judge([failed])["prop4.5"]["verdict"] == "not-run"


@pytest.mark.parametrize("claim", ["table3", "table4"])
def test_missing_tables_are_not_run(claim):
    assert _judge(_table2(0.24, 0.03))[claim]["verdict"] == "not-run"
