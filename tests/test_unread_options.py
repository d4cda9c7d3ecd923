"""An option that nothing in the run reads is refused in one line (exit 2), never dropped: the run it
was meant to change would otherwise be the same run, and its numbers would claim a reading they lack."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from malleability.reports.cli import main

FLIP = ["flip-rate", "--dataset", "mnist", "--attack", "fgsm"]
BENCH = ["bench", "ntk", "--n", "8", "--d", "4", "--m", "4"]


@pytest.mark.parametrize("args, message", [
    ([*FLIP, "--models", "relu", "--baseline", "relu", "--attention-c", "fixed"], "applies to a transductive model"),
    ([*FLIP, "--adv-train-ramp-epochs", "2"], "--adv-train-ramp-epochs applies to the ramp schedule"),
    ([*FLIP, "--adv-train", "--adv-train-ramp-epochs", "2"], "--adv-train-ramp-epochs applies to the ramp schedule"),
    ([*FLIP, "--adv-train-steps", "3"], "--adv-train-steps applies to adversarial training"),
    ([*BENCH, "--d-k", "8"], "--d-k applies to --model qkv-attn"),
    ([*BENCH, "--model", "qkv-attn", "--dtype", "float32", "--repeats", "2"],
     "--dtype, --repeats applies to --model relu and mlp-attn"),
    ([*BENCH, "--model", "qkv-attn", "--no-neural-tangents"], "--neural-tangents/--no-neural-tangents applies"),
    (["theory", "check", "thm4.1", "thm4.1"], "theory check repeats 'thm4.1'"),
    (["widths", "--dataset", "mnist", "--data-root", ""], "--data-root is empty"),
    (["audit", "--scale", "tiny", "--dry-run", "--data-root", ""], "--data-root is empty"),
    (["widths", "--dataset", "mnist", "--data-root", __file__], "is a file, not a folder of data sets"),
])
def test_an_option_nothing_reads_is_refused_in_one_line(args, message):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line


def test_the_same_options_where_they_are_read_are_taken(tmp_path):
    # the counterpart: each refused flag is accepted by the run that reads it (here, up to the dry parts)
    res = CliRunner().invoke(main, [*BENCH, "--model", "qkv-attn", "--d-k", "4", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["d_k"] == 4
    res = CliRunner().invoke(main, [*BENCH, "--repeats", "1", "--no-neural-tangents", "--json"])
    assert res.exit_code == 0, res.output


def test_widths_refuses_n_test_and_reads_no_test_rows(data_root):
    res = CliRunner().invoke(main, ["widths", "--dataset", "mnist", "--n", "20", "--n-test", "10",
                                    "--data-root", str(data_root)])
    assert res.exit_code == 2 and "--n-test has no effect on widths" in res.stderr, res.output
    res = CliRunner().invoke(main, ["widths", "--dataset", "mnist", "--n", "20", "--models", "truncated-attn",
                                    "--rank", "1", "--data-root", str(data_root), "--json"])
    assert res.exit_code == 0, res.output
    views = json.loads(res.stdout)["per_n"][-1]["views"]
    assert -1.0 <= views["truncated-attn"]["collinearity"]["mean_cosine"] <= 1.0  # rank 1: all rows parallel
