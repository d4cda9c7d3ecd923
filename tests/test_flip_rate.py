"""The flip-rate experiment: metrics on hand-made cases, the summariser, and scaled-down real-data cells."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from malleability.empirics.data import DataConfig
from malleability.empirics.experiments.flip_rate import (
    EDGE_TIE_RTOL,
    FlipRateConfig,
    flip_rate,
    flip_set_edge,
    run_flip_rate_cell,
    spearman,
    top_tau_indices,
    topk_overlap,
)
from malleability.empirics.experiments.flip_rate import summarise as summarise_flip_rates
from malleability.empirics.training import TrainConfig
from malleability.errors import MalleabilityError
from malleability.reports.cli import main
from malleability.reports.cli_common import parse_seeds
from malleability.stats import paired_ratio as ratio_with_interval

# ---------------------------------------------------------------------------------------------
# metrics


def test_flip_rate_hand_made():
    assert flip_rate(np.array([1.0, -2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(1 / 3)
    assert flip_rate(np.array([1.0, -1.0]), np.array([-1.0, 1.0])) == 1.0
    # an exact zero is not a strict sign change
    assert flip_rate(np.array([1.0, 0.0]), np.array([0.0, -1.0])) == 0.0


def test_spearman_reversal_identity_and_constant():
    a = np.array([0.3, -1.0, 2.0, 5.0, 0.1])
    rho, reason = spearman(a, -a)
    assert rho == pytest.approx(-1.0) and reason is None
    rho, _ = spearman(a, 10 * a**3)  # monotone transform
    assert rho == pytest.approx(1.0)
    assert spearman(np.ones(4), a[:4]) == (None, "influence before is constant")
    assert spearman(a[:4], np.full(4, 2.0)) == (None, "influence after is constant")
    assert spearman(np.array([1.0]), np.array([2.0]))[0] is None


def test_topk_overlap_and_top_tau():
    before = np.array([5.0, -4.0, 3.0, 0.1, 0.2])
    after = np.array([0.0, 4.0, -3.0, 9.0, 0.2])
    assert topk_overlap(before, after, 2) == 0.5  # {0,1} vs {3,1}
    assert topk_overlap(before, before, 3) == 1.0
    np.testing.assert_array_equal(top_tau_indices(np.abs(before), 0.4), [0, 1])
    np.testing.assert_array_equal(top_tau_indices(np.abs(before), 0.01), [0])  # at least one
    assert top_tau_indices(np.ones(10), 0.1).tolist() == [0]  # ties by index
    assert top_tau_indices(np.arange(10.0), 0.3).size == 3
    with pytest.raises(MalleabilityError, match="tau"):
        top_tau_indices(np.ones(3), 1.5)


# ---------------------------------------------------------------------------------------------
# summary


def _row(model, seed, fr, rho=0.5, adv=False, attack="pgd", learned=True, topk=0.4):
    return {"model": model, "dataset": "mnist", "classes": None, "attack": attack, "eps": 0.3, "seed": seed,
            "intervention": "transformed", "adv_train": adv, "flip_rate": fr, "spearman": rho, "topk_overlap": topk,
            "n_flip_set": 100, "accuracy": {"train": 0.9, "test": 0.8, "krr_test": 0.85, "chance": 0.1,
                                             "learned": learned}}


def test_summary_mean_interval_ratio_and_ablation():
    attn, relu = [0.30, 0.20, 0.25], [0.05, 0.04, 0.06]
    rows = [_row("mlp-attn", s, v, topk=t) for s, (v, t) in enumerate(zip(attn, [0.3, 0.4, 0.5]))]
    rows += [_row("relu", s, v) for s, v in enumerate(relu)]
    rows += [_row("relu", s, 0.4, rho=None, adv=True) for s in range(2)]
    out = summarise_flip_rates(rows)
    cell = next(c for c in out["cells"] if c["model"] == "mlp-attn")
    assert cell["flip_rate"]["mean"] == pytest.approx(0.25)
    assert cell["flip_rate"]["std"] == pytest.approx(np.std(attn, ddof=1))
    # Wilson over the pooled counts: 75 flips of 300
    wilson = scipy.stats.binomtest(75, 300).proportion_ci(method="wilson")
    assert cell["flip_rate"]["ci95"] == pytest.approx([wilson.low, wilson.high])
    assert cell["flip_rate"]["successes"] == 75 and cell["flip_rate"]["trials"] == 300
    half = scipy.stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)  # top-k overlap 0.3, 0.4, 0.5: mean 0.4, sd 0.1
    assert cell["topk_overlap"]["ci95"] == pytest.approx([0.4 - half, 0.4 + half], rel=1e-12)
    relu_cell = next(c for c in out["cells"] if c["model"] == "relu" and not c["adv_train"])
    assert relu_cell["topk_overlap"]["ci95"] == pytest.approx([0.4, 0.4])  # constant: width 0
    assert cell["accuracy"]["learned"] and cell["accuracy"]["test"]["mean"] == pytest.approx(0.8)
    adv_cell = next(c for c in out["cells"] if c["adv_train"])
    assert adv_cell["spearman"]["n"] == 0 and adv_cell["spearman_undefined"] == 2
    (ratio,) = [r for r in out["ratios"] if not r["adv_train"]]
    assert ratio["ratio"] == pytest.approx(0.25 / 0.05)
    lo, hi = ratio["ci95"]
    assert lo <= ratio["ratio"] <= hi and lo >= 0.20 / 0.06 - 1e-9 and hi <= 0.30 / 0.04 + 1e-9
    (abl,) = out["ablation"]
    assert abl["model"] == "relu" and abl["standard"]["mean"] == pytest.approx(0.05)
    assert abl["adversarial_training"]["mean"] == pytest.approx(0.4)
    assert json.dumps(out, allow_nan=False)


def test_summary_excess_over_noise():
    rows = [_row("relu", s, v) for s, v in enumerate([0.30, 0.34])]
    rows += [_row("relu", s, v, attack="noise") for s, v in enumerate([0.28, 0.30])]
    rows += [_row("mlp-attn", s, 0.5) for s in range(2)]  # no noise rows for this model
    rows += [_row("relu", 0, 0.9, attack="fgsm", adv=True)]  # no noise rows with adv_train
    out = summarise_flip_rates(rows)
    by = {(c["attack"], c["model"], c["adv_train"]): c for c in out["cells"]}
    ex = by[("pgd", "relu", False)]["excess_over_noise"]
    assert ex["mean"] == pytest.approx(0.32 - 0.29) and ex["seeds"] == [0, 1] and ex["n"] == 2
    assert -1.0 <= ex["ci95"][0] <= ex["ci95"][1] <= 1.0
    assert by[("noise", "relu", False)]["excess_over_noise"] is None
    assert by[("pgd", "mlp-attn", False)]["excess_over_noise"] is None
    assert by[("fgsm", "relu", True)]["excess_over_noise"] is None
    assert {r["attack"] for r in out["ratios"]} == {"pgd"}  # noise has no mlp-attn rows here
    assert json.dumps(out, allow_nan=False)


def test_noise_rows_are_not_chunked_into_repeats():
    """attack_rows chunks gradient attacks for memory; the model-free noise gets one call, so the seeded
    signs of row i and row i + chunk differ (each chunk would otherwise restart the generator)."""
    from types import SimpleNamespace

    import torch

    from malleability.empirics.attacks.noise import Noise
    from malleability.empirics.experiments.flip_rate import attack_rows

    model = SimpleNamespace(net=SimpleNamespace(W=torch.zeros(1, dtype=torch.float64)))
    rows = torch.full((8, 50), 0.5, dtype=torch.float64)
    out = attack_rows(model, Noise(eps=0.1, seed=0), rows, torch.zeros(8, dtype=torch.long), "pixel", chunk=4)
    torch.testing.assert_close(out, Noise(eps=0.1, seed=0)(None, rows, torch.zeros(8, dtype=torch.long)))
    assert not torch.equal(out[:4], out[4:])


def test_ratio_undefined_when_relu_never_flips():
    r = ratio_with_interval({0: 0.2, 1: 0.3}, {0: 0.0, 1: 0.0})
    assert r["ratio"] is None and "undefined" in r["reason"]
    assert ratio_with_interval({0: 0.2}, {1: 0.1})["reason"] == "no seed has both"
    assert ratio_with_interval({0: 0.2, 1: 0.4}, {0: 0.1, 1: 0.1}) == ratio_with_interval({0: 0.2, 1: 0.4}, {0: 0.1, 1: 0.1})


# ---------------------------------------------------------------------------------------------
# cells on real MNIST (scaled down)


def tiny(data_root, model="relu", dataset="mnist", **kw):
    data_kw = {k: kw.pop(k) for k in ("classes",) if k in kw}
    attack = kw.pop("attack", "pgd")
    return FlipRateConfig(
        data=DataConfig(dataset=dataset, n=60, n_test=20, seed=1, data_root=str(data_root), **data_kw),
        train=TrainConfig(epochs=kw.pop("epochs", 2), seed=1),
        model=model, width=16, attack=attack, attack_options={"steps": 5} if attack in ("pgd", "mim") else {}, **kw,
    )


@pytest.mark.parametrize("model", ["relu", "mlp-attn"])
@pytest.mark.parametrize("recompute", ["kernel", "retrain"])
def test_zero_budget_changes_nothing(data_root, model, recompute):
    """eps = 0: the data are unchanged, so (kernel or same-seed retrain) the influences are identical."""
    row = run_flip_rate_cell(tiny(data_root, model, eps=0.0, recompute=recompute, attack="fgsm"))
    assert row["flip_rate"] == 0.0
    assert row["spearman"] == pytest.approx(1.0)
    assert row["topk_overlap"] == 1.0


def test_cell_is_a_pure_function_of_its_config(data_root):
    cfg = tiny(data_root, "mlp-attn", attack="mim", eps=0.3)
    a, b = run_flip_rate_cell(cfg), run_flip_rate_cell(cfg)
    for key in ("flip_rate", "spearman", "topk_overlap", "influence", "accuracy"):
        assert a[key] == b[key]
    assert a["n_flip_set"] == 6 and a["n_attacked"] == 6
    assert a["attack_params"]["attack"] == "mim" and a["attack_params"]["decay"] == 1.0
    assert FlipRateConfig.from_json(cfg.to_json()) == cfg
    acc = a["accuracy"]
    assert set(acc) >= {"train", "test", "krr_test", "chance", "learned"} and isinstance(acc["learned"], bool)
    assert 0 <= acc["test"] <= 1 and 0 <= acc["krr_test"] <= 1 and acc["chance"] >= 0.1
    assert a["weight_change"] > 0 and 0 <= a["pattern_flip_share"] <= 1
    assert json.dumps(a, allow_nan=False)


@pytest.mark.parametrize(
    "kw",
    [
        {"intervention": "curated"},
        {"intervention": "curated", "curated_flip_set": "remaining", "recompute": "kernel"},
        {"intervention": "adversarial", "attack": "fgsm", "space": "feature", "eps": 0.05},
        {"adv_train": True, "adv_train_steps": 2, "attention_c": "fixed"},
        {"classes": (3, 8), "attack": "fgsm", "ntk_at": "init"},
    ],
)
def test_interventions_and_readings(data_root, kw):
    model = "mlp-attn" if kw.get("attention_c") else "relu"
    row = run_flip_rate_cell(tiny(data_root, model, **kw))
    assert 0.0 <= row["flip_rate"] <= 1.0 and 0.0 <= row["topk_overlap"] <= 1.0
    assert row["spearman"] is None or -1.0 <= row["spearman"] <= 1.0
    if kw.get("intervention") == "curated":
        assert row["n_train_after"] == 54 and row["n_attacked"] == 0
        assert row["n_flip_set"] == (6 if kw.get("curated_flip_set", "next") == "next" else 54)
    if kw.get("intervention") == "adversarial":
        assert row["n_attacked"] == 60
    if "classes" in kw:
        assert row["num_classes"] == 2 and row["readings"]["krr_targets"] == "pm1 (binary)"


def test_fashion_mnist_cell(data_root):
    row = run_flip_rate_cell(tiny(data_root, "mlp-attn", dataset="fashion-mnist", attack="fgsm"))
    assert row["dataset"] == "fashion-mnist" and 0.0 <= row["flip_rate"] <= 1.0


def test_cli_flip_rate_on_real_mnist(data_root):
    args = ["flip-rate", "--dataset", "mnist", "--n", "60", "--n-test", "20", "--attack", "pgd", "--eps", "0.3",
            "--seeds", "2", "--epochs", "2", "--width", "16", "--data-root", str(data_root), "--device", "cpu",
            "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["rows"]) == 4
    for row in doc["rows"]:
        assert row["model"] in ("mlp-attn", "relu") and row["dataset"] == "mnist" and row["attack"] == "pgd"
        assert row["eps"] == 0.3 and row["seed"] in (0, 1)
        for key in ("flip_rate", "spearman", "topk_overlap"):
            assert key in row
    assert len(doc["summary"]["cells"]) == 2 and len(doc["summary"]["ratios"]) == 1


def test_cli_flip_rate_noise_control(data_root):
    """--attack noise runs like any attack; beside fgsm the summary carries fgsm's excess over noise."""
    base = ["flip-rate", "--dataset", "mnist", "--n", "60", "--n-test", "20", "--eps", "0.3", "--seeds", "2",
            "--epochs", "2", "--width", "16", "--data-root", str(data_root), "--device", "cpu"]
    res = CliRunner().invoke(main, [*base, "--attack", "noise", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["rows"]) == 4 and {r["attack"] for r in doc["rows"]} == {"noise"}
    for row in doc["rows"]:
        assert 0.0 <= row["flip_rate"] <= 1.0 and row["attack_params"]["attack"] == "noise"
        assert row["n_attacked"] == 6  # tau = 0.1 of n = 60: the same rows an attack would replace
    assert len(doc["summary"]["cells"]) == 2 and len(doc["summary"]["ratios"]) == 1
    assert all(c["excess_over_noise"] is None for c in doc["summary"]["cells"])
    again = json.loads(CliRunner().invoke(main, [*base, "--attack", "noise", "--json", "--fresh"]).stdout)
    assert [r["flip_rate"] for r in again["rows"]] == [r["flip_rate"] for r in doc["rows"]]  # seeded, recomputed

    res = CliRunner().invoke(main, [*base, "--attack", "fgsm,noise", "--seeds", "1", "--json"])
    assert res.exit_code == 0, res.output
    doc2 = json.loads(res.stdout)
    by = {(c["attack"], c["model"]): c for c in doc2["summary"]["cells"]}
    noise_rows = {r["model"]: r["flip_rate"] for r in doc2["rows"] if r["attack"] == "noise"}
    assert {r["model"]: r["flip_rate"] for r in doc["rows"] if r["seed"] == 0} == noise_rows
    for model in ("relu", "mlp-attn"):
        ex = by[("fgsm", model)]["excess_over_noise"]
        assert ex["mean"] == pytest.approx(by[("fgsm", model)]["flip_rate"]["mean"] - noise_rows[model])
    res = CliRunner().invoke(main, [*base, "--attack", "fgsm,noise", "--seeds", "1"])  # the table output
    assert res.exit_code == 0 and "- noise" in res.stdout and " pt" in res.stdout


def test_cli_flip_rate_eps_list(data_root):
    """--eps 0.1,0.3: one row per eps x attack x model x seed, each carrying its eps; the summary is per eps."""
    base = ["flip-rate", "--dataset", "mnist", "--n", "60", "--n-test", "20", "--eps", "0.1,0.3", "--seeds", "1",
            "--epochs", "2", "--width", "16", "--data-root", str(data_root), "--device", "cpu", "--attack", "pgd,noise"]
    res = CliRunner().invoke(main, [*base, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["rows"]) == 8
    assert sorted({(r["eps"], r["attack"], r["model"]) for r in doc["rows"]}) == sorted(
        (e, a, m) for e in (0.1, 0.3) for a in ("pgd", "noise") for m in ("mlp-attn", "relu"))
    cells = doc["summary"]["cells"]
    assert len(cells) == 8 and {c["eps"] for c in cells} == {0.1, 0.3}
    assert {(r["eps"], r["attack"]) for r in doc["summary"]["ratios"]} == {(e, a) for e in (0.1, 0.3) for a in ("pgd", "noise")}
    for c in cells:  # the noise excess pairs pgd with the noise of the same eps
        if c["attack"] == "pgd":
            noise = next(r["flip_rate"] for r in doc["rows"]
                         if (r["attack"], r["eps"], r["model"]) == ("noise", c["eps"], c["model"]))
            assert c["excess_over_noise"]["mean"] == pytest.approx(c["flip_rate"]["mean"] - noise)
    single = json.loads(CliRunner().invoke(main, [*base[:-2], "--attack", "pgd", "--eps", "0.3", "--json"]).stdout)
    assert [r["flip_rate"] for r in single["rows"]] == [
        r["flip_rate"] for r in doc["rows"] if r["eps"] == 0.3 and r["attack"] == "pgd"]  # same cells as a single eps
    res = CliRunner().invoke(main, base)  # the table output shows each row's eps
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "eps=0.1,0.3" in lines[0] and " eps " in lines[1]
    assert any(line.split()[:2] == ["pgd", "0.1"] for line in lines) and any(line.split()[:2] == ["noise", "0.3"] for line in lines)
    assert "mlp-attn / relu pgd eps=0.1:" in res.stdout


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--attack", "pgd", "--eps", "0.1,x"], "--eps"),
        (["--attack", "pgd", "--eps", "0.1,-0.2"], "--eps"),
        (["--attack", "pgd", "--eps", "0.1,nan"], "--eps"),
        (["--attack", "pgd", "--eps", "inf"], "--eps"),
        (["--attack", "pgd", "--eps", ","], "--eps"),
        (["--attack", "cw"], "unknown attack"),
        (["--attack", "pgd,cw"], "unknown attack"),
        (["--attack", "pgd", "--eps", "-0.1"], "eps"),
        (["--attack", "pgd", "--tau", "0"], "tau"),
        (["--attack", "pgd", "--tau", "1.5"], "tau"),
        (["--attack", "pgd", "--classes", "3,12"], "out of range"),
        (["--attack", "pgd", "--intervention", "erase"], "intervention"),
        (["--attack", "pgd", "--seeds", "x"], "seeds"),
        (["--attack", "pgd", "--models", "cnn"], "unknown model"),
        (["--attack", "pgd", "--space", "latent"], "space"),
        (["--attack", "pgd", "--models", "relu", "--baseline", "mlp-attn"], "--baseline mlp-attn is not among"),
    ],
)
def test_cli_bad_inputs_exit_2_with_one_line(data_root, extra, match):
    res = CliRunner().invoke(main, ["flip-rate", "--dataset", "mnist", "--data-root", str(data_root), *extra])
    assert res.exit_code == 2
    assert match in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_config_validation():
    data = DataConfig("mnist")
    with pytest.raises(MalleabilityError, match="recompute"):
        FlipRateConfig(data=data, recompute="never")
    with pytest.raises(MalleabilityError, match="lam"):
        FlipRateConfig(data=data, lam=0.0)
    with pytest.raises(MalleabilityError, match="eps"):
        FlipRateConfig(data=data, eps=float("inf"))
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("4,1") == [4, 1]
    with pytest.raises(MalleabilityError):
        parse_seeds("0")


