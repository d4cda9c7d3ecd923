"""The CLI and the audit are clients of the same experiment functions: identical cells, identical numbers."""

from __future__ import annotations

import json

from click.testing import CliRunner

from malleability.reports.audit import get_scale, run_audit
from malleability.reports.cli import main


def _strip(cell: dict) -> dict:
    return {k: v for k, v in cell.items() if k not in ("values",)}


def test_flip_rate_and_ntk_distance_grids_agree_between_cli_and_audit(tmp_path, data_root):
    scale = get_scale("tiny", ["flip.seeds=2", "ntk.seeds=2", "widths.tasks=", "flip.eps_sweep="])
    results = run_audit(scale, tmp_path / "out", cache_dir=tmp_path / "cache", workers=1, data_root=str(data_root),
                        render=False, progress=None)
    f, k = scale.flip, scale.ntk
    flip_args = [
        "flip-rate", "--dataset", "mnist", "--n", str(f.n), "--n-test", str(f.n_test), "--attack", ",".join(f.attacks),
        "--eps", str(f.eps), "--seeds", str(f.seeds), "--epochs", str(f.epochs), "--width", str(f.width),
        "--models", "relu,mlp-attn", "--data-root", str(data_root), "--device", "cpu", "--json"]
    res = CliRunner().invoke(main, flip_args)
    assert res.exit_code == 0, res.output
    cli = json.loads(res.stdout)["summary"]
    audit = results["summary"]["flip"]["mnist"]
    assert len(cli["cells"]) == len(audit["cells"]) == 4
    for a, c in zip(audit["cells"], cli["cells"]):
        assert a == c  # means, Wilson intervals, Spearman, top-k, accuracy, excess over noise
    assert audit["ratios"] == cli["ratios"]
    # the command's cells are the audit's: pointed at the audit's cache it computes none
    shared = CliRunner().invoke(main, [*flip_args, "--cache-dir", str(tmp_path / "cache")])
    assert shared.exit_code == 0 and "8 in all, 8 cached, 0 to run" in shared.stderr
    assert json.loads(shared.stdout)["summary"] == json.loads(res.stdout)["summary"]

    res = CliRunner().invoke(main, [
        "ntk-distance", "--dataset", "mnist", "--n", str(k.n), "--n-test", str(k.n_test),
        "--widths", ",".join(map(str, k.widths)), "--seeds", str(k.seeds), "--epochs", str(k.epochs),
        "--models", "relu,mlp-attn", "--data-root", str(data_root), "--json"])
    assert res.exit_code == 0, res.output
    cli = json.loads(res.stdout)["summary"]
    audit = results["summary"]["ntk"]["mnist"]
    assert audit["cells"] and [_strip(c) for c in audit["cells"]] == [_strip(c) for c in cli["cells"]]
    assert audit["slopes"] == cli["slopes"]
