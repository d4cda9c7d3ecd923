"""Run experiment cells through one executor interface and cache each as it finishes.

Any object with the :class:`concurrent.futures.Executor` shape (``submit``, ``map``,
``shutdown``) can run cells: local processes by default (:func:`make_executor`, a
``ProcessPoolExecutor`` with the *spawn* context and one torch thread per worker, so a
cell's numbers equal the serial ones), :class:`SerialExecutor` in-process, or a
distributed engine (e.g. a ``dask.distributed`` or ``ray`` client exposing ``submit``)
plugged in later without touching the experiments: a cell is a top-level function of
its frozen config, both picklable.

:func:`run_cells` submits the cells that are not cached, writes each result to the cache
**in the parent process** as its future completes (so a crash or ``kill -9`` loses only
the cells still running), and reports progress on stderr: which cell finished, how many
are left. On Ctrl-C it keeps every cell that has finished, cancels the rest and raises
:class:`Interrupted` (a ``KeyboardInterrupt``) saying what was kept; :func:`stop_executor`
then ends a local pool at once instead of waiting for the running cells.

Every cell runs with one torch/BLAS thread, in a worker or in-process
(:class:`SerialExecutor`): a reduction's summation order, hence its last bits, depends on
the thread count, and the thread count is recorded in each cell's provenance.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from malleability.errors import require
from malleability.reports.audit.cache import CellCache, code_version, config_to_jsonable


@contextlib.contextmanager
def one_thread():
    """Run the body with one torch thread and one numpy BLAS thread (as a pool worker does), restoring
    the caller's counts after: numpy's SVDs and Grams round differently on two threads."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        yield
        return
    from malleability.empirics.blas import blas_threads

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with blas_threads():
            yield
    finally:
        torch.set_num_threads(before)


class SerialExecutor(cf.Executor):
    """Runs each submitted call immediately in this process, with one torch thread; returns a completed Future."""

    def __init__(self):
        self._shutdown = False

    def submit(self, fn, /, *args, **kwargs):  # noqa: D401 - Executor API
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        future: cf.Future = cf.Future()
        try:
            with one_thread():
                result = fn(*args, **kwargs)
        except BaseException as exc:  # KeyboardInterrupt must stop the run, not be stored
            if not isinstance(exc, Exception):
                raise
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True


def _exit_with_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    """Daemon thread: a worker whose parent was killed (kill -9) exits instead of computing for nobody."""
    import threading

    def watch():
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(threads: int, parent_pid: int | None = None) -> None:
    """One torch/BLAS thread per worker: the workers already fill the cores, and results match serial runs."""
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    from malleability.provenance import git_commit

    git_commit()  # the tree this worker imports now, not the one on disk when its first cell ends
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    from malleability.empirics.blas import hold_blas_threads

    hold_blas_threads(threads)  # numpy may have sized its pool before the variables above were set


def make_executor(workers: int, *, threads_per_worker: int = 1) -> cf.Executor:
    """``workers <= 1``: :class:`SerialExecutor`; else a spawn-context process pool."""
    if workers <= 1:
        return SerialExecutor()
    return cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads_per_worker, os.getpid()),
    )


_STOP_WAIT_S = 5.0


def stop_executor(executor: cf.Executor) -> None:
    """Stop now: cancel what has not started and, for a local process pool, terminate the running workers.

    Bounded in time whatever state the pool is in. The workers are terminated first, since that needs no
    lock of the pool's. ``shutdown`` then runs in a daemon thread that is waited on for a few seconds only:
    it takes the pool's shutdown lock and writes to its wake-up pipe, and a Ctrl-C that lands inside
    ``submit`` (a ``with lock`` is not signal-safe) or a full pipe can leave either blocked for good."""
    procs = list((getattr(executor, "_processes", None) or {}).values()) \
        if isinstance(executor, cf.ProcessPoolExecutor) else []
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    closer = threading.Thread(target=executor.shutdown, kwargs={"wait": False, "cancel_futures": True},
                              name="stop-executor", daemon=True)
    closer.start()
    closer.join(timeout=_STOP_WAIT_S)
    deadline = time.monotonic() + _STOP_WAIT_S
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if proc.is_alive():  # ignored SIGTERM (stuck in native code): nothing it holds is worth waiting for
            proc.kill()


