"""Options outside the range where their run means what it says are refused in one line (exit 2)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from malleability.reports.cli import main

FLIP = ["flip-rate", "--dataset", "mnist", "--attack", "fgsm"]


@pytest.mark.parametrize("args, message", [
    ([*FLIP, "--lam", "1e308"], "lam must be a number in (0, 1e+06]"),
    ([*FLIP, "--lam", "0"], "lam must be a number in (0, 1e+06]"),
    ([*FLIP, "--null-eps", "1e308"], "null_eps must be below eps = 0.3"),
    ([*FLIP, "--eps", "0.1", "--null-eps", "0.1"], "null_eps must be below eps = 0.1"),
    (["bench", "training", "--widths", "4", "--n", "4", "--d", "4", "--batch-size", "100"], "--batch-size 100 exceeds --n 4"),
    (["audit", "--scale", "tiny", "--dry-run", "--override", "flip.n=1"], "flip.n must be >= 2"),
    (["audit", "--scale", "tiny", "--dry-run", "--override", "flip.n_test=0"], "flip.n_test must be >= 1"),
    (["audit", "--scale", "tiny", "--dry-run", "--override", "ntk.n_test=0"], "ntk.n_test must be >= 1"),
    # 10^5 seeds would plan about 10^7 cells for minutes before the first line: the CLIs' seed cap, at once
    (["audit", "--scale", "tiny", "--dry-run", "--override", "flip.seeds=100000"], "flip.seeds must be at most 10000"),
    (["audit", "--scale", "tiny", "--dry-run", "--override", "ntk.seeds=10001"], "ntk.seeds must be at most 10000"),
    ([*FLIP, "--seeds", "10001"], "--seeds must be >= 1 and a count at most 10000"),
    # rank(C) <= n: a larger rank is MLP-Attn under another name, refused before any data is read
    ([*FLIP, "--models", "truncated-attn", "--rank", "31", "--n", "30"], "rank 31 exceeds the n = 30 training rows"),
    (["ntk-distance", "--dataset", "mnist", "--widths", "8", "--models", "truncated-attn", "--rank", "31", "--n", "30"],
     "rank 31 exceeds the n = 30 training rows"),
    (["widths", "--dataset", "mnist", "--models", "truncated-attn", "--rank", "31", "--n", "30"],
     "rank 31 exceeds the n = 30 training rows"),
    (["audit", "--scale", "quick", "--dry-run", "--override", "truncation_ranks=1,64", "--override", "ntk.n=50"],
     "rank 64 exceeds the n = 50 training rows"),
    (["k-layer", "--dps-margin", "100000"], "--dps-margin must be in 10..200"),
    (["k-layer", "--ks", "1,61"], "--ks values must be <= 60, got 1,61"),
    # the data alone is ~580 GiB: refused in one line, not an allocator failure (exit 1)
    (["bench", "training", "--n", "100000000"], "bench training at n = 100000000"),
    (["bench", "training", "--widths", "1000000000"], "lower --n, --d, --widths or --seeds"),
    (["bench", "ntk", "--model", "qkv-attn", "--d-k", "1000000000"], "lower --n, --d, --m or --d-k"),
    # the projections alone (3 d × d_k, with gradients and Adam moments) are ~70000 GiB: refused before any
    # allocation, naming the model, instead of an allocator failure after the data is loaded
    ([*FLIP, "--models", "qkv-attn", "--d-k", "1000000000"], "qkv-attn's own state"),
    (["ntk-distance", "--dataset", "mnist", "--widths", "8", "--models", "qkv-attn", "--d-k", "1000000000"],
     "qkv-attn's own state"),
])
def test_an_option_out_of_range_is_one_line(args, message):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line


def test_the_edge_of_each_scale_range_is_accepted():
    args = ["audit", "--scale", "tiny", "--dry-run", "--override", "flip.n=2", "--override", "flip.n_test=1",
            "--override", "ntk.seeds=10000"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output


def test_the_config_checks_the_bounds_it_documents():
    from malleability.empirics.data import DataConfig
    from malleability.empirics.experiments.flip_rate import FlipRateConfig
    from malleability.errors import MalleabilityError

    data = DataConfig("mnist")
    FlipRateConfig(data=data, lam=1e6, eps=0.3, null_eps=0.29)  # both at the edge of their range
    with pytest.raises(MalleabilityError, match="lam"):
        FlipRateConfig(data=data, lam=1.0000001e6)
    with pytest.raises(MalleabilityError, match="null_eps must be below"):
        FlipRateConfig(data=data, eps=0.0, null_eps=1.0)


def test_minus_zero_is_zero():
    # '-0' would print as -0 and key a cell apart from '0' for the same run
    import math

    from malleability.reports.cli_common import parse_eps

    (value,) = parse_eps("-0")
    assert value == 0 and math.copysign(1.0, value) == 1.0


def test_places_that_cannot_be_what_they_are_given_for(tmp_path, monkeypatch):
    cache = tmp_path / "cells"
    for out in (cache, cache / "report"):  # the report among the cache's kind folders
        res = CliRunner().invoke(main, ["audit", "--scale", "tiny", "--out", str(out), "--cache-dir", str(cache)])
        assert res.exit_code == 2 and "is inside the cell cache" in res.stderr, res.output
    res = CliRunner().invoke(main, ["compare", str(tmp_path), str(tmp_path) + "/"])
    assert res.exit_code == 2 and "are the same folder" in res.stderr, res.output
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "nonsense")
    res = CliRunner().invoke(main, ["audit", "--scale", "tiny", "--dry-run", "--executor", "dask"])
    assert res.exit_code == 2 and res.stderr.startswith("error: DASK_SCHEDULER_ADDRESS 'nonsense'"), res.output


def test_a_truncation_rank_of_exactly_n_is_accepted():
    from malleability.empirics.models import check_models

    check_models(["truncated-attn"], {"truncated-attn": {"rank": 30}}, 784, 30)  # the edge: rank(C) can be n
    check_models(["truncated-attn"], {"truncated-attn": {"rank": None}}, 784, 2)


def test_a_dry_run_beyond_the_fitted_depth_says_its_estimate_may_be_low():
    res = CliRunner().invoke(main, ["audit", "--scale", "tiny", "--dry-run", "--override", "k_layer.ks=1,6"])
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith("note: the cost model's k-layer cells stack k <= 4 layers; measured to k = 6")
    plain = CliRunner().invoke(main, ["audit", "--scale", "tiny", "--dry-run"])
    assert plain.exit_code == 0 and "note:" not in plain.stderr
