"""Running the audit: plan, cache, executor, summary, verdicts, results.json, then the report.

``run_audit`` plans every cell of a :class:`Scale`, runs the uncached ones (costliest first)
through an executor with the on-disk cache, writes ``results.json`` atomically and renders
the report from that file's content alone.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable

from malleability.errors import MalleabilityError, require
from malleability.reports.audit.cache import CellCache, code_version, config_to_jsonable
from malleability.reports.audit.executor import default_workers, make_executor, run_cells
from malleability.reports.audit.plan import Plan, costliest_first, estimate_seconds, plan_cells
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


def _prefetch_data(cells, say: Callable[[str], None]) -> None:
    """Load each data set once in this process before the workers start.

    On a fresh machine this is where torchvision downloads (once, into the user cache),
    instead of several workers racing to download the same files. A data set that cannot
    be loaded is reported here and its cells fail with the same one-line reason.
    """
    from malleability.empirics.data import DataConfig, load_dataset

    seen = set()
    for cell in cells:
        data = getattr(cell.config, "data", None)
        if data is None or (data.dataset, data.data_root) in seen:
            continue
        seen.add((data.dataset, data.data_root))
        try:
            load_dataset(DataConfig(dataset=data.dataset, n=1, n_test=1, data_root=data.data_root))
        except MalleabilityError as exc:
            say(f"audit: data set {data.dataset} unavailable: {exc}")


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
) -> dict:
    """Run (or resume) the audit and write OUT/results.json (+ the report unless ``render`` is False)."""
    say = progress or (lambda _l: None)
    out = Path(out_dir)
    require(not out.exists() or out.is_dir(), f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    cache = CellCache(cache_dir or default_cache_dir(), log=say)
    workers = workers if workers is not None else (1 if device == "cuda" else default_workers())
    require(workers >= 1, f"--workers must be >= 1, got {workers}")
    plan = plan or plan_cells(scale, device=device, data_root=data_root)
    started = time.time()
    say(f"audit: scale {scale.name}, {len(plan.cells)} cells, {workers} worker(s), device {device}, cache {cache.root}")
    code = code_version()  # once per run: every cell of this run is keyed by the same code version
    foreign = cache.count_foreign(sorted({c.kind for c in plan.cells}), code)
    if foreign:
        say(f"cache: ignoring {foreign} entries written by another code version")
    if not fresh:
        quiet = CellCache(cache.root)  # refusals are logged once, by run_cells below
        uncached = [c for c in plan.cells if quiet.get(c.kind, c.config, code) is None]
    else:
        uncached = list(plan.cells)
    _prefetch_data(uncached, say)
    est = estimate_seconds(uncached, workers)
    say(f"audit: {len(uncached)} cells to compute; estimate {est / 60:.1f} min on {workers} worker(s) "
        "(from the per-cell cost model of a 2-core CPU; a GPU is faster, a busy machine slower)")
    own_executor = executor is None
    executor = executor or make_executor(workers)
    try:
        stats = run_cells(costliest_first(plan.cells), executor, cache, fresh=fresh, progress=say, code=code)
    finally:
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
        })
    missing = list(plan.missing) + [
        {"kind": r["kind"], "label": r["label"], "why": f"failed: {r['error']}"} for r in records if r["status"] == "failed"]
    results = build_results(
        scale=dataclasses.asdict(scale), records=records, missing=missing, code=code,
        options={"device": device, "workers": workers, "fresh": fresh, "data_root": data_root,
                 "cache_dir": str(cache.root), "overrides": list(overrides)},
        started=started, estimate_s=est,
        counts={"cells": len(records), "cached": stats.cached, "computed": stats.computed, "failed": stats.failed,
                "missing": len(plan.missing)},
        cache_refusals=cache.refusals, device=device)
    write_results(out, results)
    say(f"audit: {stats.computed} computed, {stats.cached} from cache, {stats.failed} failed; wrote {out / 'results.json'}")
    if render:
        from malleability.reports.report import render_report

        render_report(results, out)
        say(f"audit: wrote {out / 'report.md'} and {out / 'report.html'}")
    return results


__all__ = ["SCHEMA", "default_cache_dir", "run_audit"]
