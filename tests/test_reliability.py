"""Faults the audit must survive: other data, damaged cache entries, NaN, a cache or --out that takes no
writes, thread counts, Ctrl-C to the parent alone, and usage errors (one line, exit 2)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from malleability.errors import MalleabilityError
from malleability.reports.audit import get_scale, plan_cells, run_audit
from malleability.reports.audit import cache as C
from malleability.reports.audit.executor import Cell
from malleability.reports.audit.plan import Plan
from malleability.reports.audit.results import load_results, write_results
from malleability.reports.cli import main

from _audit_helpers import stable as _stable

TINY = get_scale("tiny")



def _cells(results):
    return {(c["kind"], c["label"]): _stable(c["result"]) for c in results["cells"]}


# --------------------------------------------------------------------------------------------
# a small MNIST laid out for torchvision (idx files), so that each test owns its data root


def _idx(path: Path, arr: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def make_mnist(root: Path, *, seed: int = 0, n_train: int = 100, n_test: int = 30, bump: bool = False) -> Path:
    """Random digits (no zero row); ``bump`` adds 1 to one pixel of every training image."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    x = rng.integers(1, 250, size=(n_train, 28, 28), dtype=np.uint8)
    if bump:
        x[:, 14, 14] += 1
    xt = rng.integers(1, 250, size=(n_test, 28, 28), dtype=np.uint8)
    _idx(raw / "train-images-idx3-ubyte", x, 2051)
    _idx(raw / "train-labels-idx1-ubyte", np.arange(n_train) % 10, 2049)
    _idx(raw / "t10k-images-idx3-ubyte", xt, 2051)
    _idx(raw / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, 2049)
    return root


