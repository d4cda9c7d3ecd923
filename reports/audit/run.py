"""Running the audit: plan, cache, executor, summary, verdicts, results.json, then the report.

``run_audit`` plans every cell of a :class:`Scale`, fingerprints the data each cell reads
(once per distinct data config, in this process), runs the uncached ones (costliest first)
through an executor with the on-disk cache, writes ``results.json`` atomically and renders
the report from that file's content alone, into a temporary folder whose files are then
moved into place, so that a full disk leaves no half-written file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from malleability.errors import MalleabilityError, require
from malleability.provenance import git_commit
from malleability.reports.audit.cache import CellCache, code_version, config_to_jsonable
from malleability.reports.audit.cost_model import SPEED_MEASURE, machine_speed_factor, outside_fit
from malleability.reports.audit.executor import check_workers, default_workers, make_executor, run_cells, stop_executor
from malleability.reports.audit.plan import Plan, cell_seconds, costliest_first, estimate_seconds, plan_cells
from malleability.reports.audit.results import SCHEMA, build_results, write_results
from malleability.reports.audit.scales import Scale


def default_cache_dir() -> Path:
    """$MALLEABILITY_CACHE_DIR, else $XDG_CACHE_HOME/malleability/audit-cells, else ~/.cache/...."""
    env = os.environ.get("MALLEABILITY_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "malleability" / "audit-cells"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _hash_dataset(ds) -> str:
    """SHA-256 over the rows and labels of a loaded data set (shapes and dtypes included)."""
    import numpy as np

    digest = hashlib.sha256()
    for arr in (ds.pixels_train, ds.y_train, ds.pixels_test, ds.y_test):
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype.str}{arr.shape}\0".encode())
        digest.update(arr.tobytes())
    digest.update(f"{ds.num_classes}\0{list(ds.class_names)}".encode())
    return digest.hexdigest()


def data_fingerprint(cfg) -> str:
    """The fingerprint of the rows a data config loads: the data module's own when it has one."""
    from malleability.empirics import data as D

    own = getattr(D, "data_fingerprint", None)
    if own is not None:
        return str(own(cfg))
    ds = D.load_dataset(cfg)
    fp = getattr(ds, "fingerprint", None)
    return str(fp) if fp is not None else _hash_dataset(ds)


def _data_fingerprints(cells, say: Callable[[str], None]) -> dict[str, str | MalleabilityError]:
    """Each distinct data config of these cells -> its fingerprint, or the error that loading it raised.

    Loading here, once, in this process, before the workers start, is also where torchvision
    downloads on a fresh machine (once, into the user cache) instead of several workers racing.
    """
    from malleability.reports.audit.cache import canonical_json
    from malleability.reports.audit.cells import data_of

    out: dict[str, str | MalleabilityError] = {}
    reported = set()
    for cell in cells:
        data = data_of(cell.config)
        if data is None:
            continue
        key = canonical_json(data)
        if key in out:
            continue
        try:
            out[key] = data_fingerprint(data)
        except MalleabilityError as exc:
            out[key] = exc
            if (data.dataset, data.data_root) not in reported:
                reported.add((data.dataset, data.data_root))
                say(f"audit: data set {data.dataset} unavailable: {exc}")
    return out


def _fingerprint_of(fingerprints: dict):
    from malleability.reports.audit.cache import canonical_json
    from malleability.reports.audit.cells import data_of

    def fingerprint(cell) -> str | None:
        data = data_of(cell.config)
        if data is None:
            return None
        fp = fingerprints[canonical_json(data)]
        if isinstance(fp, MalleabilityError):
            raise fp
        return fp

    return fingerprint


def announce_estimate(uncached, workers: int, device: str, executor, say: Callable[[str], None],
                      prefix: str) -> tuple[float, float | None]:
    """Say the cost-model run time of the cells still to compute; (seconds, the CPU speed factor or None).

    On the CPU the model's seconds are scaled by this CPU's measured pace (:func:`machine_speed_factor`:
    a short piece of the flip cells' training against the model's host), or the Dask workers' median.
    """
    where, speed = "this CPU's", None
    if device == "cpu" and uncached:
        remote = getattr(executor, "speed_factor", None)  # workers elsewhere (dask) measure their own CPUs
        speed = remote() if callable(remote) else None
        if speed is not None:
            where = "the workers' (median)"
        else:
            speed = machine_speed_factor()
    est = estimate_seconds(uncached, workers) * (speed or 1.0)
    if device.startswith("cuda"):
        from malleability.reports.audit.cost_model import CUDA_MEASURED_ON

        source = (f"the per-cell cost model measured on {CUDA_MEASURED_ON} for the cells that train; "
                  "another card or a busy one differs")
    else:
        scaled = f", x{speed:.2f} for {where} measured pace on the pace probe" if speed is not None else ""
        source = f"the per-cell cost model of a 2-core reference CPU{scaled}; a busy machine is slower"
    say(f"{prefix}: {len(uncached)} cells to compute; estimate {est / 60:.1f} min on {workers} worker(s) (from {source})")
    for caveat in outside_fit(uncached):
        say(f"{prefix}: {caveat}")
    return est, speed


