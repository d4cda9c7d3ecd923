"""Run the audit's cells on a ``dask.distributed`` cluster (optional extra ``malleability[dask]``).

:func:`make_dask_executor` returns a :class:`concurrent.futures.Executor` that
:func:`~malleability.reports.audit.executor.run_cells` uses unchanged: ``submit`` gives a
``concurrent.futures.Future`` (so ``cf.wait``/``as_completed``, ``result()``, ``exception()``
and ``cancel()`` behave as with the local pool), and the parent alone reads and writes the
cell cache. Workers need the package (the same source: each cell checks it) and the data,
never the cache folder.

Why the results equal the local executor's:

* one cell at a time per worker process (a process-wide lock, whatever ``--nthreads`` a
  worker was started with), since torch's thread count and global RNG are per process;
* one torch/BLAS thread per cell, as in the local pool (the nanny also sets
  ``OMP_NUM_THREADS=1`` before it spawns a worker: dask's ``pre-spawn-environ`` default);
* a worker whose malleability sources differ from the parent's refuses the cell, so no
  result computed by other code is cached under this code's key.

Failures: a worker that dies (kill -9, out of memory, a lost node) has its cells
rescheduled by the scheduler on the other workers, up to
``distributed.scheduler.allowed-failures`` deaths per cell (default 3; then the cell fails
with ``KilledWorker``). A cell that *raises* is rerun ``retries`` times (default 1) before
it counts as failed, which covers a transient error (a full /tmp, a flaky mount); a
deterministic error simply fails again.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import threading
import uuid
from typing import Any, Callable

from malleability.errors import MalleabilityError

ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"
DATA_ENV = "MALLEABILITY_DATA"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_CELL_LOCK = threading.Lock()  # one cell per worker process at a time (torch threads and RNG are per process)
_WORKER_SOURCE: str | None = None  # source hash of this worker process, computed at its first cell


def _distributed():
    try:
        import distributed
    except ImportError:
        raise MalleabilityError(
            "the dask executor needs dask.distributed: pip install 'malleability[dask]' "
            "(or pip install 'dask[distributed]')") from None
    return distributed


def _one_thread() -> None:
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first inter-op work; 1 already after the first cell
        pass
    from malleability.empirics.blas import hold_blas_threads

    hold_blas_threads(1)  # numpy's pool too: its SVDs round differently on two threads


def run_on_worker(source_sha256: str | None, fn: Callable, /, *args, **kwargs) -> Any:
    """In a worker: ``fn(*args, **kwargs)`` with one thread, one cell at a time, after checking the code."""
    global _WORKER_SOURCE
    with _CELL_LOCK:
        if source_sha256 is not None:
            if _WORKER_SOURCE is None:
                from malleability.reports.audit.cache import source_hash

                _WORKER_SOURCE = source_hash()
            if _WORKER_SOURCE != source_sha256:
                import socket

                raise MalleabilityError(
                    f"worker on {socket.gethostname()} runs other malleability sources "
                    f"({_WORKER_SOURCE[:12]} vs {source_sha256[:12]}): install the same checkout on every worker")
        _one_thread()
        return fn(*args, **kwargs)


def _worker_speed_factor() -> float:
    """In a worker process: the cost model's speed factor of its CPU, on one thread."""
    from malleability.reports.audit.cost_model import machine_speed_factor

    _one_thread()
    return machine_speed_factor()


try:  # the parent without the extra can still import this module (and get a one-line error on use)
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - exercised only without the extra
    _WorkerPlugin = object


class CellWorkerSetup(_WorkerPlugin):
    """On every worker, also those that join later: one thread, and the data root if it has none."""

    idempotent = True  # registering again (a second executor on the same cluster) changes nothing
    name = "malleability-cell-setup"

    def __init__(self, data_root: str | None):
        self.data_root = data_root

    def setup(self, worker):
        from malleability.provenance import git_commit

        _one_thread()
        git_commit()  # the tree this worker imports now, not the one on disk when its first cell ends
        if self.data_root and not os.environ.get(DATA_ENV):
            os.environ[DATA_ENV] = self.data_root


