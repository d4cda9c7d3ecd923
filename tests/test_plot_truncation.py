"""The truncation plot: which cells it draws at each rank, and that full rank is MLP-Attn's own cells."""

from __future__ import annotations

import pytest

from malleability.reports.report import plots

pytest.importorskip("matplotlib")


def _stat(mean, ci=None):
    return {"mean": mean, "ci95": list(ci) if ci else [max(0.0, mean - 0.05), min(1.0, mean + 0.05)]}


def _cell(model, flip, test, *, attack="pgd", eps=0.3, adv_train=False, protocol="paper"):
    return {"model": model, "attack": attack, "eps": eps, "adv_train": adv_train,
            "readings": f"space=pixel;recompute=retrain;ntk_at=trained;protocol={protocol}",
            "flip_rate": _stat(flip), "accuracy": {"test": _stat(test), "chance": 0.1}}


def _results(cells):
    return {"scale": {"flip": {"eps": 0.3}}, "labels": {}, "summary": {"flip": {"mnist": {"cells": cells}}}}


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """Draw the plot and return {legend label: (xs, ys)} of its one panel."""
    def run(results):
        figs = []
        monkeypatch.setattr(plots, "_save", lambda plt, fig, path: figs.append(fig) or True)
        assert plots.plot_truncation(results, tmp_path / "t.png")
        (ax,) = figs[0].axes
        out = {c.get_label(): tuple(map(list, c.lines[0].get_data())) for c in ax.containers}
        out.update({ln.get_label(): tuple(map(list, ln.get_data())) for ln in ax.get_lines()
                    if not ln.get_label().startswith("_")})
        return out
    return run


def test_full_rank_is_drawn_from_mlp_attn_cells_of_the_same_input(drawn):
    cells = [_cell("truncated-attn[rank=2]", 0.1, 0.5), _cell("truncated-attn[rank=10]", 0.2, 0.6),
             _cell("truncated-attn[attention_input=center,rank=2]", 0.15, 0.7),
             _cell("mlp-attn", 0.4, 0.8), _cell("mlp-attn[attention_input=center]", 0.45, 0.9),
             # none of these may be drawn: another attack, budget, adversarial training, protocol, model
             _cell("mlp-attn", 0.99, 0.99, attack="fgsm"), _cell("mlp-attn", 0.98, 0.98, eps=0.1),
             _cell("mlp-attn", 0.97, 0.97, adv_train=True), _cell("mlp-attn", 0.96, 0.96, protocol="lazy"),
             _cell("relu", 0.95, 0.95), _cell("truncated-attn[rank=5]", 0.94, 0.94, attack="fgsm")]
    lines = drawn(_results(cells))
    full = 10 * 4  # full rank sits to the right of the largest rank
    assert lines["PGD flip rate, raw input (Wilson 95%)"] == ([2, 10, full], [0.1, 0.2, 0.4])
    assert lines["test accuracy, raw input"] == ([2, 10, full], [0.5, 0.6, 0.8])
    assert lines["PGD flip rate, center input (Wilson 95%)"] == ([2, full], [0.15, 0.45])
    assert lines["test accuracy, center input"] == ([2, full], [0.7, 0.9])


def test_results_with_their_own_full_rank_cells_are_not_doubled(drawn):
    cells = [_cell("truncated-attn[rank=2]", 0.1, 0.5), _cell("truncated-attn[rank=None]", 0.3, 0.7),
             _cell("mlp-attn", 0.4, 0.8)]
    lines = drawn(_results(cells))
    assert lines["PGD flip rate, raw input (Wilson 95%)"] == ([2, 8], [0.1, 0.3])


def test_no_truncated_cells_draws_nothing(tmp_path):
    assert plots.plot_truncation(_results([_cell("mlp-attn", 0.4, 0.8)]), tmp_path / "t.png") is False
    assert not (tmp_path / "t.png").exists()
