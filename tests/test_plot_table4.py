"""The Table 4 panel of the flip plot: each bar is hatched exactly when its own networks did not learn."""

from __future__ import annotations

import pytest

from malleability.reports.report import plots

pytest.importorskip("matplotlib")

READINGS = "space=pixel;recompute=retrain;ntk_at=trained;protocol=paper"


def _stat(mean):
    return {"mean": mean, "ci95": [max(0.0, mean - 0.05), min(1.0, mean + 0.05)]}


def _cell(model, flip, learned, *, adv_train=False):
    return {"model": model, "attack": "pgd", "eps": 0.3, "adv_train": adv_train, "readings": READINGS,
            "flip_rate": _stat(flip), "accuracy": {"test": _stat(0.5), "chance": 0.1, "learned": learned}}


def _ablation(model, standard, adversarial):
    return {"model": model, "attack": "pgd", "eps": 0.3, "readings": READINGS, "adv_train": False,
            "standard": _stat(standard), "adversarial_training": _stat(adversarial)}


def _bottom_panel(monkeypatch, tmp_path, cells, ablation):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda plt, fig, path: figs.append(fig) or True)
    results = {"scale": {"flip": {"eps": 0.3}}, "labels": {}, "paper_numbers": [],
               "summary": {"flip": {"mnist": {"cells": cells, "ablation": ablation}}}}
    assert plots.plot_flip(results, tmp_path / "f.png")
    return figs[0].axes[-1]


def test_table4_bars_are_hatched_by_their_own_cells(monkeypatch, tmp_path):
    cells = [_cell("mlp-attn", 0.2, True), _cell("mlp-attn", 0.08, False, adv_train=True),
             _cell("relu", 0.3, False), _cell("relu", 0.35, True, adv_train=True)]
    ablation = [_ablation("mlp-attn", 0.2, 0.08), _ablation("relu", 0.3, 0.35)]
    ax = _bottom_panel(monkeypatch, tmp_path, cells, ablation)
    bars = sorted(ax.patches, key=lambda p: p.get_x())
    assert [round(b.get_height(), 2) for b in bars] == [0.2, 0.08, 0.3, 0.35]
    assert [bool(b.get_hatch()) for b in bars] == [False, True, True, False]
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert legend == {"standard training", "PGD adversarial training", "did not learn"}
    # legend colours stay plain even though a hatched bar comes first for adversarial training
    assert not any(h.get_hatch() for h in ax.get_legend().legend_handles[:2])


def test_no_did_not_learn_entry_when_every_network_learned(monkeypatch, tmp_path):
    cells = [_cell("mlp-attn", 0.2, True), _cell("mlp-attn", 0.3, True, adv_train=True)]
    ax = _bottom_panel(monkeypatch, tmp_path, cells, [_ablation("mlp-attn", 0.2, 0.3)])
    assert not any(p.get_hatch() for p in ax.patches)
    assert "did not learn" not in {t.get_text() for t in ax.get_legend().get_texts()}
