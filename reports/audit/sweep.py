"""One experiment's sweep run as audit cells: what ``flip-rate``, ``ntk-distance`` and ``k-layer`` run.

Each config becomes the cell the audit would build for it, keyed the same way (kind, config,
code version, data fingerprint) in the same on-disk cache, so:

* a rerun after Ctrl-C, or after a crash, computes only the cells that had not finished;
* a cell computed by the command is reused by an audit that plans it, and the other way round;
* ``workers`` processes share the cells, each with one thread, and give the numbers one
  process gives;
* the progress lines estimate the time left from the cost model and the pace so far.
"""

from __future__ import annotations

import os
from typing import Callable

from malleability.errors import MalleabilityError, require
from malleability.reports.audit.cache import CellCache
from malleability.reports.audit.cells import RUNNERS
from malleability.reports.audit.executor import Cell, check_workers, make_executor, run_cells, stop_executor
from malleability.reports.audit.plan import cell_seconds, costliest_first
from malleability.reports.audit.run import _data_fingerprints, _fingerprint_of, announce_estimate, default_cache_dir


def run_sweep_cells(kind: str, configs: list, *, labels: list[str] | None = None, workers: int = 1,
                    cache_dir: str | os.PathLike | None = None, fresh: bool = False, device: str = "cpu",
                    progress: Callable[[str], None] | None = None,
                    on_done: Callable[[object, dict], None] | None = None) -> list[dict]:
    """The result rows of ``configs`` (cells of ``kind``), in the order of ``configs``.

    ``cache_dir``: default :func:`default_cache_dir` (the audit's). ``fresh``: recompute every
    cell (the new results replace the cached ones). ``on_done(config, row)`` after each computed
    cell. The first cell that fails raises its error; Ctrl-C raises
    :class:`~malleability.reports.audit.executor.Interrupted` once the finished cells are cached.
    """
    require(kind in RUNNERS, f"unknown cell kind {kind!r}")
    check_workers(workers)
    say = progress or (lambda _line: None)
    labels = labels or [f"{kind} {i}" for i in range(len(configs))]
    require(len(labels) == len(configs), "one label per config")
    cells = [Cell(kind, cfg, RUNNERS[kind], label) for cfg, label in zip(configs, labels)]
    cache = CellCache(cache_dir or default_cache_dir())  # silent for the probe: its refusal is the one line
    # a sweep has no results.json: the cache is where its finished cells survive an interrupt
    unwritable = cache.check_writable()
    require(unwritable is None, f"cache {unwritable}: the finished cells of this command are kept there, so an "
                                "interrupted run would lose them; give a writable --cache-dir (or $MALLEABILITY_CACHE_DIR)")
    cache = CellCache(cache.root, log=say)
    fingerprint = _fingerprint_of(_data_fingerprints(cells, say))
    workers = int(workers)
    executor = make_executor(min(workers, max(1, len(cells))))  # no idle processes

    def announce(uncached):
        if uncached:
            announce_estimate(uncached, min(workers, len(uncached)), device, executor, say, kind)

    def done(cell, entry):
        if on_done is not None:
            on_done(cell.config, entry["result"])

    try:
        stats = run_cells(costliest_first(cells), executor, cache, fresh=fresh, progress=say,
                          fingerprint=fingerprint, before_run=announce, predict=cell_seconds, on_done=done,
                          stop_on_error=True)
    except BaseException:
        stop_executor(executor)  # Ctrl-C or a failing cell: do not wait for the cells still running
        raise
    executor.shutdown(wait=True, cancel_futures=True)
    by_cell = {id(o.cell): o for o in stats.outcomes}
    rows = []
    for cell in cells:
        outcome = by_cell[id(cell)]
        if outcome.status == "failed":  # its data could not be read: the same one line the data loader gives
            raise MalleabilityError(outcome.error.removeprefix("MalleabilityError: "))
        rows.append(outcome.entry["result"])
    return rows


__all__ = ["run_sweep_cells"]