def default_workers() -> int:
    """Local worker processes: one per core (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int) -> int:
    """``workers`` local processes, refused outside 1..4 per core: each loads torch, so thousands
    exhaust memory long before they speed anything up."""
    cap = 4 * default_workers()
    require(1 <= int(workers) <= cap, f"--workers must be in 1..{cap} (4 per core of this machine), got {workers}")
    return int(workers)


@dataclass(frozen=True)
class Cell:
    """One unit of work: ``fn(config)`` where ``fn`` is a top-level function, ``config`` a frozen dataclass."""

    kind: str
    config: Any
    fn: Callable[[Any], Any]
    label: str = ""
    tags: dict = field(default_factory=dict, compare=False, hash=False)  # what the report groups by

    def describe(self) -> str:
        return self.label or self.kind


def execute_cell(fn: Callable[[Any], Any], config: Any) -> dict:
    """Run one cell (in a worker): its result, wall time and provenance."""
    from malleability.provenance import provenance

    start = time.perf_counter()
    result = fn(config)
    wall = time.perf_counter() - start
    device = None
    train = getattr(config, "train", None)
    if train is not None:
        device = getattr(train, "device", None)
    prov = provenance(device=device or "cpu")
    try:
        import torch

        prov = {**prov, "threads": torch.get_num_threads()}
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    blas = _blas_threads()
    if blas is not None:
        prov["blas_threads"] = blas
    return {"result": result, "wall_time_s": wall, "provenance": prov}


def _blas_threads() -> dict[str, int] | None:
    """Each loaded BLAS library's thread count while the cell ran (its file name: numpy and scipy each load one)."""
    try:
        import threadpoolctl
    except ImportError:  # an environment installed before it was a dependency
        return None
    return {os.path.basename(i["filepath"]): int(i["num_threads"]) for i in threadpoolctl.threadpool_info()
            if i.get("user_api") == "blas"}


@dataclass
class CellOutcome:
    """What happened to one cell in a run."""

    cell: Cell
    key: str
    status: str  # 'cached' | 'computed' | 'failed'
    entry: dict | None = None  # the cache entry (result, config, wall time, provenance)
    error: str | None = None