def _run(out: Path, cache: Path, data_root: Path, lines: list | None = None, **kw) -> dict:
    return run_audit(TINY, out, cache_dir=cache, device="cpu", workers=kw.pop("workers", 1),
                     data_root=str(data_root), render=False,
                     progress=(lines.append if lines is not None else None), **kw)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return make_mnist(tmp_path_factory.mktemp("mnist-a"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, mnist):
    """One tiny audit into a cache that tests copy before they damage it."""
    tmp = tmp_path_factory.mktemp("first")
    results = _run(tmp / "out", tmp / "cache", mnist)
    return tmp / "cache", results


def _copy_cache(first_run, tmp_path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(first_run[0], cache)
    return cache


# --------------------------------------------------------------------------------------------
# 1. the data fingerprint is part of every data cell's key


def test_other_data_is_recomputed_same_data_is_not(first_run, mnist, tmp_path):
    _cache, first = first_run
    assert first["counts"]["computed"] == len(first["cells"]) and first["counts"]["failed"] == 0
    data_cells = [c for c in first["cells"] if c["kind"] != "theory"]  # every kind but theory reads a data set
    assert data_cells and all(re.fullmatch(r"[0-9a-f]{32,64}", c["data_fingerprint"]) for c in data_cells)
    cache = _copy_cache(first_run, tmp_path)
    same = _run(tmp_path / "same", cache, mnist)
    assert same["counts"]["computed"] == 0 and _cells(same) == _cells(first)
    # one pixel per training image changed: every data cell is recomputed, the theory cell is not
    other = make_mnist(tmp_path / "mnist-b", bump=True)
    lines: list[str] = []
    again = _run(tmp_path / "other", cache, other, lines)
    assert again["counts"]["computed"] == len(data_cells)
    assert again["counts"]["cached"] == len(first["cells"]) - len(data_cells)
    assert again["cache_refusals"] == []  # other data is another key, not a damaged entry
    fps = {c["label"]: c["data_fingerprint"] for c in again["cells"] if c["kind"] != "theory"}
    assert all(fps[c["label"]] != c["data_fingerprint"] for c in data_cells)


def test_the_data_modules_own_fingerprint_is_used_when_it_has_one(first_run, mnist, tmp_path, monkeypatch):
    from malleability.empirics import data as D

    cache = _copy_cache(first_run, tmp_path)
    calls: list = []

    def fake(cfg):
        calls.append(cfg)
        return "fingerprint-from-the-data-module"

    monkeypatch.setattr(D, "data_fingerprint", fake, raising=False)
    results = _run(tmp_path / "o", cache, mnist)
    data_cells = [c for c in results["cells"] if c["kind"] != "theory"]
    assert results["counts"]["computed"] == len(data_cells)
    assert {c["data_fingerprint"] for c in data_cells} == {"fingerprint-from-the-data-module"}
    # once per distinct data config, not once per cell (a k-layer cell reads n rows of its one data set)
    distinct = {json.dumps(c["config"]["data"], sort_keys=True) if c["config"].get("data")
                else (tuple(c["config"]["datasets"]), tuple(c["config"]["n"])) for c in data_cells}
    assert len(calls) == len(distinct) < len(data_cells)


def test_unavailable_data_fails_its_cells_with_the_reason(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    lines: list[str] = []
    results = _run(tmp_path / "o", tmp_path / "cache", empty, lines)
    statuses = {c["status"] for c in results["cells"] if c["kind"] != "theory"}
    assert statuses == {"failed"}
    assert all(c["error"].startswith("MalleabilityError: ") and "not found" in c["error"]
               for c in results["cells"] if c["kind"] != "theory")
    said = [line for line in lines if line.startswith("audit: data set")]
    assert len(said) == 1 and "unavailable" in said[0], said  # one line per data set, not per cell


# --------------------------------------------------------------------------------------------
# 2-3. damaged entries are refused once, recomputed and overwritten


def _damage(path: Path, how: str) -> None:
    text = path.read_text()
    entry = json.loads(text)
    if how == "truncated":
        path.write_text(text[: len(text) // 2])
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    elif how == "empty":
        path.write_text("")
    elif how == "wrong-json":
        path.write_text(json.dumps({"key": entry["key"], "note": "not a cell entry"}))
    elif how == "edited":  # a number of the result changed by hand, checksum left as it was
        new = re.sub(r'("distance": \{[^}]*?: )(-?[0-9.]+)', lambda m: m.group(1) + "0.125", text, count=1)
        assert new != text
        path.write_text(new)
    elif how == "checksum":
        entry["checksum"] = "0" * 64
        path.write_text(json.dumps(entry))
    elif how == "nan":  # NaN written by hand, checksum recomputed as a careful vandal would
        entry["wall_time_s"] = float("nan")
        body = {k: v for k, v in entry.items() if k != "checksum"}
        import hashlib

        entry["checksum"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        path.write_text(json.dumps(entry))
        assert "NaN" in path.read_text()
    else:  # pragma: no cover
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "wrong-json", "edited", "checksum", "nan"])
def test_damaged_entry_is_refused_once_and_recomputed(first_run, mnist, tmp_path, how):
    _cache, first = first_run
    cache = _copy_cache(first_run, tmp_path)
    victim = next(c for c in first["cells"] if c["kind"] == "ntk-distance")
    path = cache / victim["kind"] / f"{victim['key']}.json"
    _damage(path, how)
    lines: list[str] = []
    again = _run(tmp_path / "o", cache, mnist, lines)
    assert again["counts"]["computed"] == 1 and again["counts"]["cached"] == len(first["cells"]) - 1
    assert len(again["cache_refusals"]) == 1 and str(path) in again["cache_refusals"][0]
    warned = [line for line in lines if "cache: refused" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: cache: refused") and str(path) in warned[0]
    assert _cells(again) == _cells(first)  # recomputed to the same numbers
    repaired = C.strict_loads(path.read_text())
    assert repaired["checksum"] == C.entry_checksum(repaired)
    third = _run(tmp_path / "o3", cache, mnist)
    assert third["counts"]["computed"] == 0 and third["cache_refusals"] == []


def nan_cell(cfg) -> dict:
    return {"value": float("nan"), "fine": 1.5, "rows": [1.0, float("-inf")]}


def test_nan_result_becomes_null_with_a_note_never_a_nan_token(tmp_path, mnist):
    from malleability.reports.audit.cells import TheoryCellConfig

    plan = plan_cells(TINY, data_root=str(mnist))
    probe = Cell("theory", TheoryCellConfig("nan-probe"), nan_cell, "nan probe", tags={"claim": "nan-probe"})
    results = run_audit(TINY, tmp_path / "o", cache_dir=tmp_path / "c", workers=1, render=False, progress=None,
                        plan=Plan(plan.cells + [probe], plan.missing))
    cell = next(c for c in results["cells"] if c["label"] == "nan probe")
    assert cell["status"] == "computed" and cell["result"] == {"value": None, "fine": 1.5, "rows": [1.0, None]}
    assert sorted(cell["non_finite"]) == ["result.rows[1]: -inf", "result.value: nan"]
    text = (tmp_path / "o" / "results.json").read_text()
    assert not re.search(r"\bNaN\b|Infinity", text)
    assert load_results(tmp_path / "o")["cells"][-1]["non_finite"] == cell["non_finite"]


def test_results_json_is_strict_and_a_nan_token_in_it_is_refused(tmp_path):
    doc = {"schema": "x", "cells": [], "summary": {"mean": float("nan"), "ok": [1, float("inf")]}}
    write_results(tmp_path, doc)
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    stored = json.loads(text)
    assert stored["summary"] == {"mean": None, "ok": [1, None]}
    assert sorted(stored["non_finite"]) == ["$.summary.mean: nan", "$.summary.ok[1]: inf"]
    (tmp_path / "results.json").write_text(text.replace("null", "NaN", 1))
    with pytest.raises(MalleabilityError, match="not valid JSON"):
        load_results(tmp_path)


# --------------------------------------------------------------------------------------------
# 4. a cache folder that takes no writes


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_unwritable_cache_runs_on_with_one_warning(first_run, mnist, tmp_path, monkeypatch, code):
    _cache, first = first_run

    def refuse(path, value):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(C, "atomic_write_json", refuse)
    lines: list[str] = []
    results = _run(tmp_path / "o", tmp_path / "cache", mnist, lines)
    assert results["counts"]["computed"] == len(first["cells"]) and results["counts"]["failed"] == 0
    assert _cells(results) == _cells(first)  # every computed cell is in results.json
    warned = [line for line in lines if "cache: cannot store" in line]
    assert len(warned) == 1 and os.strerror(code) in warned[0] and warned[0].startswith("warning:")
    info = results["cache_unwritable"]
    assert os.strerror(code) in info["reason"]
    assert sorted(e["key"] for e in info["not_stored"]) == sorted(c["key"] for c in first["cells"])
    assert (tmp_path / "o" / "results.json").is_file()  # --out is not the cache: it was written


def test_cache_that_fills_up_mid_run_keeps_what_it_stored(first_run, mnist, tmp_path, monkeypatch):
    _cache, first = first_run
    real = C.atomic_write_json
    writes = []

    def fill_after_three(path, value):
        if len(writes) >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        writes.append(path)
        real(path, value)

    monkeypatch.setattr(C, "atomic_write_json", fill_after_three)
    results = _run(tmp_path / "o", tmp_path / "cache", mnist)
    stored = len(list((tmp_path / "cache").glob("*/*.json")))
    assert stored == 2  # the probe took the first write
    assert len(results["cache_unwritable"]["not_stored"]) == len(first["cells"]) - stored
    monkeypatch.setattr(C, "atomic_write_json", real)
    again = _run(tmp_path / "o2", tmp_path / "cache", mnist)
    assert again["counts"]["cached"] == stored and again["cache_unwritable"] is None


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into a 0o500 folder anyway")
def test_read_only_cache_folder_for_real(first_run, mnist, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        lines: list[str] = []
        results = _run(tmp_path / "o", cache, mnist, lines)
        assert results["cache_unwritable"] and results["counts"]["failed"] == 0
        assert sum("cache: cannot store" in line for line in lines) == 1
    finally:
        cache.chmod(0o700)


# --------------------------------------------------------------------------------------------
# 5. a full disk for --out: one error line, nothing half-written


def test_atomic_write_failing_mid_write_leaves_no_temp_and_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    C.atomic_write_json(path, {"old": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        C.atomic_write_json(path, {"new": list(range(1000))})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    assert json.loads(path.read_text()) == {"old": 1}


def test_full_disk_for_out_is_one_error_line_and_no_file(tmp_path, mnist, monkeypatch):
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == "results.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["audit", "--scale", "tiny", "--workers", "1", "--device", "cpu", "--out", str(out),
                                  "--cache-dir", str(tmp_path / "c"), "--data-root", str(mnist)])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write {out / 'results.json'}: No space left on device"]
    assert "Traceback" not in r.output and "internal error" not in r.output
    assert list(out.iterdir()) == []  # neither results.json nor its temporary file


def _fake_report(monkeypatch, fail: bool):
    def render_report(results, out_dir):
        out = Path(out_dir)
        (out / "report.md").write_text("# whole report\n")
        (out / "plots").mkdir()
        (out / "plots" / "a.png").write_bytes(b"png")
        if fail:
            with open(out / "report.html", "w") as fh:
                fh.write("<html>half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        (out / "report.html").write_text("<html>whole</html>")

    module = types.ModuleType("malleability.reports.report")
    module.render_report = render_report
    monkeypatch.setitem(sys.modules, "malleability.reports.report", module)


def test_report_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from malleability.reports.audit.run import _render_whole

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("old report\n")
    _fake_report(monkeypatch, fail=True)
    with pytest.raises(MalleabilityError, match="No space left on device"):
        _render_whole({}, out)
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]  # no temp folder, no half file
    assert (out / "report.md").read_text() == "old report\n"
    _fake_report(monkeypatch, fail=False)
    _render_whole({}, out)
    assert sorted(p.name for p in out.iterdir()) == ["plots", "report.html", "report.md"]
    assert (out / "report.md").read_text() == "# whole report\n" and (out / "plots" / "a.png").is_file()
    _render_whole({}, out)  # rendering again replaces the plots folder
    assert sorted(p.name for p in out.iterdir()) == ["plots", "report.html", "report.md"]


# --------------------------------------------------------------------------------------------
# 6. one thread everywhere: --workers 1 equals --workers 2


def test_workers_1_equals_workers_2(first_run, mnist, tmp_path):
    _cache, serial = first_run
    parallel = _run(tmp_path / "o", tmp_path / "cache", mnist, workers=2)
    assert parallel["options"]["workers"] == 2 and parallel["counts"]["computed"] == len(serial["cells"])
    assert _cells(parallel) == _cells(serial)
    for results in (serial, parallel):
        assert {c["provenance"]["threads"] for c in results["cells"]} == {1}


@pytest.mark.parametrize("args, threads", [(["widths", "--help"], 1), (["theory", "check", "--help"], 1),
                                           (["bench", "ntk", "--help"], 2)])
def test_commands_but_bench_compute_with_one_thread(monkeypatch, args, threads):
    import torch

    before = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "2")
    torch.set_num_threads(2)
    try:
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == threads
        assert os.environ["OMP_NUM_THREADS"] == str(threads)
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# 7. SIGINT to the parent alone


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc), e.g. pool workers and the resource tracker."""
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(k) for k in task.read_text().split()]
        except OSError:
            pass
    return kids


def _alive(pid: int) -> str | None:
    """The command line of a process that is running (not a zombie), else None."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return None
    return None if state in ("Z", "X") else cmd[:200]


def _thread_dump(err: str) -> str:
    """faulthandler's dump, every thread's innermost frames first, without its long list of extension modules."""
    start = err.find("Fatal Python error")
    lines = [line for line in err[max(start, 0):].splitlines() if not line.startswith("Extension modules")]
    return "\n".join(lines)[-12000:]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sleep_in_worker(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_stop_executor_returns_and_ends_the_workers_while_the_pool_lock_is_held():
    # The state a Ctrl-C inside submit() can leave: the pool's shutdown lock taken and never given back.
    import concurrent.futures as cf

    from malleability.reports.audit.executor import stop_executor

    pool = cf.ProcessPoolExecutor(max_workers=1)
    running = pool.submit(_sleep_in_worker, 120)
    deadline = time.time() + 60
    while time.time() < deadline and not running.running():
        time.sleep(0.05)
    workers = list(pool._processes.values())
    assert running.running() and workers
    pool._shutdown_lock.acquire()
    try:
        # in a thread, so that a stop that hangs fails this test instead of hanging the suite
        stopper = threading.Thread(target=stop_executor, args=(pool,), daemon=True)
        start = time.time()
        stopper.start()
        stopper.join(timeout=30)
        assert not stopper.is_alive(), "stop_executor blocked on the pool's shutdown lock"
        assert time.time() - start < 15
        assert not any(w.is_alive() for w in workers)
    finally:
        pool._shutdown_lock.release()
        for w in workers:
            w.kill()
        pool.shutdown(wait=True)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc")
def test_sigint_to_the_parent_keeps_finished_cells_and_stops_fast(mnist, tmp_path):
    cache = tmp_path / "cache"
    # stderr goes to a file: a pipe would also wait for every process that inherited it; the parent's
    # exit and its children's are checked one by one instead, and a hang dumps every thread's stack
    env = {**os.environ, "MALLEABILITY_AUDIT_TEST_DELAY": "3", "OMP_NUM_THREADS": "1",
           "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "malleability.reports.cli", "audit", "--scale", "tiny", "--workers", "2",
           "--device", "cpu", "--out", str(tmp_path / "o"), "--cache-dir", str(cache), "--data-root", str(mnist)]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err_file:
        # Ctrl-C as a terminal delivers it: a shell without job control (CI, nohup, `cmd &`) starts its
        # background children with SIGINT ignored, Python then installs no KeyboardInterrupt handler,
        # and the signal below would be dropped however well the audit handles it
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_file, text=True,
                                preexec_fn=_default_sigint)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and not list(cache.glob("*/*.json")):
            time.sleep(0.1)
        assert proc.poll() is None, log.read_text()[-2000:]
        children = _children(proc.pid)
        os.kill(proc.pid, signal.SIGINT)
        sent = time.time()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGABRT)  # faulthandler writes where each thread is stuck
            proc.wait(timeout=10)
            pytest.fail("the parent did not exit within 30 s of Ctrl-C:\n" + _thread_dump(log.read_text()))
        stopped_in = time.time() - sent
        gone_by = time.time() + 15
        while time.time() < gone_by and any(_alive(k) for k in children):
            time.sleep(0.1)
        lingering = {k: _alive(k) for k in children if _alive(k)}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = log.read_text()
    assert proc.returncode == 130, err[-2000:]
    assert stopped_in < 10, stopped_in
    assert not lingering, f"children alive 15 s after the parent exited: {lingering}"
    said = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(said) == 1 and "Traceback" not in err, err[-2000:]
    kept = int(re.search(r"kept (\d+) cell", said[0]).group(1))
    stored = len(list(cache.glob("*/*.json")))
    assert kept == stored >= 1
    assert not (tmp_path / "o" / "results.json").exists()
    resumed = _run(tmp_path / "o", cache, mnist)
    assert resumed["counts"]["cached"] == kept and resumed["counts"]["failed"] == 0


# --------------------------------------------------------------------------------------------
# 8-9. usage errors and bad input: one line, exit 2, no class names; internal errors stay exit 1


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    return f


USAGE_CASES = [
    ["theory", "inspect", "{npy}", "--layers", "abc"],
    ["theory", "inspect"],
    ["theory", "check", "--profile", "huge"],
    ["theory", "sensitivity", "{npy}"],
    ["ntk-distance", "--dtype", "junk"],
    ["ntk-distance", "--dataset", "mnist", "--protocol", "fast"],
    ["ntk-distance", "--dataset", "mnist", "--n", "abc"],
    ["audit", "--out", "{file}"],
    ["audit", "--device", "tpu"],
    ["audit", "--workers", "two"],
    ["audit", "--bogus"],
    ["flip-rate", "--dataset", "mnist"],
    ["flip-rate", "--dataset", "mnist", "--attack", "fgsm", "--width", "wide"],
    ["widths"],
    ["widths", "--dataset", "mnist", "--eps", "x"],
    # model options refused before any data is loaded or trained on (no progress line)
    *[[cmd, "--dataset", "mnist", *(["--attack", "fgsm"] if cmd == "flip-rate" else []), *opts]
      for cmd in ("ntk-distance", "flip-rate")
      for opts in (["--models", "patch-attn", "--patch-size", "5"], ["--models", "truncated-attn", "--rank", "0"],
                   ["--models", "truncated-attn", "--rank", "785"], ["--models", "softmax-attn", "--temperature", "0"],
                   ["--models", "softmax-attn", "--temperature", "-1"], ["--models", "qkv-attn", "--d-k", "0"])],
    # blank entries, repeats and out-of-range seeds are refused, never dropped, merged or wrapped
    ["flip-rate", "--dataset", "mnist", "--attack", "fgsm", "--eps", "1,,2"],
    ["flip-rate", "--dataset", "mnist", "--attack", "fgsm,"],
    ["flip-rate", "--dataset", "mnist", "--attack", "fgsm", "--pgd-steps", "5"],
    ["flip-rate", "--dataset", "mnist", "--attack", "fgsm", "--seeds", "0,18446744073709551616"],
    ["flip-rate", "--dataset", "mnist", "--attack", "fgsm", "--seeds", "99999999999999999999"],
    ["flip-rate", "--dataset", "mnist", "--attack", "fgsm", "--data-seed", "-1"],
    ["flip-rate", "--dataset", "mnist", "--attack", "fgsm", "--classes", ""],
    ["flip-rate", "--dataset", "mnist", "--attack", "fgsm", "--adv-train", "--adv-train-schedule", "ramp,"],
    ["ntk-distance", "--dataset", "mnist", "--models", "relu,"],
    ["ntk-distance", "--dataset", "mnist", "--n", "20", "--kernel-points", "21"],
    ["ntk-distance", "--dataset", "mnist", "--n", "20", "--kernel-points", "1"],
    ["theory", "sensitivity", "{npy}", "--i", "0", "--j", "1", "--eps", "1e-320"],
    ["flip-rate", "--dataset", "mnist", "--attack", "fgsm", "--eps", "0,-0"],
    ["widths", "--dataset", "mnist", "--n", "20,20"],
    ["widths", "--dataset", "mnist", "--n", "20,,40"],
    ["k-layer", "--codes", "iic,,ccc"],
    ["k-layer", "--codes", "ccc+"],
    ["k-layer", "--ks", "1,"],
    ["k-layer", "--ks", "61"],
    ["bench", "ntk", "--threads", "100000"],
    ["bench", "ntk", "--reference-budget", "nan"],
    ["bench", "ntk", "--n", "10000000"],
    ["bench", "influence", "--outputs", "100000000000"],
    ["report"],
    ["nosuchcommand"],
    ["--bogus"],
]


@pytest.mark.parametrize("args", USAGE_CASES, ids=[" ".join(a) for a in USAGE_CASES])
def test_usage_errors_are_one_line_exit_2(args, a_file, tmp_path):
    npy = tmp_path / "g.npy"
    np.save(npy, np.eye(3))
    args = [a.format(npy=npy, file=a_file) for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output and "Usage:" not in r.output
    assert not re.search(r"\b[A-Z]\w*(Error|Exception):", lines[0]), lines[0]


def test_bad_input_messages_carry_no_class_names(tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY garbage that is not an array")
    r = CliRunner().invoke(main, ["theory", "inspect", str(bad)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0]
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", lines[0]), lines[0]


def test_one_line_strips_class_names_only():
    from malleability.reports.cli import one_line

    assert one_line("cannot read x.npy as .npy: ValueError: bad\n header") == "cannot read x.npy as .npy: bad header"
    assert one_line("MalleabilityError: data root /d not found") == "data root /d not found"
    assert one_line("numpy.core._exceptions._ArrayMemoryError: too big") == "too big"
    assert one_line("an Error: in prose stays") == "an Error: in prose stays"  # not a class name (lower case start)


def test_internal_errors_stay_internal_exit_1(monkeypatch, tmp_path):
    import malleability.reports.audit as A

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(A, "get_scale", boom)
    r = CliRunner().invoke(main, ["audit", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [
        "internal error: RuntimeError: boom (set MALLEABILITY_DEBUG=1 for the traceback)"]


def test_out_of_memory_is_bad_input_exit_2_naming_the_command(monkeypatch, tmp_path):
    import malleability.reports.audit as A

    def too_big(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(A, "get_scale", too_big)
    r = CliRunner().invoke(main, ["audit", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: out of memory") and " audit --help'" in line, line
