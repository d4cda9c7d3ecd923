"""The executor layer: serial and process executors agree, results are cached as they complete."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from malleability.reports.audit.cache import CellCache
from malleability.reports.audit.executor import Cell, SerialExecutor, make_executor, run_cells

CALLS: list[int] = []


@dataclass(frozen=True)
class FakeConfig:
    seed: int
    size: int = 8


def fake_cell(cfg: FakeConfig) -> dict:
    """A deterministic torch computation: the same config gives bit-identical numbers."""
    import torch

    CALLS.append(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    a = torch.randn(cfg.size, cfg.size, generator=g, dtype=torch.float64)
    return {"seed": cfg.seed, "trace": float((a @ a.T).trace()), "norm": float(torch.linalg.matrix_norm(a))}


def failing_cell(cfg: FakeConfig) -> dict:
    raise ValueError(f"bad seed {cfg.seed}")


def interrupting_cell(cfg: FakeConfig) -> dict:
    raise KeyboardInterrupt


def _cells(seeds, fn=fake_cell):
    return [Cell("fake", FakeConfig(s), fn, f"fake seed={s}") for s in seeds]


def test_serial_executor_future_shape():
    ex = SerialExecutor()
    assert ex.submit(lambda x, y: x + y, 2, y=3).result() == 5
    fut = ex.submit(failing_cell, FakeConfig(1))
    assert isinstance(fut.exception(), ValueError)
    assert list(ex.map(lambda x: x * 2, [1, 2])) == [2, 4]
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(lambda: 1)


def test_run_cells_caches_and_rerun_recomputes_nothing(tmp_path):
    cache = CellCache(tmp_path)
    lines: list[str] = []
    CALLS.clear()
    stats = run_cells(_cells([1, 2, 3]), SerialExecutor(), cache, progress=lines.append)
    assert (stats.computed, stats.cached, stats.failed) == (3, 0, 0)
    assert CALLS == [1, 2, 3]
    assert any("3 to run" in line for line in lines) and any("0 left" in line for line in lines)
    CALLS.clear()
    again = run_cells(_cells([1, 2, 3]), SerialExecutor(), cache, progress=None)
    assert (again.computed, again.cached) == (0, 3) and CALLS == []
    assert [o.entry["result"] for o in again.outcomes] == [o.entry["result"] for o in stats.outcomes]
    fresh = run_cells(_cells([1, 2, 3]), SerialExecutor(), cache, fresh=True, progress=None)
    assert (fresh.computed, fresh.cached) == (3, 0) and CALLS == [1, 2, 3]


def test_failed_cell_is_recorded_and_others_go_on(tmp_path):
    cells = _cells([1]) + _cells([2], failing_cell) + _cells([3])
    stats = run_cells(cells, SerialExecutor(), CellCache(tmp_path), progress=None)
    assert [o.status for o in stats.outcomes] == ["computed", "failed", "computed"]
    assert stats.outcomes[1].error == "ValueError: bad seed 2"
    with pytest.raises(ValueError):
        run_cells(cells, SerialExecutor(), CellCache(tmp_path / "b"), progress=None, stop_on_error=True)


def test_interrupt_keeps_the_cells_finished_before_it(tmp_path):
    cache = CellCache(tmp_path)
    cells = _cells([1, 2]) + _cells([3], interrupting_cell) + _cells([4])
    with pytest.raises(KeyboardInterrupt):
        run_cells(cells, SerialExecutor(), cache, progress=None)
    assert cache.get("fake", FakeConfig(1)) is not None and cache.get("fake", FakeConfig(2)) is not None
    assert cache.get("fake", FakeConfig(4)) is None
    stats = run_cells(_cells([1, 2, 4]), SerialExecutor(), cache, progress=None)
    assert (stats.cached, stats.computed) == (2, 1)


def test_process_pool_equals_serial(tmp_path):
    """Spawned workers (one torch thread each) give bit-identical results to the in-process run."""
    serial = run_cells(_cells([5, 6, 7], ), SerialExecutor(), CellCache(tmp_path / "s"), progress=None)
    pool = make_executor(2)
    try:
        parallel = run_cells(_cells([5, 6, 7]), pool, CellCache(tmp_path / "p"), progress=None)
    finally:
        pool.shutdown()
    assert [o.entry["result"] for o in parallel.outcomes] == [o.entry["result"] for o in serial.outcomes]
    assert all(o.entry["provenance"]["versions"]["torch"] for o in parallel.outcomes)
    assert isinstance(make_executor(1), SerialExecutor)


def _blas_threads() -> list[int]:
    """The thread count of every loaded BLAS (numpy's OpenBLAS and scipy's own copy)."""
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    import threadpoolctl

    return sorted(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")


def threads_cell(cfg: FakeConfig) -> dict:
    import torch

    return {"threads": torch.get_num_threads(), "blas": _blas_threads()}


def test_serial_executor_computes_with_one_thread_and_restores_the_callers(tmp_path):
    """numpy's and scipy's BLAS too: a float64 SVD's last bits move with their thread count."""
    import threadpoolctl
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threadpoolctl.threadpool_limits(2, user_api="blas"):
            callers = _blas_threads()
            assert callers and set(callers) == {2}
            stats = run_cells(_cells([1], threads_cell), SerialExecutor(), CellCache(tmp_path), progress=None)
            assert stats.outcomes[0].entry["result"] == {"threads": 1, "blas": [1] * len(callers)}
            assert stats.outcomes[0].entry["provenance"]["threads"] == 1
            assert set(stats.outcomes[0].entry["provenance"]["blas_threads"].values()) == {1}
            assert torch.get_num_threads() == 2 and _blas_threads() == callers
    finally:
        torch.set_num_threads(before)