def test_cli_bench_influence_small():
    res = CliRunner().invoke(main, ["bench", "influence", "--n", "40", "--n-test", "5", "--repeats", "1", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["max_rel_diff"] <= 1e-8 and doc["speedup"] > 0


def test_summary_never_pools_different_readings():
    rows = [_row("relu", 0, 0.1), _row("relu", 1, 0.3)]
    rows[1]["readings"] = {"space": "pixel", "recompute": "kernel", "ntk_at": "trained"}
    cells = summarise_flip_rates(rows)["cells"]
    assert len(cells) == 2 and all(c["flip_rate"]["n"] == 1 for c in cells)


def test_flip_set_edge_closed_form():
    scores = np.array([4.0, 1.0, 3.0, 2.0])
    edge = flip_set_edge(scores, 2)  # cut at 3, next 2
    assert edge["cut"] == 3.0 and edge["next"] == 2.0 and edge["gap_relative"] == pytest.approx(1 / 3)
    assert not edge["decided_by_rounding"] and edge["near_cut"] == 1 and edge["rtol"] == EDGE_TIE_RTOL
    last = flip_set_edge(scores, 4)  # the flip set is everything: no edge to cross
    assert last["next"] is None and last["gap_relative"] is None and not last["decided_by_rounding"]


def test_flip_set_edge_flags_a_tie_within_rounding_and_nothing_wider():
    """The reference's case: the 60th and 61st |influence| a relative 4e-12 apart."""
    cut = 0.008958360937740873
    scores = np.concatenate([np.linspace(1.0, 0.5, 59), [cut, cut * (1 - 4e-12)], np.linspace(0.004, 0.0, 539)])
    edge = flip_set_edge(scores, 60)
    assert edge["decided_by_rounding"] and edge["near_cut"] == 2
    assert edge["gap_relative"] == pytest.approx(4e-12, rel=1e-3)
    # a gap twice the tolerance is not a tie; a tolerance above that gap counts it
    wide = scores.copy()
    wide[60] = cut * (1 - 2 * EDGE_TIE_RTOL)
    assert not flip_set_edge(wide, 60)["decided_by_rounding"]
    assert flip_set_edge(wide, 60, rtol=3 * EDGE_TIE_RTOL)["decided_by_rounding"]
    assert flip_set_edge(np.array([1.0, 1.0, 0.5]), 1)["gap_relative"] == 0.0  # an exact tie


@pytest.mark.parametrize("bad, match", [(dict(k=0), "k must"), (dict(k=5), "k must"), (dict(rtol=-1.0), "rtol"),
                                        (dict(scores=[1.0, np.nan]), "finite"), (dict(scores=[1.0, -1.0]), "non-negative")])
def test_flip_set_edge_refuses_bad_input(bad, match):
    args = {"scores": [3.0, 2.0, 1.0], "k": 1, **bad}
    rtol = args.pop("rtol", EDGE_TIE_RTOL)
    with pytest.raises(MalleabilityError, match=match):
        flip_set_edge(np.asarray(args["scores"]), args["k"], rtol=rtol)


def test_cell_records_its_flip_set_edge_and_the_summary_counts_ties(data_root):
    row = run_flip_rate_cell(tiny(data_root, "relu", attack="fgsm", epochs=3))
    edge = row["flip_set_edge"]
    assert edge["k"] == row["n_flip_set"] and edge["cut"] >= edge["next"] >= 0
    tied = {**row, "seed": 1, "flip_set_edge": {**edge, "decided_by_rounding": True}}
    cell = summarise_flip_rates([row, tied], baseline="relu")["cells"][0]
    assert cell["edge_by_rounding"] == {"seeds": [1], "recorded": 2, "rtol": EDGE_TIE_RTOL}
    old = {k: v for k, v in row.items() if k != "flip_set_edge"}  # a cell from before the edge was recorded
    assert summarise_flip_rates([old], baseline="relu")["cells"][0]["edge_by_rounding"] is None


def test_numerical_floor_is_measured_and_small(data_root):
    row = run_flip_rate_cell(tiny(data_root, "relu", attack="fgsm", null_eps=1e-6, epochs=3))
    floor = row["numerical_floor"]
    assert floor["null_eps"] == 1e-6 and floor["n_flip_set"] == row["n_flip_set"]
    assert 0.0 <= floor["flip_rate"] <= row["flip_rate"] + 0.5


def test_centred_attention_learns_mnist_well_above_chance(data_root):
    """Raw attention input makes every MLP-Attn feature nearly the same vector; centring fixes that."""
    cfg = FlipRateConfig(data=DataConfig("mnist", n=300, n_test=100, seed=0, data_root=str(data_root)),
                         train=TrainConfig(epochs=15, seed=0), model="mlp-attn",
                         model_options={"attention_input": "center"}, attack="noise", width=64)
    acc = run_flip_rate_cell(cfg)["accuracy"]
    assert acc["learned"] and acc["test"] >= 0.5, acc


def test_gate_marks_a_network_that_did_not_learn():
    rows = [_row("relu", s, 0.3, learned=False) for s in range(2)] + [_row("mlp-attn", s, 0.3) for s in range(2)]
    by = {c["model"]: c for c in summarise_flip_rates(rows)["cells"]}
    assert by["relu"]["accuracy"]["learned"] is False and by["relu"]["accuracy"]["learned_seeds"] == 0
    assert by["mlp-attn"]["accuracy"]["learned"] is True


def test_cli_attack_options_come_from_the_attack_dataclass(data_root):
    res = CliRunner().invoke(main, ["flip-rate", "--help"])
    assert "--pgd-steps" in res.output and "--mim-decay" in res.output and "--pgd-random-start" in res.output
    base = ["flip-rate", "--dataset", "mnist", "--data-root", str(data_root), "--attack", "pgd"]
    res = CliRunner().invoke(main, [*base, "--pgd-steps", "0"])
    assert res.exit_code == 2 and "--pgd-steps" in res.stderr
    with pytest.raises(MalleabilityError, match="no option"):
        FlipRateConfig(data=DataConfig("mnist"), attack="fgsm", attack_options={"steps": 3})


def _brute_topk_overlap(b, a, k) -> Fraction:
    def top(v):  # the k largest |v|, ties by index
        return set(sorted(range(len(v)), key=lambda i: (-abs(v[i]), i))[:k])
    return Fraction(len(top(b) & top(a)), k)


@pytest.mark.parametrize("seed", range(20))
def test_topk_overlap_equals_brute_force_and_is_symmetric(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    b, a = rng.normal(size=n), rng.normal(size=n)
    for k in range(1, n + 1):
        assert topk_overlap(b, a, k) == float(_brute_topk_overlap(b, a, k))
        assert topk_overlap(b, a, k) == topk_overlap(a, b, k)
    assert topk_overlap(np.array([4.0, 3, 2, 1]), np.array([1.0, 2, 3, 4]), 2) == 0.0  # disjoint top pairs


def test_rate_summary_pools_exact_counts_and_refuses_impossible_rates():
    from malleability.stats import correlation_interval, mean_interval, rate_summary

    out = rate_summary([0.25, 0.5], [20, 10])
    assert (out["successes"], out["trials"]) == (10, 30) and out["mean"] == pytest.approx(0.375)
    lo, hi = out["ci95"]
    assert 0 <= lo < 10 / 30 < hi <= 1
    # 2.0 of 20 and 0.0 of 40 pool to 40 of 60, a possible count: one seed's impossible rate is still refused
    with pytest.raises(ValueError, match="above the quantity's range"):
        rate_summary([2.0, 0.0], [20, 40])
    with pytest.raises(ValueError, match="below the quantity's range"):
        mean_interval([0.5, -0.1], lower=0.0, upper=1.0)
    with pytest.raises(ValueError, match="above the quantity's range"):
        correlation_interval([0.5, 1.5])  # a correlation lies in [-1, 1]
    ok = mean_interval([1.0 + 1e-15, 0.5], lower=0.0, upper=1.0)  # rounding past the bound is not an error
    assert ok["ci95"][1] <= 1.0 and mean_interval([-3.0, 7.0])["mean"] == 2.0  # an unbounded quantity
    with pytest.raises(ValueError, match="not a count"):
        rate_summary([0.33], [20])


def test_sweep_refuses_options_for_an_attack_it_does_not_run():
    from malleability.empirics.data import DataConfig
    from malleability.empirics.experiments.flip_rate import sweep
    from malleability.empirics.training import TrainConfig
    from malleability.errors import MalleabilityError

    data, train = DataConfig("mnist", n=20, n_test=10), TrainConfig(epochs=1)
    with pytest.raises(MalleabilityError, match="attack options for pgd"):
        sweep(data, train, models=["relu"], attacks=["fgsm"], eps_list=[0.1], seeds=[0],
              attack_options={"pgd": {"steps": 5}})
    assert len(sweep(data, train, models=["relu"], attacks=["pgd"], eps_list=[0.1], seeds=[0],
                     attack_options={"pgd": {"steps": 5}})) == 1


@pytest.mark.parametrize("scale", [1e-200, 1e-40])
def test_pixels_below_the_training_dtype_range_are_refused_not_reported_as_no_flips(tmp_path, scale):
    # in float32 these rows cast to (nearly) zero: the pixel attack would change nothing and report 0 flips
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=rng.random((40, 16)) * scale, y=np.arange(40) % 2)
    res = CliRunner().invoke(main, ["flip-rate", "--dataset", str(path), "--n", "20", "--n-test", "10", "--epochs", "1",
                                    "--width", "8", "--models", "relu", "--baseline", "relu", "--seeds", "1",
                                    "--attack", "fgsm", "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()[-1:]
    assert "underflow float32" in line and "--dtype float64" in line
