"""results.json: the audit's typed result document (schema :data:`SCHEMA`), built, written and read here.

The report is rendered from this document alone, so everything it shows is in it: the
summary, the verdicts with their criteria and outcome meanings, the paper's numbers, the
labels of models and data sets, every cell with its config and provenance.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from malleability.errors import MalleabilityError, require
from malleability.reports.audit import paper_numbers as P
from malleability.reports.audit.cache import atomic_write_json, cell_key, non_finite_to_null, strict_loads

SCHEMA = "malleability-audit/2"
MAX_LIST = 200  # longer raw arrays (spectra, loss histories) stay in the cache, not in results.json


def compact(value):
    """The value with any list longer than MAX_LIST replaced by an explicit, labelled summary."""
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            return {"truncated_list": True, "length": len(value), "head": value[:5], "tail": value[-5:],
                    "note": "full list in the cell cache entry (see key)"}
        return [compact(v) for v in value]
    return value


def analyse(results: dict) -> dict:
    """Summary and verdicts from the cells of a results document (pure; used by the audit and `report --resummarise`)."""
    # Their judges register with the verdicts' registry. The limitations first, as when the plan has imported them
    # already, so a resummarised document lists its verdicts in the audit's order.
    from malleability.reports.audit import limitations
    from malleability.reports.audit import k_layer_verdict
    from malleability.reports.audit.summary import summarise
    from malleability.reports.audit.verdicts import OUTCOMES, criteria, verdicts

    scale = results["scale"]
    summary = summarise(results["cells"], eps=scale["widths"]["eps"], baseline=scale["baseline"])
    return {"summary": summary, "verdicts": verdicts(results, summary),
            "criteria": {**criteria(), **limitations.criteria(), **k_layer_verdict.criteria()},
            "outcomes": {k: {"label": v[0], "meaning": v[1]} for k, v in OUTCOMES.items()}}


def build_results(*, scale: dict, records: list[dict], missing: list[dict], code: dict, options: dict,
                  started: float, estimate_s: float, counts: dict, cache_refusals, device: str,
                  estimate_speed_factor: float | None = None, estimate_speed_measure: str | None = None) -> dict:
    from malleability.empirics.models import labels
    from malleability.provenance import provenance
    from malleability.reports.audit.scales import scale_help

    results = {
        "schema": SCHEMA,
        "scale": scale,
        "scale_help": scale_help(),
        "options": options,
        "code_version": code,
        "provenance": provenance(device=device),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_time_s": time.time() - started,
        "estimate_s": estimate_s,
        "estimate_speed_factor": estimate_speed_factor,  # this CPU vs the cost model's host (None: not scaled)
        "estimate_speed_measure": estimate_speed_measure,  # "pace-probe"; results without the key: "gemm"
        "counts": counts,
        "cache_refusals": cache_refusals,
        "labels": {"models": labels(), "datasets": P.DATASET_LABELS},
        "paper_numbers": P.all_numbers(),
        "missing": missing,
        "cells": [{**r, "result": compact(r["result"])} for r in records],
    }
    results.update(analyse(results))
    return results


def write_results(out: Path, results: dict) -> None:
    """Write OUT/results.json whole or not at all, as strict JSON.

    A non-finite number (a summary over nothing, say) is written as null and its place listed
    under ``non_finite``; a folder that takes no writes (read-only, full disk) is a one-line
    MalleabilityError, and the temporary file is removed."""
    path = Path(out) / "results.json"
    clean, where = non_finite_to_null({k: v for k, v in results.items() if k != "non_finite"})
    clean["non_finite"] = where
    try:
        atomic_write_json(path, clean)
    except OSError as exc:
        raise MalleabilityError(f"cannot write {path}: {exc.strerror or exc}") from None
    results["non_finite"] = where


def load_results(out_dir: str | os.PathLike) -> dict:
    """results.json of an audit folder, or a one-line MalleabilityError."""
    out = Path(out_dir)
    require(out.is_dir(), f"not an audit folder: {out}")
    path = out / "results.json"
    require(path.is_file(), f"no results.json in {out}: an audit writes it when it finishes (one interrupted "
                            f"resumes from the cell cache when rerun with the same --scale and options), e.g. "
                            f"`malleability audit --scale SCALE --out {out}`")
    try:
        results = strict_loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MalleabilityError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise MalleabilityError(f"{path} is not valid JSON (damaged or edited); rerun the audit") from None
    except RecursionError:
        raise MalleabilityError(f"{path} nests too deeply to be an audit results file (damaged or edited)") from None
    require(isinstance(results, dict) and isinstance(results.get("cells"), list),
            f"{path} is not an audit results file")
    require(results.get("schema") == SCHEMA,
            f"{path} has schema {results.get('schema')!r}, this version reads {SCHEMA!r}: rerun the audit "
            "(finished cells are reused from the cache)")
    check_document(results, path)
    return results


# Result fields that are shares of points, checked on reading: an edited file must not feed a
# flip rate of 7 or an accuracy of -3 into a comparison or a report.
SHARE_FIELDS = (("flip_rate",), ("accuracy", "train"), ("accuracy", "test"), ("accuracy", "krr_test"),
                ("accuracy", "chance"), ("pattern_flip_share",), ("topk_overlap",), ("function_space_agreement",))
# Scalar result fields the summaries read, each with the range a run can produce (an edit outside it
# would be summarised silently: a width of -5 dropped from a slope's log-log fit).
COUNT_FIELDS = {"width": 1, "n_train": 1, "n_test": 1, "n_train_after": 1, "kernel_points": 1, "topk": 1,
                "threads": 1, "num_classes": 2, "seed": 0, "data_seed": 0, "n_attacked": 0, "n_flip_set": 0,
                "zero_rows_after_attack": 0}
NONNEGATIVE_FIELDS = ("eps", "weight_change", "final_train_loss")


# Top-level fields and their JSON types. A field an older audit did not write may be absent; one that is
# present must have its type, since `report` and `compare` read it without further checks.
TOP_LEVEL_TYPES = {"scale": dict, "cells": list, "options": dict, "provenance": dict, "code_version": dict,
                   "counts": dict, "labels": dict, "summary": dict, "verdicts": list, "criteria": dict,
                   "outcomes": dict, "scale_help": dict, "missing": list, "paper_numbers": list,
                   "cache_refusals": list, "non_finite": list, "started_at": str,
                   "wall_time_s": (int, float), "estimate_s": (int, float)}
REQUIRED = ("cells", "scale")
CELL_STATUSES = ("cached", "computed", "failed")  # what the executor writes of each cell
_FLOAT_MAX = 1.7976931348623157e308


def _first_huge_number(doc) -> str | None:
    """The path of the first integer beyond float64's range (every reader takes numbers as floats), else None.

    Iterative, so an edited file nested deeply costs no recursion."""
    stack = [(doc, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, f"{where}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > _FLOAT_MAX:
            return where.lstrip(".")
    return None


def check_document(results: dict, path) -> None:
    """The shapes that `compare` and `report` read, each wrong one a one-line MalleabilityError naming its place."""
    for key in REQUIRED:
        require(key in results, f"{path} has no {key!r} field: not an audit results file (edited or damaged)")
    for key, kind in TOP_LEVEL_TYPES.items():
        if key in results:
            value = results[key]
            names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            require(isinstance(value, kind) and not isinstance(value, bool),
                    f"{path}: {key} is {type(value).__name__ if value is not None else 'null'}, "
                    f"not {names.replace('dict', 'an object').replace('list', 'a list')} (edited or damaged)")
    require(results["cells"], f"{path} has no cells: nothing to report or compare (edited or damaged)")
    from malleability.reports.audit.cells import RUNNERS
    from malleability.reports.audit.scales import scale_shape_problem

    problem = scale_shape_problem(results["scale"])
    require(problem is None, f"{path}: {problem} (edited or damaged, or written by another version)")
    for key, count in (results.get("counts") or {}).items():
        require(isinstance(count, int) and not isinstance(count, bool) and count >= 0,
                f"{path}: counts.{key} = {count!r} is not a count >= 0 (edited or damaged)")
    huge = _first_huge_number(results)
    require(huge is None, f"{path}: {huge} is an integer beyond float64's range (edited or damaged)")
    seen: dict = {}
    for i, cell in enumerate(results["cells"]):
        if not isinstance(cell, dict):
            continue  # refused below, with the other shapes of a cell
        key = cell.get("key")
        require(isinstance(key, str) and key, f"{path}: cells[{i}].key is not a string (edited or damaged)")
        require(key not in seen, f"{path}: cells[{i}] repeats the key of cells[{seen.get(key)}] "
                                 "(one cell listed twice: edited or damaged)")
        seen[key] = i
    from malleability.reports.audit.verdicts import OUTCOMES

    outcomes = set(OUTCOMES)  # a claim's verdict and each reading's are labels of the same set
    for i, cell in enumerate(results["cells"]):
        where = f"{path}: cells[{i}]"
        require(isinstance(cell, dict), f"{where} is not an object (edited or damaged)")
        for key in ("kind", "label", "status"):
            require(isinstance(cell.get(key), str), f"{where} has no {key} string (edited or damaged)")
        require(cell["kind"] in RUNNERS, f"{where}.kind is {cell['kind']!r}, not a cell kind of this version "
                                         f"({', '.join(sorted(RUNNERS))}): edited or damaged")
        require(cell["status"] in CELL_STATUSES,
                f"{where}.status is {cell['status']!r}, not one of {', '.join(CELL_STATUSES)} (edited or damaged)")
        require(cell.get("config") is None or isinstance(cell["config"], dict), f"{where}.config is not an object")
        result = cell.get("result")
        require(result is None or isinstance(result, dict), f"{where}.result is not an object")
        if cell["status"] != "failed":
            require(isinstance(result, dict), f"{where} is {cell['status']} but has no result (edited or damaged)")
        if "code_version" in results and isinstance(cell.get("config"), dict):
            # the key is a digest of kind, config, code version and data: an edited config no longer matches it
            try:
                args = (cell["kind"], cell["config"], results["code_version"], cell.get("data_fingerprint"))
                keys = {cell_key(*args), cell_key(*args, legacy=True)}  # documents from before the root left the key
            except (TypeError, ValueError):
                keys = set()
            require(cell["key"] in keys, f"{where}.config does not match the cell's key: the config was edited "
                                        "after the run (edited or damaged)")
        for name, low in COUNT_FIELDS.items():
            value = result.get(name) if isinstance(result, dict) else None
            require(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= low),
                    f"{where}.result.{name} = {value!r} is not an integer >= {low} (edited or damaged)")
        for name in NONNEGATIVE_FIELDS:
            value = result.get(name) if isinstance(result, dict) else None
            require(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and math.isfinite(value) and value >= 0),
                    f"{where}.result.{name} = {value!r} is not a finite number >= 0 (edited or damaged)")
        value = result.get("spearman") if isinstance(result, dict) else None
        require(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and -1 <= value <= 1),
                f"{where}.result.spearman = {value!r} is not a correlation in [-1, 1] (edited or damaged)")
        for field in SHARE_FIELDS:
            value = result
            for key in field:
                value = value.get(key) if isinstance(value, dict) else None
            if value is None:
                continue
            name = ".".join(field)
            require(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1,
                    f"{where}.result.{name} = {value!r} is not a share in [0, 1] (edited or damaged)")
    verdicts = results.get("verdicts", [])
    require(isinstance(verdicts, list), f"{path}: verdicts is not a list")
    for i, v in enumerate(verdicts):
        where = f"{path}: verdicts[{i}]"
        require(isinstance(v, dict) and isinstance(v.get("claim"), str), f"{where} is not an object with a claim")
        require(v.get("verdict") is None or v["verdict"] in outcomes,
                f"{where}.verdict is {v.get('verdict')!r}, not one of {', '.join(sorted(outcomes))}")
        readings = v.get("readings")
        require(readings is None or (isinstance(readings, dict)
                                     and all(r is None or r in outcomes for r in readings.values())),
                f"{where}.readings is not an object of reading -> verdict ({', '.join(sorted(outcomes))})")
