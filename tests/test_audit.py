"""The audit end to end (tiny scale, real cells), kill -9 and resume, cached reruns, scales and plans, bad options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from malleability.errors import MalleabilityError
from malleability.reports import audit as A
from malleability.reports.cli import main

from _audit_helpers import stable as _stable

TINY = ["--scale", "tiny", "--workers", "1", "--device", "cpu"]



def _cell_results(results: dict) -> dict:
    return {c["key"]: _stable(c["result"]) for c in results["cells"]}


def _audit(tmp: Path, name: str, cache: Path, data_root, *extra) -> dict:
    out = tmp / name
    r = CliRunner().invoke(main, ["audit", *TINY, "--out", str(out), "--cache-dir", str(cache),
                                  "--data-root", str(data_root), *extra])
    assert r.exit_code == 0, r.output
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root):
    """One uninterrupted tiny audit with the real cells (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("audit")
    return tmp, _audit(tmp, "clean", tmp / "cache", data_root)


def test_tiny_audit_end_to_end(uninterrupted):
    tmp, results = uninterrupted
    out = tmp / "clean"
    assert results["schema"] == A.SCHEMA and results["scale"]["name"] == "tiny"
    kinds = {c["kind"] for c in results["cells"]}
    assert kinds == {"theory", "widths", "ntk-distance", "flip-rate", "k-layer"}  # one name per experiment
    for c in results["cells"]:
        assert c["status"] == "computed", (c["label"], c["error"])
        assert c["config"] and c["wall_time_s"] >= 0 and c["key"]
        prov = c["provenance"]
        assert prov["versions"]["torch"] and prov["versions"]["malleability"] and "git_commit" in prov and prov["device"]
    theory = next(c for c in results["cells"] if c["kind"] == "theory")
    assert theory["result"]["id"] == "thm4.1"
    widths = next(c for c in results["cells"] if c["kind"] == "widths")
    assert widths["config"]["data"]["n"] == 40
    rows = results["summary"]["widths"]["rows"]
    assert rows and all(r["kappa_G"] is None or r["kappa_G"] >= 1 for r in rows)
    for c in results["cells"]:
        if c["kind"] == "ntk-distance":
            assert c["result"]["distance"] and c["config"]["width"] in (8, 32)
            assert "learned" in c["result"]["accuracy"]
        if c["kind"] == "flip-rate":
            assert 0.0 <= c["result"]["flip_rate"] <= 1.0 and "learned" in c["result"]["accuracy"]
    k_layer = [c for c in results["cells"] if c["kind"] == "k-layer"]
    assert [c["tags"]["n"] for c in k_layer] == [8, 30] and all(len(c["result"]["rows"]) == 16 for c in k_layer)
    assert results["summary"]["k_layer"]["follows"]["iic"] == ["2k+1"]  # real MNIST rows, k = 1, 2
    flip_attacks = {c["tags"]["attack"] for c in results["cells"] if c["kind"] == "flip-rate"}
    assert flip_attacks == {"fgsm", "noise"}  # the noise control runs beside the attacks, even at tiny
    fgsm = [c for c in results["summary"]["flip"]["mnist"]["cells"] if c["attack"] == "fgsm"]
    assert fgsm and all(c["excess_over_noise"] is not None for c in fgsm)
    claims = [v["claim"] for v in results["verdicts"]]
    assert claims[0] == "thm4.1" and "headline-6-9x" in claims and "table4" in claims and "k-layer-real-data" in claims
    assert all(v["verdict"] in results["outcomes"] for v in results["verdicts"])
    assert (out / "report.md").stat().st_size > 0 and (out / "report.html").stat().st_size > 0
    assert not (out / ".cache").exists()  # the cache lives outside the report folder


def test_every_interval_of_the_results_is_inside_its_range(uninterrupted):
    _tmp, results = uninterrupted

    def walk(node, path=""):
        if isinstance(node, dict):
            ci = node.get("ci95")
            if ci is not None and node.get("mean") is not None:
                assert ci[0] <= ci[1], path
                if any(k in path for k in ("flip_rate", "topk_overlap", "accuracy", "pattern_flip_share")):
                    assert 0.0 <= ci[0] and ci[1] <= 1.0, path
                if "spearman" in path:
                    assert -1.0 <= ci[0] and ci[1] <= 1.0, path
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for v in node:
                walk(v, path)

    walk(results["summary"])


def test_cached_rerun_recomputes_nothing(uninterrupted, data_root):
    tmp, first = uninterrupted
    again = _audit(tmp, "again", tmp / "cache", data_root)
    assert again["counts"]["computed"] == 0 and again["counts"]["cached"] == len(first["cells"])
    assert _cell_results(again) == _cell_results(first)
    assert [c["result"] for c in again["cells"]] == [c["result"] for c in first["cells"]]  # byte-equal from cache


def test_kill_and_resume_equals_uninterrupted(uninterrupted, data_root, tmp_path):
    """kill -9 a running audit after some cells are cached; the rerun resumes and equals an uninterrupted run."""
    _tmp, clean = uninterrupted
    cache = tmp_path / "cache"
    env = {**os.environ, "MALLEABILITY_AUDIT_TEST_DELAY": "4", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "malleability.reports.cli", "audit", *TINY, "--out", str(tmp_path / "killed"),
           "--cache-dir", str(cache), "--data-root", str(data_root)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not list(cache.glob("*/*.json")):
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    finished = len(list(cache.glob("*/*.json")))
    assert 1 <= finished < len(clean["cells"])
    assert not (tmp_path / "killed" / "results.json").exists()
    resumed = _audit(tmp_path, "killed", cache, data_root)
    assert resumed["counts"]["cached"] == finished
    assert resumed["counts"]["computed"] == len(clean["cells"]) - finished
    assert _cell_results(resumed) == _cell_results(clean)


def test_fresh_recomputes_everything(uninterrupted, data_root):
    tmp, first = uninterrupted
    fresh = _audit(tmp, "fresh", tmp / "cache", data_root, "--fresh", "--override", "theory_claims=", )
    assert fresh["counts"]["cached"] == 0 and fresh["counts"]["computed"] == len(fresh["cells"])
    assert fresh["options"]["overrides"] == ["theory_claims="]
    same = {k: v for k, v in _cell_results(first).items() if k in _cell_results(fresh)}
    assert same == _cell_results(fresh)  # same seed, same config on the CPU: identical numbers


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scale", "huge"], "unknown scale 'huge'"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--override", "nosuch=1"], "unknown scale field 'nosuch'"),
        (["--override", "ntk.n"], "expects field=value"),
        (["--override", "ntk.n=many"], "cannot parse"),
        (["--override", "ntk.tasks=imagenet"], "unknown task 'imagenet'"),
        (["--override", "theory.claims=thm9"], "unknown claim id 'thm9'"),
        (["--override", "flip.eps=-1"], "flip ε must be finite and >= 0"),
        (["--override", "models=cnn"], "unknown model 'cnn'"),
        (["--override", "attention_inputs=whiten"], "unknown attention input"),
        (["--override", "ntk.widths=4,4"], "repeats 4"),
        (["--override", "flip.attacks=fgsm,fgsm"], "repeats 'fgsm'"),
        (["--override", "truncation_ranks=none,full"], "repeats None"),
        (["--workers", "100000"], "4 per core of this machine"),
    ],
)
def test_bad_options_exit_2(tmp_path, args, message):
    r = CliRunner().invoke(main, ["audit", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1


def test_out_must_be_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = CliRunner().invoke(main, ["audit", *TINY, "--out", str(f), "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 2


def test_out_that_cannot_be_created_is_one_line_before_any_cell(tmp_path):
    """A folder under a file cannot exist: the audit stops at once with exit 2, caching nothing."""
    f = tmp_path / "file"
    f.write_text("x")
    r = CliRunner().invoke(main, ["audit", *TINY, "--out", str(f / "sub"), "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [f"error: --out {f / 'sub'} cannot be written: Not a directory"]
    assert not (tmp_path / "c").exists()


def test_scales_are_typed_frozen_nested_and_documented():
    assert A.PUBLIC_SCALES == ("quick", "default", "paper")
    paper = A.get_scale("paper")
    assert paper.ntk.widths == tuple(2**k for k in range(2, 13)) and paper.ntk.epochs == 500
    with pytest.raises(Exception):
        paper.ntk = None  # frozen
    assert all(meta["help"] for meta in A.scale_help().values()) and "ntk.widths" in A.scale_help()
    s = A.get_scale("quick", ["ntk.widths=4,8", "flip.adv_training=false", "widths.eps=0.5"])
    assert s.ntk.widths == (4, 8) and s.flip.adv_training is False and s.widths.eps == 0.5
    legacy = A.get_scale("quick", ["ntk_widths=4,8", "flip_adv_training=false", "width_eps=0.5"])
    assert legacy == s  # the flat names of earlier versions still work
    with pytest.raises(MalleabilityError):
        A.get_scale("quick", ["flip.adv_training=maybe"])


@pytest.mark.parametrize("name", ["quick", "default", "paper"])
def test_every_scale_plans_the_noise_control_beside_each_attack(name):
    scale = A.get_scale(name)
    flips = [c for c in A.plan_cells(scale).cells if c.kind == "flip-rate" and c.tags["protocol"] == "paper"]
    tasks = {("table2", t) for t in scale.flip.tasks_10class} | {("table3", t) for t in scale.flip.tasks_binary}
    for table, task in tasks:
        for model, reading in [("relu", "-")] + [("mlp-attn", r) for r in scale.attention_inputs]:
            for attack in ("fgsm", "pgd", "mim", "noise"):
                cells = [c for c in flips if (c.tags["table"], c.tags["task"], c.tags["model"], c.tags["reading"],
                                              c.tags["attack"], c.tags["adv_train"]) ==
                         (table, task, model, reading, attack, False)]
                assert len(cells) == scale.flip.seeds, (table, task, model, attack)
                assert all(c.config.eps == 0.3 and not c.config.adv_train for c in cells)
    assert not [c for c in flips if c.tags["attack"] == "noise" and c.tags["adv_train"]]  # Table 4 stays PGD


@pytest.mark.parametrize("name", ["tiny", "quick", "default", "paper"])
def test_every_scale_plans_each_cell_once(name):
    from malleability.reports.audit.cache import config_to_jsonable

    scale = A.get_scale(name)
    cells = A.plan_cells(scale).cells
    configs = [json.dumps([c.kind, config_to_jsonable(c.config)], sort_keys=True, default=str) for c in cells]
    assert len(configs) == len(set(configs))  # no cell twice
    sweep = [c for c in cells if c.tags.get("table") == "eps-sweep"]
    for c in sweep:
        assert c.config.eps != scale.flip.eps or c.tags["task"] not in scale.flip.tasks_10class \
            or c.tags["attack"] not in scale.flip.attacks


def test_ntk_and_flip_grids_redraw_the_data_per_seed():
    cells = A.plan_cells(A.get_scale("quick")).cells
    for c in cells:
        if c.kind in ("ntk-distance", "flip-rate"):
            assert c.config.data.seed == c.config.train.seed


def test_lazy_protocol_and_centred_reading_are_planned_at_default():
    cells = A.plan_cells(A.get_scale("default")).cells
    tags = {(c.kind, c.tags.get("protocol"), c.tags.get("reading")) for c in cells}
    assert ("ntk-distance", "lazy", "center") in tags and ("flip-rate", "lazy", "raw") in tags
    assert ("flip-rate", "paper", "center") in tags


def test_missing_data_shows_cells_as_missing_with_why(tmp_path):
    """No data set under --data-root: the theory still runs; every data cell is listed as missing, with the reason."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    r = CliRunner().invoke(main, ["audit", *TINY, "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"),
                                  "--data-root", str(empty)])
    # the report is still written, but a missing data set is a non-zero exit with one error line
    assert r.exit_code == 2, r.output
    assert r.output.count("error: audit incomplete") == 1 and "not found" in r.output.split("error:")[-1]
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    statuses = {c["kind"]: c["status"] for c in results["cells"]}
    assert statuses["theory"] == "computed"
    assert all(s == "failed" for k, s in statuses.items() if k != "theory")
    assert all(m["why"].startswith("failed: ") for m in results["missing"] if m["kind"] != "theory")
    assert (tmp_path / "o" / "report.md").is_file()


def test_default_scale_keeps_the_paper_protocol_and_a_60_point_flip_set():
    s = A.get_scale("default")
    assert s.ntk.epochs == s.flip.epochs == 500
    assert int(0.1 * s.flip.n) >= 60  # τ = 10% of the training set is the flip set


def test_flip_dtype_sets_the_precision_of_the_flip_cells_only_and_the_estimate_follows():
    from malleability.reports.audit.cost_model import AUDIT_OVERHEAD_S, cell_seconds

    def precisions(*over):
        cells = A.plan_cells(A.get_scale("tiny", list(over))).cells
        return ({c.config.train.dtype for c in cells if c.kind == "flip-rate"},
                {c.config.train.dtype for c in cells if c.kind == "ntk-distance"}, cells)

    flip, ntk, cells32 = precisions()
    assert flip == ntk == {"float32"}
    flip, ntk, cells64 = precisions("flip.dtype=float64")
    assert flip == {"float64"} and ntk == {"float32"}
    for a, b in zip(cells32, cells64):
        over = AUDIT_OVERHEAD_S["flip-rate"]
        ratio = (cell_seconds(b) - over) / (cell_seconds(a) - over) if a.kind == "flip-rate" else None
        assert ratio is None or ratio == pytest.approx(1.85)
    assert precisions("dtype=float64", "flip.dtype=none")[0] == {"float64"}  # none: the scale's dtype
    assert A.get_scale("default").flip.dtype == "float64"
    with pytest.raises(MalleabilityError, match="flip.dtype"):
        A.get_scale("tiny", ["flip.dtype=float16"])


def test_limitation_tasks_adv_training_tasks_and_the_lazy_control_restrict_the_plan():
    over = ["limitation_models=softmax-attn", "ntk.tasks=mnist,cifar10", "flip.tasks_10class=mnist,cifar10",
            "flip.adv_training=true", "ntk.protocols=paper,lazy", "flip.protocols=paper,lazy"]
    def tags(*extra):
        cells = A.plan_cells(A.get_scale("tiny", [*over, *extra])).cells
        return {(c.kind, c.tags.get("table"), c.tags.get("task"), c.tags.get("model"), c.tags.get("protocol"))
                for c in cells}
    everywhere = tags()
    for task in ("mnist", "cifar10"):
        assert ("ntk-distance", "table1", task, "softmax-attn", "paper") in everywhere
        assert ("flip-rate", "table2", task, "softmax-attn", "paper") in everywhere
        assert ("flip-rate", "table4", task, "mlp-attn", "paper") in everywhere
    # the lazy protocol is the paper models' control only
    assert not any(t[3] == "softmax-attn" and t[4] == "lazy" for t in everywhere)
    assert ("ntk-distance", "table1", "cifar10", "mlp-attn", "lazy") in everywhere
    narrow = tags("limitation_tasks=mnist", "flip.adv_training_tasks=mnist")
    assert ("flip-rate", "table2", "mnist", "softmax-attn", "paper") in narrow
    assert not any(t[3] == "softmax-attn" and t[2] == "cifar10" for t in narrow)
    assert ("flip-rate", "table4", "mnist", "mlp-attn", "paper") in narrow
    assert not any(t[1] == "table4" and t[2] == "cifar10" for t in narrow)
    assert ("flip-rate", "table2", "cifar10", "mlp-attn", "paper") in narrow  # the paper's models stay everywhere
    with pytest.raises(MalleabilityError, match="limitation_tasks"):
        A.get_scale("tiny", ["limitation_tasks=svhn"])
    assert A.get_scale("tiny", ["limitation_tasks=none"]).limitation_tasks is None


def test_machine_speed_factor_is_the_mean_pace_probe_ratio_clamped_and_scales_the_dry_run(monkeypatch):
    from malleability.reports.audit import cost_model as CM
    from malleability.reports.audit import pace_probe as PP

    ref = CM.REFERENCE_PROBE_SECONDS

    def factor_at(scales):
        monkeypatch.setattr(CM, "_SPEED", {})
        monkeypatch.setattr(PP, "probe_seconds", lambda repeats=3: {k: ref[k] * scales[k] for k in ref})
        return CM.machine_speed_factor()

    same = dict.fromkeys(ref, 1.0)
    assert factor_at(same) == pytest.approx(1.0)
    assert factor_at(dict.fromkeys(ref, 2.0)) == pytest.approx(2.0)  # twice the time: twice the estimate
    # each training counts for a third, whatever its own length
    assert factor_at({"adversarial": 4.0, "cifar": 1.0, "mnist": 1.0}) == pytest.approx(2.0)
    assert factor_at(dict.fromkeys(ref, 1e3)) == CM.SPEED_FACTOR_RANGE[1]
    assert factor_at(dict.fromkeys(ref, 1e-3)) == CM.SPEED_FACTOR_RANGE[0]

    def dry_run_minutes(factor):
        factor_at(dict.fromkeys(ref, factor))
        r = CliRunner().invoke(main, ["audit", "--scale", "quick", "--workers", "2", "--dry-run"])
        assert r.exit_code == 0, r.output
        return float(r.output.split("estimate ")[1].split(" min")[0]), r.output

    one, _ = dry_run_minutes(1.0)
    three, text = dry_run_minutes(3.0)
    assert "x3.00" in text and "pace probe" in text and one > 1 and three == pytest.approx(3 * one, abs=0.2)


def test_pace_probe_times_each_of_its_trainings():
    # the real probe: the three trainings run (adversarial training included) and take measurable time
    from malleability.reports.audit import cost_model as CM
    from malleability.reports.audit.pace_probe import probe_seconds

    seconds = probe_seconds(repeats=1)
    assert set(seconds) == set(CM.REFERENCE_PROBE_SECONDS)
    assert all(0 < v < 60 for v in seconds.values())


def test_report_header_names_the_speed_measure():
    from malleability.reports.report.markdown import Doc
    from malleability.reports.report.sections import header

    base = {"scale": {"name": "tiny", "ntk": {"epochs": 500}, "flip": {"epochs": 500}}, "options": {"device": "cpu", "workers": 2}, "wall_time_s": 60.0,
            "estimate_s": 90.0, "estimate_speed_factor": 1.5, "started_at": "now"}

    def text(r):
        doc = Doc()
        header(doc, r)
        return "\n".join(doc.lines)

    assert "x1.50 for this CPU's pace on the pace probe" in text({**base, "estimate_speed_measure": "pace-probe"})
    assert "x1.50 for this CPU's GEMM rate" in text(base)  # results written before the probe
    assert "scaled" not in text({**base, "estimate_speed_factor": None})


def test_cost_model_prices_gram_polynomial_k_layer_cells_by_n_and_row_length():
    # an unmeasured cell still builds every code's float64 features: its cost grows with n² d
    from malleability.reports.audit.cost_model import cell_seconds

    def seconds(dataset, n, measure_max_n=0):
        over = [f"k_layer.n={n}", f"k_layer.measure_max_n={measure_max_n}", f"k_layer.datasets={dataset}"]
        (cell,) = [c for c in A.plan_cells(A.get_scale("tiny", over)).cells if c.kind == "k-layer"]
        return cell_seconds(cell)

    assert seconds("mnist", 300) > 20 * seconds("mnist", 20)
    assert seconds("cifar10", 300) > 3 * seconds("mnist", 300)
    assert seconds("mnist", 30, measure_max_n=30) > 10 * seconds("mnist", 30)  # the mpmath recursion dominates


def test_cost_model_prices_theory_cells_at_their_profile():
    from malleability.reports.audit.cost_model import cell_seconds
    from malleability.theory.claims import EXPECTED_SECONDS

    def seconds(profile):
        cells = A.plan_cells(A.get_scale("quick", [f"theory.profile={profile}"])).cells
        return {c.config.claim: cell_seconds(c) for c in cells if c.kind == "theory"}

    assert seconds("quick") == {c: EXPECTED_SECONDS["quick"][c] for c in seconds("quick")}
    assert seconds("thorough") == {c: EXPECTED_SECONDS["thorough"][c] for c in seconds("thorough")}
    assert sum(seconds("thorough").values()) > 5 * sum(seconds("quick").values())


def test_cost_model_reads_a_user_npz_row_length_from_its_header(tmp_path):
    """A user's .npz is priced at its own row length (x's trailing dimensions), read without loading x."""
    import dataclasses

    import numpy as np

    from malleability.reports.audit.cost_model import _row_length, cell_seconds

    wide = tmp_path / "wide.npz"
    np.savez(wide, x=np.zeros((6, 32, 32, 3), np.uint8), y=np.arange(6) % 2)
    packed = tmp_path / "packed.npz"
    np.savez_compressed(packed, x=np.zeros((6, 100)), y=np.arange(6) % 2)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    no_x = tmp_path / "no_x.npz"
    np.savez(no_x, y=np.arange(6))
    assert _row_length(str(wide)) == 3072 and _row_length(str(packed)) == 100
    assert _row_length(str(broken)) == _row_length(str(no_x)) == _row_length("mnist") == 784
    assert _row_length("cifar10") == 3072

    over = ["k_layer.datasets=cifar10", "k_layer.n=100", "k_layer.measure_max_n=0"]
    (planned,) = [c for c in A.plan_cells(A.get_scale("tiny", over)).cells if c.kind == "k-layer"]

    def seconds(dataset):  # the k-layer command takes .npz sets; the audit's scales name built-in ones
        config = dataclasses.replace(planned.config, datasets=(dataset,))
        return cell_seconds(dataclasses.replace(planned, config=config))

    assert seconds(str(wide)) == pytest.approx(seconds("cifar10")) and seconds(str(packed)) < seconds("mnist")