class DaskExecutor(cf.Executor):
    """A ``concurrent.futures.Executor`` over a ``distributed.Client`` (see the module docstring).

    ``shutdown`` closes the client, and the cluster when this executor started it.
    """

    def __init__(self, client, *, retries: int = 1, source_sha256: str | None = None, cluster=None,
                 min_workers: int = 0):
        if retries < 0:
            raise MalleabilityError(f"retries must be >= 0, got {retries}")
        self.client = client
        self.cluster = cluster
        self.retries = retries
        self.source_sha256 = source_sha256
        self.min_workers = min_workers
        self._futures: dict[str, Any] = {}  # key -> dask future still pending
        self._lock = threading.Lock()
        self._shutdown = False
        self._closed = False

    @property
    def n_workers(self) -> int:
        """Worker processes connected now."""
        return len(self.client.scheduler_info().get("workers", {}))

    @property
    def _max_workers(self) -> int:
        # run_cells keeps this many cells in flight: two per worker, so each worker's next cell already
        # waits on the scheduler while the parent caches the last one.
        return 2 * max(1, self.n_workers, self.min_workers)

    def submit(self, fn, /, *args, **kwargs):  # noqa: D401 - Executor API
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        name = getattr(args[0], "__name__", None) if args and callable(args[0]) else None
        key = f"{name or getattr(fn, '__name__', 'call')}-{uuid.uuid4().hex}"
        future = self.client.submit(run_on_worker, self.source_sha256, fn, *args, key=key, pure=False,
                                    retries=self.retries, **kwargs)
        out: cf.Future = cf.Future()
        with self._lock:
            self._futures[key] = future

        def cancel_remote(f: cf.Future) -> None:
            if f.cancelled():
                future.cancel()

        out.add_done_callback(cancel_remote)

        def relay(done) -> None:  # runs on the client's thread when the dask future settles
            with self._lock:
                self._futures.pop(key, None)
            if out.done():
                return
            status = done.status
            try:
                if status == "finished":
                    out.set_result(done.result())
                elif status == "cancelled":
                    if out.cancel():
                        out.set_running_or_notify_cancel()
                else:
                    out.set_exception(done.exception())
            except cf.InvalidStateError:  # cancelled by the caller meanwhile
                pass
            except Exception as exc:  # e.g. the result cannot be fetched: the cell fails, the run goes on
                if not out.done():
                    out.set_exception(exc)

        future.add_done_callback(relay)
        return out

    def speed_factor(self) -> float | None:
        """The cost model's CPU speed factor measured on the workers (median over them), or None when
        no worker answers; the parent's CPU need not be theirs."""
        try:
            factors = list(self.client.run(_worker_speed_factor).values())
        except Exception:  # noqa: BLE001 - the estimate falls back to the parent's CPU
            return None
        factors = sorted(float(f) for f in factors)
        if not factors:
            return None
        mid = len(factors) // 2
        return factors[mid] if len(factors) % 2 else 0.5 * (factors[mid - 1] + factors[mid])

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; cancel (``cancel_futures``) or await the pending cells, then close the client."""
        self._shutdown = True
        with self._lock:
            pending = list(self._futures.values())
        if pending:
            if cancel_futures or not wait:
                self.client.cancel(pending)
            else:
                from distributed import wait as dask_wait

                dask_wait(pending)
        self.close()

    def close(self) -> None:
        """Close the client (and the cluster this executor started); idempotent."""
        self._shutdown = True
        if self._closed:
            return
        self._closed = True
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def check_address(address: str) -> str:
    """``address`` stripped, or a one-line error; a bare host:port means tcp://."""
    text = (address or "").strip()
    if not text or any(c.isspace() for c in text):
        raise MalleabilityError(f"--scheduler {address!r}: expected an address like tcp://HOST:8786")
    if "://" not in text:
        text = "tcp://" + text
    scheme, _, rest = text.partition("://")
    host, sep, port = rest.rpartition(":")
    if scheme not in ("tcp", "tls", "ucx", "inproc", "ws", "wss") or not sep or not host or not port.isdigit():
        raise MalleabilityError(f"--scheduler {address!r}: expected an address like tcp://HOST:8786")
    return text


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def make_dask_executor(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    retries: int = 1,
    data_root: str | None = None,
    allowed_failures: int | None = None,
    timeout_s: float = 60.0,
    log: Callable[[str], None] | None = _say,
    check_code: bool = True,
) -> tuple[DaskExecutor, Callable[[], None]]:
    """Connect to a dask scheduler and return ``(executor, close)``.

    ``address``: the scheduler (``tcp://HOST:PORT``); None: ``$DASK_SCHEDULER_ADDRESS``; where
    neither is set, a local cluster of ``n_workers`` processes (default one per core) with one
    thread each is started on 127.0.0.1 and closed by ``close``. With an address,
    ``n_workers`` is how many workers to wait for (up to ``timeout_s``) before returning.
    ``data_root`` (default: this process's ``$MALLEABILITY_DATA``) becomes ``$MALLEABILITY_DATA``
    on workers that have none. ``allowed_failures`` applies to a cluster started here (a
    remote scheduler has its own ``distributed.scheduler.allowed-failures``).
    """
    _distributed()
    import dask
    from distributed import Client, LocalCluster

    if n_workers is not None and n_workers < 1:
        raise MalleabilityError(f"--workers must be >= 1, got {n_workers}")
    if allowed_failures is not None and allowed_failures < 0:
        raise MalleabilityError(f"allowed_failures must be >= 0, got {allowed_failures}")
    say = log or (lambda _line: None)
    address = address if address is not None else (os.environ.get(ADDRESS_ENV) or None)
    data_root = data_root if data_root is not None else (os.environ.get(DATA_ENV) or None)
    cluster = None
    if address is None:
        from malleability.reports.audit.executor import check_workers, default_workers

        n = check_workers(n_workers) if n_workers else default_workers()
        overrides = {} if allowed_failures is None else {"distributed.scheduler.allowed-failures": allowed_failures}
        with dask.config.set(overrides):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None)
        try:
            client = Client(cluster, timeout=timeout_s)
        except BaseException:
            cluster.close()
            raise
        where = f"a local dask cluster of {n} worker(s) at {cluster.scheduler_address}"
    else:
        address = check_address(address)
        try:
            client = Client(address, timeout=timeout_s)
        except (OSError, TimeoutError) as exc:
            raise MalleabilityError(f"cannot reach the dask scheduler at {address}: {exc}") from None
        where = f"the dask scheduler at {address}"
    try:
        if n_workers and cluster is None:
            try:
                client.wait_for_workers(n_workers, timeout=timeout_s)
            except (TimeoutError, OSError):
                raise MalleabilityError(
                    f"{where}: fewer than {n_workers} worker(s) after {timeout_s:g}s") from None
        client.register_plugin(CellWorkerSetup(data_root))
        source = None
        if check_code:
            from malleability.reports.audit.cache import source_hash

            source = source_hash()
        executor = DaskExecutor(client, retries=retries, source_sha256=source, cluster=cluster,
                                min_workers=n_workers or 0)
        threads = client.nthreads()
        busy = sorted(w for w, t in threads.items() if t > 1)
        if busy:
            say(f"dask: {len(busy)} worker(s) have several threads; each runs one cell at a time "
                "(start workers with --nthreads 1 and --nworkers N to use the cores)")
        say(f"dask: {where}, {len(threads)} worker(s) now")
    except BaseException:
        client.close()
        if cluster is not None:
            cluster.close()
        raise
    return executor, executor.close


__all__ = ["ADDRESS_ENV", "CellWorkerSetup", "DaskExecutor", "check_address", "make_dask_executor",
           "run_on_worker"]