def test_pool_workers_hold_every_blas_to_one_thread(tmp_path):
    pool = make_executor(2)
    try:
        stats = run_cells(_cells([3], threads_cell), pool, CellCache(tmp_path), progress=None)
    finally:
        pool.shutdown()
    result = stats.outcomes[0].entry["result"]
    assert result["threads"] == 1 and result["blas"] and set(result["blas"]) == {1}
    assert set(stats.outcomes[0].entry["provenance"]["blas_threads"].values()) == {1}


def test_fingerprint_is_part_of_the_key_and_its_error_fails_the_cell(tmp_path):
    from malleability.errors import MalleabilityError

    cache = CellCache(tmp_path)
    seen: list[list[int]] = []

    def fp_a(cell):
        if cell.config.seed == 3:
            raise MalleabilityError("data root /nowhere not found")
        return "a"

    before = lambda todo: seen.append([c.config.seed for c in todo])  # noqa: E731
    stats = run_cells(_cells([1, 2, 3]), SerialExecutor(), cache, progress=None, fingerprint=fp_a, before_run=before)
    assert [o.status for o in stats.outcomes] == ["computed", "computed", "failed"]
    assert stats.outcomes[2].error == "MalleabilityError: data root /nowhere not found"
    assert seen == [[1, 2]] and all(o.entry["data_fingerprint"] == "a" for o in stats.outcomes[:2])
    CALLS.clear()
    same = run_cells(_cells([1, 2]), SerialExecutor(), cache, progress=None, fingerprint=lambda c: "a")
    assert (same.cached, same.computed) == (2, 0) and CALLS == []
    other = run_cells(_cells([1, 2]), SerialExecutor(), cache, progress=None, fingerprint=lambda c: "b")
    assert (other.cached, other.computed) == (0, 2) and CALLS == [1, 2]


def test_interrupt_says_what_was_kept(tmp_path):
    from malleability.reports.audit.executor import Interrupted

    cache = CellCache(tmp_path)
    run_cells(_cells([9]), SerialExecutor(), cache, progress=None)
    cells = _cells([9, 1, 2]) + _cells([3], interrupting_cell) + _cells([4, 5])
    with pytest.raises(Interrupted) as info:
        run_cells(cells, SerialExecutor(), cache, progress=None)
    assert (info.value.kept, info.value.not_finished) == (2, 3)
    assert "kept 2 cell(s)" in info.value.summary and "1 were cached before" in info.value.summary


def test_time_left_is_the_prediction_rescaled_by_the_measured_pace():
    from malleability.reports.audit.executor import _Pace

    pace = _Pace({0: 10.0, 1: 30.0, 2: 60.0}, workers=2)
    assert pace.remaining() == ""  # nothing measured yet: no estimate rather than a guess
    pace.finished(0, 20.0)  # twice as slow as predicted
    assert "1.5 min left" in pace.remaining() and "pace 2.00" in pace.remaining()  # (30 + 60) x 2 / 2 workers
    pace.finished(1, 15.0)  # 35 s measured for 40 s predicted
    assert f"{60 * 35 / 40 / 2 / 60:.1f} min left" in pace.remaining()
    assert _Pace(None, 2).remaining() == ""


def test_progress_lines_estimate_the_time_left_when_cells_are_predicted(tmp_path):
    lines: list[str] = []
    run_cells(_cells([1, 2, 3]), SerialExecutor(), CellCache(tmp_path), progress=lines.append, predict=lambda c: 1.0)
    done = [line for line in lines if " done " in line]
    assert len(done) == 3 and all("min left" in line for line in done)
    lines.clear()
    run_cells(_cells([4]), SerialExecutor(), CellCache(tmp_path), progress=lines.append)
    assert not any("min left" in line for line in lines)
