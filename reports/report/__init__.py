"""The report: report.md, report.html and the plots, rendered from a results document alone.

Nothing here computes a statistic or imports the audit: every number shown is in
results.json, so ``malleability report DIR`` reproduces the audit's report byte for byte.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from malleability.reports.report import sections
from malleability.reports.report.html import to_html
from malleability.reports.report.markdown import Doc
from malleability.reports.report.plots import PLOTS


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def canonical(results: dict) -> dict:
    """The document as results.json stores it (sorted keys), so a fresh and a reloaded document render alike."""
    return json.loads(json.dumps(results, sort_keys=True, default=str))


def build_markdown(results: dict, plots: dict[str, bool]) -> str:
    results = canonical(results)
    doc = Doc()
    sections.header(doc, results)
    sections.verdicts(doc, results)
    sections.table1(doc, results, plots)
    sections.flip_tables(doc, results, plots)
    sections.eps_sweep(doc, results, plots)
    sections.limitations(doc, results, plots)
    sections.kappa(doc, results, plots)
    sections.k_layer(doc, results)
    sections.missing(doc, results)
    sections.scale_table(doc, results)
    return doc.text()


def render_report(results: dict, out_dir: str | os.PathLike) -> dict[str, bool]:
    """Write OUT/report.md, OUT/report.html and the PNGs; returns {plot name: written}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = canonical(results)
    plots: dict[str, bool] = {}
    for name, fn in PLOTS.items():
        tmp = out / f".{name}.tmp.png"
        try:
            written = fn(results, tmp)
        except (KeyError, TypeError, ValueError):
            written = False
        if written:
            os.replace(tmp, out / name)
        elif tmp.exists():
            tmp.unlink()
        plots[name] = bool(written)
    md = build_markdown(results, plots)
    _atomic_write(out / "report.md", md.encode("utf-8"))
    _atomic_write(out / "report.html", to_html(md, out, "malleability audit").encode("utf-8"))
    return plots


__all__ = ["build_markdown", "render_report"]