def _render_whole(results: dict, out: Path) -> None:
    """Render into a temporary folder inside ``out``, then move each file into place (whole files only).

    A target that is a folder where a file goes (or a file where a folder goes) is refused before
    anything moves: replacing it would delete what the user keeps there."""
    from malleability.reports.report import render_report

    out = Path(out)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".render-", dir=out))
        render_report(results, tmp)
        items = sorted(tmp.iterdir())
        for item in items:
            target = out / item.name
            require(not (target.exists() or target.is_symlink()) or target.is_dir() == item.is_dir(),
                    f"cannot write the report into {out}: {target} is {'a folder' if target.is_dir() else 'a file'}"
                    f", not the {'folder' if item.is_dir() else 'file'} the report writes there")
        for item in items:
            target = out / item.name
            if item.is_dir() and target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    except OSError as exc:
        raise MalleabilityError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _prepare_out(out: Path) -> None:
    """Create the output folder and prove it takes writes before any cell runs.

    Without the probe a read-only or full --out would surface only when results.json is written,
    after the whole run (its cells are cached, but the reader gets a failure at the end)."""
    require(not out.exists() or out.is_dir(), f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise MalleabilityError(f"--out {out} cannot be written: {exc.strerror or exc}") from None


def run_audit(
    scale: Scale,
    out_dir: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    workers: int | None = None,
    fresh: bool = False,
    data_root: str | None = None,
    executor=None,
    plan: Plan | None = None,
    progress: Callable[[str], None] | None = _stderr,
    render: bool = True,
    overrides: tuple[str, ...] = (),
    executor_name: str = "local",
) -> dict:
    """Run (or resume) the audit and write OUT/results.json (+ the report unless ``render`` is False)."""
    say = progress or (lambda _l: None)
    out = Path(out_dir)
    cache_root = Path(cache_dir or default_cache_dir())
    # the report's files among the cache's kind folders: --fresh or a cache clean-up would take the report with it
    o, c = out.resolve(), cache_root.resolve()
    require(o != c and c not in o.parents, f"--out {out} is inside the cell cache {cache_root}: give the report its own folder")
    _prepare_out(out)
    cache = CellCache(cache_root, log=say)
    workers = workers if workers is not None else (1 if device == "cuda" else default_workers())
    if executor is None:  # local processes; a given (e.g. Dask) executor's workers are elsewhere
        check_workers(workers)
    require(workers >= 1, f"--workers must be >= 1, got {workers}")
    plan = plan or plan_cells(scale, device=device, data_root=data_root)
    started = time.time()
    say(f"audit: scale {scale.name}, {len(plan.cells)} cells, {workers} worker(s), device {device}, cache {cache.root}")
    code = code_version()  # once per run: every cell of this run is keyed by the same code version
    git_commit()  # the provenance names the commit this run started from, even if the tree changes during it
    foreign = cache.count_foreign(sorted({c.kind for c in plan.cells}), code)
    if foreign:
        say(f"cache: ignoring {foreign} entries written by another code version")
    cache.check_writable()
    fingerprint = _fingerprint_of(_data_fingerprints(plan.cells, say))
    est, speed = 0.0, None

    def announce(uncached):
        nonlocal est, speed
        est, speed = announce_estimate(uncached, workers, device, executor, say, "audit")

    own_executor = executor is None
    executor = executor or make_executor(workers)
    try:
        stats = run_cells(costliest_first(plan.cells), executor, cache, fresh=fresh, progress=say, code=code,
                          fingerprint=fingerprint, before_run=announce, predict=cell_seconds)
    except BaseException:
        if own_executor:  # Ctrl-C or a crash: do not wait for the cells still running
            stop_executor(executor)
        raise
    if own_executor:
        executor.shutdown(wait=True, cancel_futures=True)
    order = {id(c): i for i, c in enumerate(plan.cells)}
    records = []
    for o in sorted(stats.outcomes, key=lambda o: order.get(id(o.cell), 0)):
        entry = o.entry or {}
        result = entry.get("result")
        if isinstance(result, dict):
            result = {k: v for k, v in result.items() if k not in ("config", "provenance")}
        records.append({
            "kind": o.cell.kind, "label": o.cell.label, "key": o.key, "status": o.status, "tags": dict(o.cell.tags),
            "config": config_to_jsonable(o.cell.config), "result": result,
            "wall_time_s": entry.get("wall_time_s"), "provenance": entry.get("provenance"),
            "finished_at": entry.get("finished_at"), "error": o.error,
            "data_fingerprint": entry.get("data_fingerprint"), "non_finite": entry.get("non_finite") or [],
        })
    missing = list(plan.missing) + [
        {"kind": r["kind"], "label": r["label"], "why": f"failed: {r['error']}"} for r in records if r["status"] == "failed"]
    results = build_results(
        scale=dataclasses.asdict(scale), records=records, missing=missing, code=code,
        options={"device": device, "workers": workers, "fresh": fresh, "data_root": data_root,
                 "cache_dir": str(cache.root), "overrides": list(overrides),
                 "executor": executor_name},
        started=started, estimate_s=est, estimate_speed_factor=speed,
        estimate_speed_measure=SPEED_MEASURE if speed is not None else None,
        counts={"cells": len(records), "cached": stats.cached, "computed": stats.computed, "failed": stats.failed,
                "missing": len(plan.missing)},
        cache_refusals=cache.refusals, device=device)
    results["cache_unwritable"] = cache.unwritable_report()
    write_results(out, results)
    say(f"audit: {stats.computed} computed, {stats.cached} from cache, {stats.failed} failed; wrote {out / 'results.json'}")
    if render:
        _render_whole(results, out)
        say(f"audit: wrote {out / 'report.md'} and {out / 'report.html'}")
    return results


__all__ = ["SCHEMA", "announce_estimate", "default_cache_dir", "run_audit"]
