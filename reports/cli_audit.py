"""CLI commands for the audit part (registered into the root group by reports.cli).

``malleability audit [--scale quick|default|paper] [--out DIR] [--device auto|cpu|cuda]
[--fresh] [--workers N] [--data-root DIR] [--cache-dir DIR]``

``malleability report DIR``: re-render report.md/html and the PNGs from DIR/results.json.

Finished cells are cached in ``--cache-dir`` (default ``$MALLEABILITY_CACHE_DIR`` or
``~/.cache/malleability/audit-cells``), outside the output folder, so ``--out`` holds only
the report files (small enough to commit). Rerunning the same command resumes an
interrupted audit. Hidden options for tests and experiments: ``--scale tiny`` and
``--override PART.FIELD=VALUE`` (any field of the Scale dataclasses; tuples as comma lists).
"""

from __future__ import annotations

import os

import click

from malleability.errors import MalleabilityError, require


def register(main: click.Group, bench: click.Group) -> None:
    """Add this module's commands to the root group and the `bench` group."""

    @main.command("audit")
    @click.option("--scale", "scale_name", default="quick", show_default=True, metavar="quick|default|paper",
                  help="quick: CI-sized; default: the CPU reference run; paper: the paper's widths and epochs (GPU). "
                       "--dry-run prints each one's cells and its cost-model run time.")
    @click.option("--out", "out_dir", default="audit-out", show_default=True, type=click.Path(file_okay=False),
                  help="Folder for report.md, report.html, results.json and the PNG plots.")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                  help="Where the networks train (auto: cuda if available).")
    @click.option("--fresh", is_flag=True, help="Ignore the cache: recompute every cell (and overwrite its entry).")
    @click.option("--workers", type=int, default=None, help="Local worker processes (default: one per core; 1 on cuda).")
    @click.option("--data-root", default=None, type=click.Path(), help="Data folder (default: $MALLEABILITY_DATA).")
    @click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
                  help="Cell cache (default: $MALLEABILITY_CACHE_DIR or ~/.cache/malleability/audit-cells).")
    @click.option("--executor", "executor_kind", type=click.Choice(["local", "dask"]), default="local",
                  show_default=True,
                  help="local: processes on this machine; dask: a dask.distributed cluster (pip install '.[dask]').")
    @click.option("--scheduler", default=None, metavar="ADDRESS",
                  help="Dask scheduler (default $DASK_SCHEDULER_ADDRESS; unset: a local dask cluster of --workers "
                       "processes).")
    @click.option("--dry-run", is_flag=True, help="Print the plan (cells per kind) and the cost-model run time; run nothing.")
    @click.option("--override", "overrides", multiple=True, hidden=True, help="FIELD=VALUE of the scale (tests).")
    def audit_cmd(scale_name, out_dir, device, fresh, workers, data_root, cache_dir, executor_kind, scheduler, dry_run,
                  overrides):
        """Run every theory check and experiment at a scale; write a report beside the paper's numbers."""
        from malleability.reports.audit import get_scale, run_audit

        scale = get_scale(scale_name, overrides)
        from malleability.empirics.data import resolve_data_root

        resolve_data_root(data_root)  # an empty or file --data-root stops here, before any cell
        if workers is not None and workers < 1:
            raise MalleabilityError(f"--workers must be >= 1, got {workers}")
        if workers is not None and not (executor_kind == "dask" and (scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS"))):
            from malleability.reports.audit.executor import check_workers

            check_workers(workers)  # local processes (a remote scheduler's workers are not this machine's)
        if scheduler is not None and executor_kind != "dask":
            raise MalleabilityError("--scheduler needs --executor dask")
        address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
        if executor_kind == "dask" and address is not None:
            from malleability.reports.audit.dask_executor import check_address

            try:
                check_address(address)  # a dry run names the same bad address the run would
            except MalleabilityError as exc:
                if scheduler is None:  # it came from the environment: say so
                    raise MalleabilityError(str(exc).replace("--scheduler", "DASK_SCHEDULER_ADDRESS", 1)) from None
                raise
        if dry_run:
            from collections import Counter

            from malleability.reports.audit import estimate_seconds, plan_cells
            from malleability.reports.audit.executor import default_workers

            # the plan of the device asked for; the dry run itself needs no GPU
            from malleability.empirics.training import resolve_device

            plan_device = "cuda" if (resolve_device(device) if device == "auto" else device) == "cuda" else "cpu"
            cells = plan_cells(scale, device=plan_device, data_root=data_root).cells
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(Counter(c.kind for c in cells).items()))
            from malleability.reports.audit.cost_model import outside_fit

            for caveat in outside_fit(cells):  # before the estimate it qualifies, on stderr beside the progress
                click.echo(f"note: {caveat}", err=True)
            if plan_device == "cuda":
                from malleability.reports.audit.cost_model import CUDA_MEASURED_ON

                n_workers = workers or 1
                click.echo(f"scale {scale.name}: {len(cells)} cells ({kinds}); cost-model estimate "
                           f"{estimate_seconds(cells, n_workers) / 60:.1f} min on {n_workers} worker(s) with device "
                           f"cuda (the cells that train as measured on {CUDA_MEASURED_ON}; the rest on one CPU "
                           "thread of the model's host)")
                return
            from malleability.reports.audit.cost_model import machine_speed_factor

            n_workers = workers or default_workers()
            speed = machine_speed_factor()
            click.echo(f"scale {scale.name}: {len(cells)} cells ({kinds}); cost-model estimate "
                       f"{estimate_seconds(cells, n_workers) * speed / 60:.1f} min on {n_workers} CPU worker(s), one "
                       f"thread each (x{speed:.2f} for this CPU's pace on the pace probe, a short piece of the flip "
                       "cells' training, against the model's host)")
            return
        from malleability.empirics.training import resolve_device

        resolved = resolve_device(device)
        executor = close = None
        if executor_kind == "dask":
            from malleability.reports.audit.dask_executor import make_dask_executor

            executor, close = make_dask_executor(scheduler, n_workers=workers, data_root=data_root)
            workers = workers or max(1, executor.n_workers)
        try:
            results = run_audit(scale, out_dir, cache_dir=cache_dir, device=resolved, workers=workers, fresh=fresh,
                                data_root=data_root, overrides=tuple(overrides), executor=executor,
                                executor_name=executor_kind)
        finally:
            if close:
                close()
        counts = results["counts"]
        click.echo(f"wrote {out_dir}/report.md ({counts['computed']} cells computed, {counts['cached']} cached, "
                   f"{counts['failed']} failed, {counts['missing']} not run)")
        failed = [c for c in results["cells"] if c.get("status") == "failed"]
        if failed:
            # The report is written (failed cells are listed in it), but an incomplete audit must not look
            # like a finished one to a script: exit 2 when every failure is bad input (e.g. a missing data
            # set), 1 otherwise. A rerun retries only the failed cells.
            from malleability.reports.cli_common import one_line

            first = one_line(failed[0].get("error") or "unknown error")
            bad_input = all(str(c.get("error") or "").startswith("MalleabilityError") for c in failed)
            click.echo(f"error: audit incomplete, {len(failed)} cell(s) failed; first: {first}", err=True)
            raise click.exceptions.Exit(2 if bad_input else 1)

    @main.command("compare")
    @click.argument("dir_a", metavar="DIR_A")
    @click.argument("dir_b", metavar="DIR_B")
    @click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
    def compare_cmd(dir_a, dir_b, as_json):
        """Compare two audits (DIR_A/results.json, DIR_B/results.json) cell by cell: which cells, flip rates,
        accuracies and verdicts differ, e.g. the same plan on two machines."""
        import json

        from malleability.reports.audit import load_results
        from malleability.reports.audit.compare import compare_results, format_comparison

        from pathlib import Path

        same = Path(dir_a).resolve() == Path(dir_b).resolve()
        require(not same, f"{dir_a} and {dir_b} are the same folder: compare two audits (e.g. two machines or two commits)")
        docs = [load_results(d) for d in (dir_a, dir_b)]
        for d, doc in zip((dir_a, dir_b), docs):
            require("verdicts" in doc, f"{d}/results.json has no verdicts: `malleability report --resummarise {d}` "
                                       "computes them from its cells")
        cmp = compare_results(*docs)
        if not cmp["cells"]["common"]:
            raise MalleabilityError(f"{dir_a} and {dir_b} have no cell in common: not audits of one plan")
        click.echo(json.dumps(cmp, indent=2) if as_json else "\n".join(format_comparison(cmp)))

    @main.command("report")
    @click.argument("out_dir", metavar="DIR")
    @click.option("--resummarise", is_flag=True,
                  help="Recompute the summaries and verdicts from the stored cells (no experiment reruns) and "
                       "write them back into results.json.")
    def report_cmd(out_dir, resummarise):
        """Re-render DIR/report.md, report.html and the plots from DIR/results.json (no recomputation)."""
        from pathlib import Path

        from malleability.reports.audit import analyse, load_results
        from malleability.reports.audit.results import write_results
        from malleability.reports.audit.run import _render_whole

        results = load_results(out_dir)
        if resummarise or "summary" not in results or "verdicts" not in results:
            try:
                results.update(analyse(results))
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
                # an edited file: a field missing or of the wrong type (check_document vouches for the shapes it reads)
                raise MalleabilityError(f"{out_dir}/results.json: a cell lacks a field or holds a value of the "
                                        f"wrong type or out of range ({exc})") from None
            write_results(Path(out_dir), results)
        try:
            _render_whole(results, Path(out_dir))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            if _analysis_as_stored(results):  # the file is as an audit wrote it: a bug here, not bad input
                raise
            raise MalleabilityError(f"{out_dir}/results.json: its summary or verdicts were edited or damaged "
                                    f"({exc}); `malleability report --resummarise "
                                    f"{out_dir}` recomputes them from the cells") from None
        click.echo(f"wrote {out_dir}/report.md and {out_dir}/report.html")


def _analysis_as_stored(results: dict) -> bool:
    """Whether recomputing the summary and verdicts from the cells gives what results.json holds."""
    import copy
    import json

    from malleability.reports.audit import analyse
    from malleability.reports.audit.cache import non_finite_to_null

    try:
        fresh = analyse(copy.deepcopy(results))
    except Exception:  # noqa: BLE001 - cells that cannot be analysed are damaged too
        return False

    def canonical(value):
        return json.dumps(non_finite_to_null(value)[0], sort_keys=True, default=str)

    return all(canonical(fresh.get(k)) == canonical(results.get(k)) for k in ("summary", "verdicts"))
