"""Two audits of the same plan side by side: which cells and verdicts moved, and by how much.

Pure: takes two results.json documents, returns a JSON-ready dict. Cells are matched by kind,
label and config (the data root aside), not by cache key, because the key changes with the
code version and the data path while the cell does not. Use it to measure how far another
machine, precision or code version moves the numbers of the same cells.
"""

from __future__ import annotations

import math
from typing import Any

from malleability.reports.audit.cache import canonical_json, computed_config

# data_root: where the rows were read from (a widths report echoes its config), not what was computed
IGNORED_RESULT_KEYS = frozenset({"timing_s", "threads", "wall_time_s", "provenance", "finished_at", "data_root"})
# Result keys added after a results document could have been written: a side without one did not record it,
# which is no difference (both sides holding it are compared as usual)
ADDED_RESULT_KEYS = frozenset({"measured_digits", "unmeasured_reason"})


# Config fields added after a results document could have been written, per cell kind, with the
# value that reproduces the earlier behaviour: a config without them is the same cell.
ADDED_CONFIG_FIELDS = {"flip-rate": {"adv_train_schedule": "constant", "adv_train_ramp_epochs": None}}


def _cell_id(cell: dict) -> str:
    config = {**ADDED_CONFIG_FIELDS.get(cell.get("kind"), {}), **(cell.get("config") or {})}
    # where the data was read from is not what was computed: the same rows under another root are the same cell
    return canonical_json({"kind": cell.get("kind"), "label": cell.get("label"), "config": computed_config(config)})


def _differs(x: Any, y: Any) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):
        keys = (set(x) | set(y)) - IGNORED_RESULT_KEYS - (ADDED_RESULT_KEYS - (set(x) & set(y)))
        return any(_differs(x.get(k), y.get(k)) for k in keys)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) != len(y) or any(_differs(u, v) for u, v in zip(x, y))
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return False
    return x != y


def _number(result: dict | None, *path: str) -> float | None:
    value: Any = result
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _moved(pairs: list[tuple[float, float]]) -> dict:
    diffs = [abs(a - b) for a, b in pairs]
    changed = [d for d in diffs if d != 0]
    return {"cells": len(pairs), "changed": len(changed),
            "changed_share": len(changed) / len(pairs) if pairs else None,
            "mean_abs_change_of_changed": sum(changed) / len(changed) if changed else 0.0,
            "max_abs_change": max(diffs) if diffs else 0.0}


def compare_results(a: dict, b: dict) -> dict:
    """Cells in common and how many differ per kind; how far flip rates and test accuracies moved;
    every claim whose verdict or a reading's verdict differs (a -> b)."""
    cells_a = {_cell_id(c): c for c in a.get("cells", []) if c.get("status") in ("computed", "cached")}
    cells_b = {_cell_id(c): c for c in b.get("cells", []) if c.get("status") in ("computed", "cached")}
    common = sorted(set(cells_a) & set(cells_b))
    per_kind: dict[str, dict[str, int]] = {}
    flip, acc = [], []
    for key in common:
        ca, cb = cells_a[key], cells_b[key]
        row = per_kind.setdefault(ca["kind"], {"identical": 0, "differ": 0})
        row["differ" if _differs(ca.get("result"), cb.get("result")) else "identical"] += 1
        if ca["kind"] == "flip-rate":
            fa, fb = _number(ca.get("result"), "flip_rate"), _number(cb.get("result"), "flip_rate")
            if fa is not None and fb is not None:
                flip.append((fa, fb))
            ta, tb = (_number(c.get("result"), "accuracy", "test") for c in (ca, cb))
            if ta is not None and tb is not None:
                acc.append((ta, tb))
    verdicts_a = {v["claim"]: v for v in a.get("verdicts", []) if isinstance(v, dict) and "claim" in v}
    verdicts_b = {v["claim"]: v for v in b.get("verdicts", []) if isinstance(v, dict) and "claim" in v}
    changed = []
    for claim in sorted(set(verdicts_a) | set(verdicts_b)):
        va, vb = verdicts_a.get(claim, {}), verdicts_b.get(claim, {})
        ra, rb = va.get("readings") or {}, vb.get("readings") or {}
        readings = {name: [ra.get(name), rb.get(name)] for name in sorted(set(ra) | set(rb))
                    if ra.get(name) != rb.get(name)}
        if va.get("verdict") != vb.get("verdict") or readings:
            changed.append({"claim": claim, "verdict": [va.get("verdict"), vb.get("verdict")],
                            "readings": readings})
    return {
        "cells": {"a": len(cells_a), "b": len(cells_b), "common": len(common),
                  "only_a": len(set(cells_a) - set(cells_b)), "only_b": len(set(cells_b) - set(cells_a))},
        "per_kind": dict(sorted(per_kind.items())),
        "flip_rate": _moved(flip),
        "test_accuracy": _moved(acc),
        "verdicts_changed": changed,
        "machines": [((r.get("provenance") or {}).get("machine") or {}).get("cpu") for r in (a, b)],
        "scales": [_scale_label(r) for r in (a, b)],
    }


def _scale_label(results: dict) -> str:
    """The scale's name with any overrides, e.g. ``tiny [flip.n=40]``."""
    name = str((results.get("scale") or {}).get("name"))
    overrides = (results.get("options") or {}).get("overrides") or []
    return f"{name} [{', '.join(map(str, overrides))}]" if overrides else name


def format_comparison(cmp: dict) -> list[str]:
    """The comparison as lines of text."""
    c = cmp["cells"]
    lines = [f"cells: {c['common']} in common ({c['only_a']} only in A, {c['only_b']} only in B); "
             f"machines: A {cmp['machines'][0]}, B {cmp['machines'][1]}"]
    scale_a, scale_b = cmp.get("scales") or (None, None)
    if scale_a != scale_b:
        lines.append(f"scales differ: A {scale_a}, B {scale_b} (their verdicts rest on different cells; a change "
                     "below is not a change of the same measurement)")
    for kind, row in cmp["per_kind"].items():
        lines.append(f"  {kind}: {row['identical']} identical, {row['differ']} differ")
    for name in ("flip_rate", "test_accuracy"):
        m = cmp[name]
        if m["cells"]:
            lines.append(f"{name.replace('_', ' ')}: {m['changed']} of {m['cells']} flip cells changed "
                         f"({100 * m['changed_share']:.0f}%), by {m['mean_abs_change_of_changed']:.3f} on average, "
                         f"{m['max_abs_change']:.3f} at most")
    if not cmp["verdicts_changed"]:
        lines.append("verdicts: all the same")
    for v in cmp["verdicts_changed"]:
        def shown(x):
            return "absent" if x is None else x

        moved = ", ".join(f"{name} {shown(x)} -> {shown(y)}" for name, (x, y) in v["readings"].items())
        lines.append(f"verdict {v['claim']}: {shown(v['verdict'][0])} -> {shown(v['verdict'][1])}"
                     + (f" ({moved})" if moved else ""))
    return lines