@dataclass
class RunStats:
    cached: int = 0
    computed: int = 0
    failed: int = 0
    outcomes: list[CellOutcome] = field(default_factory=list)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_cells`; ``summary`` is one line saying what was kept."""

    def __init__(self, summary: str, *, kept: int, not_finished: int):
        super().__init__(summary)
        self.summary = summary
        self.kept = kept
        self.not_finished = not_finished


def _test_delay() -> None:
    """Test hook: $MALLEABILITY_AUDIT_TEST_DELAY seconds of sleep after each cached cell, so a test
    can kill -9 a run reliably between two cells. Unset in normal use."""
    delay = os.environ.get("MALLEABILITY_AUDIT_TEST_DELAY")
    if delay:
        time.sleep(float(delay))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Pace:
    """The time left: the predicted seconds of the unfinished cells x (measured / predicted seconds of
    the finished ones), spread over the workers; nothing without predictions."""

    def __init__(self, predicted: dict[int, float] | None, workers: int):
        self.left = dict(predicted or {})
        self.workers = max(1, int(workers))
        self.predicted_done = self.measured_done = 0.0

    def finished(self, index: int, seconds: float) -> None:
        if index in self.left:
            self.predicted_done += self.left.pop(index)
            self.measured_done += seconds

    def remaining(self) -> str:
        if self.predicted_done <= 0:
            return ""
        seconds = sum(self.left.values()) * self.measured_done / self.predicted_done / self.workers
        return f", about {seconds / 60:.1f} min left (cost model x measured pace {self.measured_done / self.predicted_done:.2f})"


def run_cells(
    cells: Iterable[Cell],
    executor: cf.Executor,
    cache: CellCache,
    *,
    fresh: bool = False,
    progress: Callable[[str], None] | None = _stderr,
    stop_on_error: bool = False,
    max_in_flight: int | None = None,
    code: dict | None = None,
    fingerprint: Callable[[Cell], str | None] | None = None,
    before_run: Callable[[list[Cell]], None] | None = None,
    predict: Callable[[Cell], float] | None = None,
    on_done: Callable[[Cell, dict], None] | None = None,
) -> RunStats:
    """Run ``cells``, reusing cached ones (unless ``fresh``), caching each result as it completes.

    ``fingerprint(cell)``: the fingerprint of the data the cell reads (None: it reads none),
    part of its cache key; a :class:`MalleabilityError` from it (data set unavailable) fails
    that cell without running it. ``before_run`` receives the cells to compute, before any
    starts. ``predict(cell)``: its predicted seconds (the cost model); with it each progress
    line estimates the time left, the prediction of the unfinished cells rescaled by the
    measured pace so far. ``on_done(cell, entry)`` is called with each computed cell's cache entry once it is
    stored. A cell that raises is recorded as ``failed`` with its one-line error (the others
    go on); with ``stop_on_error`` the first failure is re-raised. Outcomes come back in the
    order of ``cells``. Ctrl-C raises :class:`Interrupted` once the finished cells are cached.
    """
    from malleability.errors import MalleabilityError
    from malleability.reports.audit.cache import cell_key

    cells = list(cells)
    code = code_version() if code is None else code
    say = progress or (lambda _line: None)
    stats = RunStats()
    outcomes: dict[int, CellOutcome] = {}
    todo: list[tuple[int, Cell, str, str | None]] = []
    for i, cell in enumerate(cells):
        try:
            data = fingerprint(cell) if fingerprint is not None else None
        except MalleabilityError as exc:
            outcomes[i] = CellOutcome(cell, cell_key(cell.kind, cell.config, code), "failed", None,
                                      " ".join(f"MalleabilityError: {exc}".split())[:500])
            stats.failed += 1
            continue
        key = cell_key(cell.kind, cell.config, code, data)
        entry = None if fresh else cache.get(cell.kind, cell.config, code, data)
        if entry is not None:
            outcomes[i] = CellOutcome(cell, key, "cached", entry)
            stats.cached += 1
        else:
            todo.append((i, cell, key, data))
    total = len(todo)
    failed_before = stats.failed
    if cells:
        say(f"cells: {len(cells)} in all, {stats.cached} cached, {total} to run"
            + (f", {stats.failed} without their data" if stats.failed else ""))
    if before_run is not None:
        before_run([item[1] for item in todo])
    # A sliding window of submissions: a serial executor runs each cell at submit time, so
    # submitting everything first would cache nothing until the very end.
    window = max_in_flight or max(1, int(getattr(executor, "_max_workers", 1) or 1))
    pending: dict[cf.Future, tuple[int, Cell, str, str | None]] = {}
    queue = list(todo)
    done = 0
    t0 = time.perf_counter()
    in_hand: list = []  # the finished cell being cached right now, so Ctrl-C mid-write still keeps it
    workers = getattr(executor, "n_workers", None) or window  # a Dask cluster keeps two cells per worker in flight
    pace = _Pace({item[0]: predict(item[1]) for item in todo} if predict is not None else None, workers)

    def store(item, out) -> CellOutcome:
        i, cell, key, data = item
        entry = cache.put(cell.kind, cell.config, out["result"], wall_time_s=out["wall_time_s"],
                          provenance=out["provenance"], code=code, data=data)
        outcome = CellOutcome(cell, key, "computed", entry)
        outcomes[i] = outcome
        stats.computed += 1
        return outcome

    try:
        while queue or pending:
            while queue and len(pending) < window:
                item = queue.pop(0)
                if total:
                    say(f"[{done}/{total}] running {item[1].describe()}")
                pending[executor.submit(execute_cell, item[1].fn, item[1].config)] = item
            finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for future in finished:
                item = pending.pop(future)
                i, cell = item[0], item[1]
                done += 1
                try:
                    out = future.result()
                except Exception as exc:  # a failing cell is shown as missing, with why
                    if stop_on_error:
                        raise
                    message = " ".join(f"{type(exc).__name__}: {exc}".split())
                    if os.environ.get("MALLEABILITY_DEBUG"):
                        traceback.print_exception(exc)
                    outcomes[i] = CellOutcome(cell, item[2], "failed", None, message[:500])
                    stats.failed += 1
                    say(f"[{done}/{total}] FAILED {cell.describe()}: {message[:200]}")
                    continue
                in_hand[:] = [item, out]
                outcome = store(item, out)
                in_hand.clear()
                _test_delay()
                elapsed = time.perf_counter() - t0
                nan_note = outcome.entry.get("non_finite") or []
                pace.finished(i, float(out["wall_time_s"]))
                say(
                    f"[{done}/{total}] done {cell.describe()} in {out['wall_time_s']:.1f}s; "
                    f"{total - done} left, {elapsed:.0f}s elapsed{pace.remaining()}"
                    + (f" (note: {len(nan_note)} non-finite number(s) stored as null)" if nan_note else "")
                )
                if on_done is not None:
                    on_done(cell, outcome.entry)
    except KeyboardInterrupt:
        for future in pending:
            future.cancel()
        # Keep what is finished: the cell whose write was cut short, then any future that completed meanwhile.
        if in_hand and in_hand[0][0] not in outcomes:
            store(*in_hand)
        for future, item in pending.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                store(item, future.result())
        left = total - stats.computed - (stats.failed - failed_before)
        where = "in the cache" if cache.unwritable is None else "(the cache takes no writes: none stored)"
        raise Interrupted(
            f"interrupted: kept {stats.computed} cell(s) finished in this run {where} "
            f"({stats.cached} were cached before), {left} not finished; rerun the same command to resume",
            kept=stats.computed, not_finished=left) from None
    except BaseException:
        for future in pending:
            future.cancel()
        raise
    stats.outcomes = [outcomes[i] for i in range(len(cells))]
    return stats


__all__ = [
    "Cell",
    "CellOutcome",
    "Interrupted",
    "RunStats",
    "SerialExecutor",
    "config_to_jsonable",
    "default_workers",
    "execute_cell",
    "make_executor",
    "one_thread",
    "run_cells",
    "stop_executor",
]
