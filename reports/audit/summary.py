"""The audit's summary: the experiments' own summarisers applied to the audit's cells, per task.

Pure function of the cell records (so ``report --resummarise`` can recompute it). Each
experiment's cells of one task go through that experiment's ``summarise`` unchanged, so the
audit and the CLI give identical numbers for identical cells.
"""

from __future__ import annotations

from malleability.empirics.experiments import flip_rate, k_layer, ntk_distance
from malleability.empirics.experiments.widths import measured_widths
from malleability.reports.report.lookup import find_flip_cell

PRIMARY_NTK_READING = "after_vs_init_absolute"  # unnormalised, like the paper's magnitudes (45.1, 246.2)


def _ok(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r["kind"] == kind and r["status"] != "failed" and r.get("result")]


def _as_float(value):
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def summarise_widths(records: list[dict]) -> dict:
    """Rows per (task, n, view): the three κ readings, collinearity and the predicted widths (log10)."""
    rows, matches = [], []
    for c in _ok(records, "widths"):
        report = c["result"].get("report") or {}
        task = c["tags"]["task"]
        for m in report.get("paper_kappa_match") or []:
            matches.append({"task": task, **m})
        for entry in report.get("per_n", []):
            for view, body in (entry.get("views") or {}).items():
                cond, pred = body.get("conditioning", {}), body.get("predicted", {})
                v1_reading = "kappa_G" if _as_float(cond.get("log10_kappa_G")) is not None else "pseudo_kappa_G"
                rows.append({
                    "task": task, "n": entry.get("n"), "d": entry.get("d"), "features": view,
                    **{key: _as_float(cond.get(key)) for key in (
                        "kappa_G", "pseudo_kappa_G", "kappa_d", "log10_kappa_G", "log10_pseudo_kappa_G", "log10_kappa_d")},
                    "rel_error_bound": cond.get("rel_error_bound"),
                    "precision": cond.get("precision"), "rank": cond.get("rank"),
                    "collinearity": body.get("collinearity"),
                    "v1_reading": v1_reading,
                    "log10_v1": _as_float(((pred.get(v1_reading) or {}).get("v1") or {}).get("log10_width")),
                    "log10_v2": _as_float(((pred.get("kappa_d") or {}).get("v2") or {}).get("log10_width")),
                })
    return {"rows": rows, "paper_kappa_match": matches}


def summarise_k_layer(records: list[dict]) -> dict | None:
    """The k-layer experiment's own summary over the rows of all k-layer cells (every data set and n); None: none."""
    rows = [row for c in _ok(records, "k-layer") for row in c["result"].get("rows") or []]
    return k_layer.summarise(rows) if rows else None


def summarise(records: list[dict], *, eps: float = 0.1, baseline: str = "relu") -> dict:
    """{'ntk': {task: ntk summary}, 'flip': {task: flip summary}, 'widths': ..., 'measured_widths': ...,
    'k_layer': k-layer summary or None}."""
    ntk_rows: dict[str, list[dict]] = {}
    for c in _ok(records, "ntk-distance"):
        ntk_rows.setdefault(c["tags"]["task"], []).append(c["result"])
    flip_rows: dict[str, list[dict]] = {}
    for c in _ok(records, "flip-rate"):
        flip_rows.setdefault(c["tags"]["task"], []).append(c["result"])
    ntk = {task: ntk_distance.summarise(rows) for task, rows in sorted(ntk_rows.items())}
    flip = {task: flip_rate.summarise(rows, baseline=baseline) for task, rows in sorted(flip_rows.items())}
    measured = {task: measured_widths(s, eps) for task, s in ntk.items()}
    return {"ntk": ntk, "flip": flip, "widths": summarise_widths(records), "measured_widths": measured,
            "k_layer": summarise_k_layer(records), "primary_ntk_reading": PRIMARY_NTK_READING, "eps": eps}


def model_key(model: str, reading: str) -> str:
    """The summary's model key of a planned variant (see flip_rate.model_key)."""
    if reading in ("-", "raw", None):
        return model
    return f"{model}[attention_input={reading}]"


def readings_key(protocol: str = "paper", space: str = "pixel", recompute: str = "retrain", ntk_at: str = "trained") -> str:
    return f"space={space};recompute={recompute};ntk_at={ntk_at};protocol={protocol}"


def flip_cell(summary: dict, task: str, *, classes: str, attack: str, eps: float, adv: bool, model: str,
              reading: str, protocol: str = "paper", schedule: str = "constant") -> dict | None:
    """The summary cell of a planned variant; ``schedule`` picks the adversarial-training schedule (adv only)."""
    s = summary["flip"].get(task)
    if not s:
        return None
    fields = {"classes": classes, "attack": attack, "eps": float(eps), "model": model_key(model, reading),
              "readings": readings_key(protocol)}
    return find_flip_cell(s["cells"], fields, adv=adv, schedule=schedule)
