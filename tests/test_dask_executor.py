"""The dask executor: the audit through a loopback cluster equals the local run, survives a killed
worker, and refuses bad addresses, foreign code and concurrent cells in one process."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import threading
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from malleability.errors import MalleabilityError  # noqa: E402
from malleability.reports.audit import get_scale, run_audit  # noqa: E402
from malleability.reports.audit import dask_executor as D  # noqa: E402

from _audit_helpers import stable as _stable  # noqa: E402

SLOW = ("ntk.epochs=1200",)  # about a second per NTK cell: long enough to kill a worker in the middle of one



def _by_key(results):
    return {c["key"]: (c["status"], _stable(c["result"])) for c in results["cells"]}


@pytest.fixture(scope="module")
def cluster():
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
        lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None)
    client = distributed.Client(lc)
    try:
        client.wait_for_workers(2, timeout=60)
        yield lc, client
    finally:
        client.close()
        lc.close()


def _executor(lc, **kw):
    ex, close = D.make_dask_executor(lc.scheduler_address, n_workers=2, log=None, **kw)
    return ex, close


def test_tiny_audit_on_dask_equals_the_local_run(cluster, tmp_path):
    lc, _client = cluster
    local = run_audit(get_scale("tiny"), tmp_path / "local", cache_dir=tmp_path / "c-local", workers=1,
                      render=False, progress=None)
    ex, close = _executor(lc)
    try:
        assert ex._max_workers == 4  # two cells in flight per worker
        remote = run_audit(get_scale("tiny"), tmp_path / "dask", cache_dir=tmp_path / "c-dask", executor=ex,
                           render=False, progress=None)
    finally:
        close()
    assert remote["counts"]["computed"] == len(remote["cells"]) == len(local["cells"]) > 0
    assert _by_key(remote) == _by_key(local)
    # the workers never wrote into the cache: only the parent's entries, one per cell
    assert sorted(p.name for p in (tmp_path / "c-dask").rglob("*.json") if p.is_file()) == sorted(
        p.name for p in (tmp_path / "c-local").rglob("*.json") if p.is_file())
    with pytest.raises(RuntimeError):
        ex.submit(pow, 2, 3)


def _executing_keys(dask_worker) -> list[str]:
    return [str(ts.key) for ts in dask_worker.state.executing]


def test_a_killed_worker_loses_no_cell(cluster, tmp_path):
    lc, client = cluster
    client.wait_for_workers(2, timeout=60)
    pids = client.run(os.getpid)
    killed: dict = {}
    finished = threading.Event()

    def kill_one_mid_cell():
        # the workers' own state, not the scheduler's 'processing' (which also holds cells queued on a
        # worker): a cell killed here has started and not finished
        while not finished.is_set() and not killed:
            try:
                executing = client.run(_executing_keys, workers=list(pids))
            except Exception:  # noqa: BLE001 - a worker restarting; ask again
                executing = {}
            for worker, keys in executing.items():
                ntk = [k for k in keys if k.startswith("run_ntk_cell-")]
                if ntk:
                    os.kill(pids[worker], signal.SIGKILL)
                    killed.update(worker=worker, key=ntk[0])
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_mid_cell, daemon=True)
    ex, close = _executor(lc)
    try:
        killer.start()
        remote = run_audit(get_scale("tiny", SLOW), tmp_path / "dask", cache_dir=tmp_path / "c-dask", executor=ex,
                           render=False, progress=None)
    finally:
        finished.set()
        killer.join(timeout=10)
        close()
    assert killed, "no NTK cell was seen running on a worker"
    assert [c["status"] for c in remote["cells"]] == ["computed"] * len(remote["cells"])
    # the killed cell ran again elsewhere: the scheduler put it in 'processing' twice
    story = client.run_on_scheduler(lambda dask_scheduler, key=killed["key"]: dask_scheduler.story(key))
    assert sum(1 for t in story if t[0] == killed["key"] and t[2] == "processing") >= 2
    local = run_audit(get_scale("tiny", SLOW), tmp_path / "local", cache_dir=tmp_path / "c-local", workers=1,
                      render=False, progress=None)
    assert _by_key(remote) == _by_key(local)


def test_futures_behave_like_concurrent_futures(cluster):
    lc, _client = cluster
    ex, close = _executor(lc, retries=0)
    try:
        ok = ex.submit(pow, 3, 4)
        bad = ex.submit(divmod, 1, 0)
        done, not_done = cf.wait([ok, bad], timeout=60)
        assert not not_done and ok.result() == 81
        assert isinstance(bad.exception(), ZeroDivisionError)
        assert sorted(f.result() for f in cf.as_completed([ex.submit(pow, 2, k) for k in range(4)])) == [1, 2, 4, 8]
        slow = ex.submit(time.sleep, 1)  # a cancelled cell that already started still holds its worker
        assert slow.cancel() and slow.cancelled()
    finally:
        close()
    close()  # idempotent


def test_one_thread_per_worker_and_the_data_root(cluster):
    lc, _client = cluster
    ex, close = _executor(lc, data_root="/nowhere/for/this/test")
    try:
        import torch

        assert ex.submit(torch.get_num_threads).result() == 1
        assert ex.submit(os.environ.get, "OMP_NUM_THREADS").result() == "1"
        # a worker that already has a data root keeps its own (the cluster inherited this process's)
        expect = os.environ.get("MALLEABILITY_DATA") or "/nowhere/for/this/test"
        assert ex.submit(os.environ.get, "MALLEABILITY_DATA").result() == expect
    finally:
        close()


def test_a_worker_with_other_sources_refuses_the_cell(monkeypatch):
    from malleability.reports.audit.cache import source_hash

    monkeypatch.setattr(D, "_WORKER_SOURCE", None)
    assert D.run_on_worker(source_hash(), pow, 2, 5) == 32
    with pytest.raises(MalleabilityError, match="other malleability sources"):
        D.run_on_worker("0" * 64, pow, 2, 5)
    assert D.run_on_worker(None, pow, 2, 5) == 32  # check_code=False


def test_cells_in_one_worker_process_never_overlap():
    """A worker started with several threads still runs one cell at a time (torch state is per process)."""
    active, peak, lock = [0], [0], threading.Lock()

    def cell(_):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return 1

    with cf.ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(lambda i: D.run_on_worker(None, cell, i), range(8))) == 8
    assert peak[0] == 1


@pytest.mark.parametrize("address", ["", "tcp://", "tcp://host", "http://h:1", "tcp://h:port", "a b:1"])
def test_bad_addresses_are_one_line_errors(address):
    with pytest.raises(MalleabilityError, match="expected an address"):
        D.check_address(address)


def test_check_address_defaults_to_tcp():
    assert D.check_address(" 10.0.0.5:8786 ") == "tcp://10.0.0.5:8786"
    assert D.check_address("tls://h:8786") == "tls://h:8786"


def test_unreachable_scheduler_is_a_one_line_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.time()
    with pytest.raises(MalleabilityError, match="cannot reach the dask scheduler"):
        D.make_dask_executor(f"127.0.0.1:{port}", timeout_s=1, log=None)
    assert time.time() - start < 20


def test_address_from_the_environment(monkeypatch):
    monkeypatch.setenv(D.ADDRESS_ENV, "not an address")
    with pytest.raises(MalleabilityError, match="expected an address"):
        D.make_dask_executor(None, log=None)


def test_bad_counts_are_refused():
    with pytest.raises(MalleabilityError, match="--workers"):
        D.make_dask_executor("127.0.0.1:1", n_workers=0, log=None)
    with pytest.raises(MalleabilityError, match="retries"):
        D.DaskExecutor(None, retries=-1)


def _plan_cells():
    from malleability.reports.audit.plan import plan_cells

    return [c for c in plan_cells(get_scale("tiny")).cells if c.kind != "widths"][:4]


def test_dask_scheduler_and_worker_commands_on_loopback(tmp_path, monkeypatch):
    """The way a cluster runs it: `dask scheduler` and `dask worker` processes, the address from the environment."""
    import json
    import shutil
    import subprocess
    import sys

    from malleability.reports.audit.cache import CellCache
    from malleability.reports.audit.executor import SerialExecutor, run_cells

    dask_cli = shutil.which("dask") or str(Path(sys.executable).with_name("dask"))
    if not Path(dask_cli).exists():
        pytest.skip("no dask command")
    info = tmp_path / "scheduler.json"
    logs = [open(tmp_path / f"{n}.log", "w") for n in ("scheduler", "worker")]
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(info)], stdout=logs[0], stderr=subprocess.STDOUT)]
    try:
        deadline = time.time() + 30
        while not (info.exists() and info.stat().st_size) and time.time() < deadline:
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        procs.append(subprocess.Popen([dask_cli, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--no-dashboard", "--host", "127.0.0.1"], stdout=logs[1],
                                      stderr=subprocess.STDOUT))
        monkeypatch.setenv(D.ADDRESS_ENV, address)
        ex, close = D.make_dask_executor(None, n_workers=1, timeout_s=60, log=None)
        try:
            assert ex.n_workers == 1
            remote = run_cells(_plan_cells(), ex, CellCache(tmp_path / "c-dask"), progress=None)
            ex.client.shutdown()  # scheduler and workers stop at once (faster than SIGTERM to each)
        finally:
            close()
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()
    local = run_cells(_plan_cells(), SerialExecutor(), CellCache(tmp_path / "c-local"), progress=None)
    assert [o.status for o in remote.outcomes] == ["computed"] * len(local.outcomes)
    assert [_stable(o.entry["result"]) for o in remote.outcomes] == [_stable(o.entry["result"]) for o in local.outcomes]


def test_the_estimate_scales_by_the_workers_cpus_not_the_parents(cluster, tmp_path, monkeypatch):
    from malleability.reports.audit import cost_model as CM
    from malleability.reports.audit.plan import Plan, plan_cells

    lc, client = cluster
    client.wait_for_workers(2, timeout=60)
    monkeypatch.setattr(CM, "_SPEED", {3: 0.123})  # the parent's own value: outside the clamp, so never a worker's
    ex, close = _executor(lc)
    try:
        measured = ex.speed_factor()
        assert CM.SPEED_FACTOR_RANGE[0] <= measured <= CM.SPEED_FACTOR_RANGE[1]
        monkeypatch.setattr(ex, "speed_factor", lambda: 3.0)
        lines: list[str] = []
        theory = [c for c in plan_cells(get_scale("tiny")).cells if c.kind == "theory"][:1]
        out = run_audit(get_scale("tiny"), tmp_path / "dask", cache_dir=tmp_path / "c", executor=ex, render=False,
                        plan=Plan(cells=theory, missing=[]), progress=lines.append)
    finally:
        close()
    assert out["estimate_speed_factor"] == 3.0
    assert any("x3.00 for the workers' (median) measured pace on the pace probe" in line for line in lines)
