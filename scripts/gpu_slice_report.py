"""Merge the output folders of scripts/gpu_paper_slice.sh runs into one folder with a README and a plot.

    python scripts/gpu_slice_report.py OUT SLICE_DIR [SLICE_DIR ...]

Each slice folder holds ntk-mnist-paper.json, ntk-mnist-lazy.json, flip-mnist.json (or their
-seedS parts) and machine.txt. Rows are merged by cell (a cell found twice must agree), and every
summary, interval and slope is recomputed by the experiments' own summaries, so the numbers here
are the ones `malleability ntk-distance` and `flip-rate` would print for the merged seeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from malleability.empirics.experiments import ntk_distance
from malleability.empirics.experiments import flip_rate
from malleability.empirics.models import labels
from malleability.reports.audit import paper_numbers as P
from malleability.reports.cli_common import dump
from malleability.reports.report.lookup import PRIMARY
from malleability.reports.report.plots import plot_ntk

NTK_KEY = ("model", "protocol", "width", "seed")
FLIP_KEY = ("attack", "eps", "model", "seed", "adv_train")


def _key(row: dict, fields) -> tuple:
    protocol = (row.get("train_settings") or {}).get("protocol", row.get("protocol"))
    return tuple(protocol if f == "protocol" else row.get(f) for f in fields)


def _without_timing(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("timing_s", "threads")}


def merge(parts: list[dict], fields) -> tuple[list[dict], list[dict]]:
    rows: dict = {}
    for part in parts:
        for row in part["rows"]:
            key = _key(row, fields)
            if key in rows and _without_timing(rows[key]) != _without_timing(row):
                raise SystemExit(f"error: cell {key} differs between two slices")
            rows.setdefault(key, row)
    provs = []
    for part in parts:  # a slice's one provenance, or the list of an earlier merge given back as a slice
        prov = part.get("provenance")
        provs.extend(prov if isinstance(prov, list) else [prov])
    return [rows[k] for k in sorted(rows, key=str)], provs


class SliceError(Exception):
    """A slice folder or file this script cannot use; main() prints it on one line and exits 2."""


def _read_slice(path: Path, fields) -> dict:
    """One slice file: a JSON object whose "rows" are objects carrying every field of the merge key."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SliceError(f"{path}: not a readable JSON file ({' '.join(str(exc).split())})") from None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise SliceError(f'{path}: expected an object with a list of row objects under "rows"')
    for n, row in enumerate(rows):
        lacking = [f for f in fields if f != "protocol" and f not in row]
        if lacking:
            raise SliceError(f"{path}: row {n} lacks {', '.join(lacking)}")
    return doc


def _parts(dirs: list[Path], name: str, fields) -> list[dict]:
    found = []
    for d in dirs:
        for path in sorted(d.glob(f"{name}.json")) + sorted(d.glob(f"{name}-seed*.json")):
            found.append(_read_slice(path, fields))
    return found


def _f(x, digits=3):
    return "–" if x is None else f"{x:.{digits}g}"


def _ci(ci):
    return "–" if not ci else f"[{_f(ci[0])}, {_f(ci[1])}]"


def _cost_model_lines(ntk_docs: dict, flip_doc: dict | None) -> list[str]:
    """How the committed CUDA cost model prices these cells and the whole paper plan; prints a fresh fit."""
    import numpy as np

    from malleability.reports.audit import get_scale
    from malleability.reports.audit.calibrate import cells_from_rows, fit_device
    from malleability.reports.audit.cost_model import CUDA_COEFFICIENTS, CUDA_MEASURED_ON, cell_seconds
    from malleability.reports.audit.plan import estimate_seconds, plan_cells

    ntk = [p for d in ntk_docs.values() for p in cells_from_rows("ntk-distance", d["rows"])]
    flip = cells_from_rows("flip-rate", flip_doc["rows"]) if flip_doc else []
    if len(ntk) < 4:
        return []
    fresh = fit_device(ntk, flip)
    same = all(np.allclose(CUDA_COEFFICIENTS[k], fresh[k], rtol=5e-4, atol=1e-15) for k in CUDA_COEFFICIENTS
               if k in fresh)
    print("fit_device of these cells:", {k: tuple(float(f"{v:.4g}") for v in c) if k != "ratios" else c
                                         for k, c in fresh.items()})
    pairs = ntk + flip
    ratio = np.array([cell_seconds(c) / s for c, s in pairs])
    total = sum(cell_seconds(c) for c, _ in pairs) / sum(s for _, s in pairs)
    plan = plan_cells(get_scale("paper"), device="cuda").cells
    whole = estimate_seconds(plan, 1)
    adv = sum(cell_seconds(c) for c in plan if getattr(c.config, "adv_train", False)) / max(whole, 1e-9)
    return [f"The audit's cost model for cells that train on CUDA (`cost_model.CUDA_COEFFICIENTS`, measured on "
            f"{CUDA_MEASURED_ON}) is "
            + ("the fit (`calibrate.fit_device`) of exactly these cells. " if same else
               "not the fit of exactly these cells (the script printed a fresh one; paste it into cost_model.py). ")
            + f"It predicts their seconds to {_f(total, 2)} in sum (per cell, 10th-90th percentile of predicted / "
            f"measured {_f(float(np.percentile(ratio, 10)), 2)}-{_f(float(np.percentile(ratio, 90)), 2)}). For the "
            f"whole paper plan ({len(plan)} cells, one worker) it estimates {_f(whole / 3600, 2)} h; "
            f"{round(100 * adv)}% of that is adversarial training (Table 4), which no cell here exercised: its "
            "cost is the CPU model's scaled by the step and arithmetic ratios these cells measured, as are "
            "CIFAR-10's longer rows.", ""]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out, dirs = Path(argv[0]), [Path(a) for a in argv[1:]]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        print(f"error: not a slice folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        return _report(out, dirs)
    except (SliceError, SystemExit) as exc:
        if isinstance(exc, SystemExit) and not isinstance(exc.code, str):
            raise
        message = str(exc.code if isinstance(exc, SystemExit) else exc)
        print(message if message.startswith("error:") else f"error: {message}", file=sys.stderr)
        return 2
    except (KeyError, TypeError) as exc:  # a row that has its key fields but not the fields a summary reads
        print(f"error: a slice row lacks or mistypes a field the summaries read: {exc}", file=sys.stderr)
        return 2


def _report(out: Path, dirs: list[Path]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    machines = [(d / "machine.txt").read_text().strip() for d in dirs if (d / "machine.txt").is_file()]
    lines = []
    ntk_docs = {}
    for protocol in ("paper", "lazy"):
        parts = _parts(dirs, f"ntk-mnist-{protocol}", NTK_KEY)
        if not parts:
            continue
        rows, provs = merge(parts, NTK_KEY)
        summary = ntk_distance.summarise(rows)
        ntk_docs[protocol] = {"rows": rows, "summary": summary, "slopes": summary["slopes"], "provenance": provs}
        (out / f"ntk-mnist-{protocol}.json").write_text(dump(ntk_docs[protocol]))
    flip_parts = _parts(dirs, "flip-mnist", FLIP_KEY)
    flip_doc = None
    if flip_parts:
        rows, provs = merge(flip_parts, FLIP_KEY)
        flip_doc = {"rows": rows, "summary": flip_rate.summarise(rows, baseline="relu"), "provenance": provs}
        (out / "flip-mnist.json").write_text(dump(flip_doc))

    all_rows = [r for d in ntk_docs.values() for r in d["rows"]]
    combined = ntk_distance.summarise(all_rows) if all_rows else None
    plotted = False
    if combined:
        results = {"summary": {"ntk": {"mnist": combined}}, "labels": {"models": labels(), "datasets": P.DATASET_LABELS},
                   "paper_numbers": P.all_numbers()}
        plotted = plot_ntk(results, out / "ntk-distance.png")

    from malleability.reports.audit import get_scale
    from malleability.reports.audit.plan import plan_cells

    plan_size = len(plan_cells(get_scale("paper"), device="cuda").cells)
    n_cells = sum(len(d["rows"]) for d in ntk_docs.values()) + (len(flip_doc["rows"]) if flip_doc else 0)

    def seeds_of(rows):
        return sorted({r["seed"] for r in rows})

    lines += ["# The paper-scale slice on an NVIDIA H200", "",
              "Part of the paper-scale audit (`--scale paper`), run by `scripts/gpu_paper_slice.sh` on a lent GPU and",
              "merged by `scripts/gpu_slice_report.py`. **A slice, not the audit:** MNIST only, the paper's sizes",
              "(n = 1000 training points, 500 epochs, widths 4..4096), the seeds each lease's time allowed. The whole",
              f"paper-scale plan is {plan_size} cells; two runs inside one session's 15 minutes of GPU time "
              f"computed {n_cells} of them.", "",
              "Float32 training (TF32 off: torch's default), the paper's protocol (Adam, batch 128) and the lazy",
              "control (full-batch GD from the NTK initialisation). Attention input: `raw` (the paper's text).", "",
              "## Machines", ""]
    for m in machines:
        lines += ["```", m, "```", ""]
    commits = sorted({p.get("git_commit") or "unknown" for d in [*ntk_docs.values(), flip_doc] if d
                      for p in d["provenance"]})
    lines += [f"Commits the cells' provenance names: {', '.join(commits)}. Each machine.txt names the commit "
              "that was copied; a cell naming another one ran in a tree whose copied `.git` was stale (git's "
              "HEAD then won over `MALLEABILITY_GIT_COMMIT`; the variable wins now). Between the copied commits "
              "only scripts changed, not the code that computes. The GPU's torch is its own (versions above and "
              "in each JSON's provenance), not the 2.14.1 this project pins on the CPU, and the cells train in "
              "float32 on the GPU: compare them with the CPU reference by verdict and slope, not digit by digit.", ""]

    for protocol, doc in ntk_docs.items():
        rows = doc["rows"]
        lines += [f"## NTK distance vs width, {protocol} protocol (seeds {', '.join(map(str, seeds_of(rows)))})", "",
                  "Log-log slope of each distance over all (width, seed) points, Student-t 95% interval "
                  "(the paper: the distance falls with width). Train and test accuracy: range over the widths' "
                  "seed means; learned: seeds above chance by the exact binomial gate, over all cells.", "",
                  "| model | distance | slope | 95% | class | train acc | test acc | learned |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in doc["slopes"]:
            if s["distance"] not in (PRIMARY, "after_vs_init_relative", "after_vs_infinite_relative"):
                continue
            cells = [c for c in doc["summary"]["cells"] if c["model"] == s["model"] and c["distance"] == s["distance"]]
            tr = [c["accuracy_train"] for c in cells if c["accuracy_train"] is not None]
            te = [c["accuracy_test"] for c in cells if c["accuracy_test"] is not None]
            learned = sum(c["learned_seeds"] for c in cells), sum(c["seeds"] for c in cells)
            lines.append(f"| {s['model']} | {s['distance']} | {_f(s.get('slope'))} | {_ci(s.get('ci95'))} | "
                         f"{s['class']} | {_f(min(tr))}–{_f(max(tr))} | {_f(min(te))}–{_f(max(te))} | "
                         f"{learned[0]}/{learned[1]} |")
        lines += ["", f"Per width, {PRIMARY} (mean over seeds, Student-t 95% truncated at 0):", "",
                  "| model | width | distance | 95% | train acc | test acc | learned | s per cell |",
                  "|---|---|---|---|---|---|---|---|"]
        times = {}
        for r in rows:
            times.setdefault((r["model"], int(r["width"])), []).append((r.get("timing_s") or {}).get("total"))
        for c in doc["summary"]["cells"]:
            if c["distance"] != PRIMARY:
                continue
            t = [x for x in times.get((c["model"], c["width"]), []) if x is not None]
            lines.append(f"| {c['model']} | {c['width']} | {_f(c['mean'])} | {_ci(c['ci95'])} | "
                         f"{_f(c['accuracy_train'])} | {_f(c['accuracy_test'])} | {c['learned_seeds']}/{c['seeds']} | "
                         f"{_f(sum(t) / len(t), 2) if t else '–'} |")
        lines.append("")
    if plotted:
        lines += ["![NTK distance vs width](ntk-distance.png)", ""]
    if flip_doc:
        rows = flip_doc["rows"]
        lines += [f"## Table 2 flip rates, MNIST, ε = 0.3, width 1024 (seeds {', '.join(map(str, seeds_of(rows)))})", "",
                  "Flip rate: Wilson 95% over pooled counts; Spearman: Fisher-z interval. The paper: MLP-Attn's "
                  "flip rates are far above ReLU's.", "",
                  "| attack | model | flip rate | 95% | spearman | train acc | test acc | learned |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in flip_doc["summary"]["cells"]:
            fr, sp, acc = c["flip_rate"], c["spearman"], c["accuracy"]
            learned = sum(1 for r in rows if r["attack"] == c["attack"] and r["model"] == c["model"]
                          and (r.get("accuracy") or {}).get("learned"))
            lines.append(f"| {c['attack']} | {c['model']} | {_f(fr['mean'])} | {_ci(fr['ci95'])} | {_f(sp['mean'])} | "
                         f"{_f(acc['train']['mean'])} | {_f(acc['test']['mean'])} | {learned}/{len(c['seeds'])} |")
        lines += ["", "MLP-Attn / ReLU flip-rate ratio (paired percentile bootstrap over seeds; the paper's Table 2: "
                  "6.4-8.8 on MNIST):", "", "| attack | ratio | 95% | seeds |", "|---|---|---|---|"]
        for q in flip_doc["summary"]["ratios"]:
            lines.append(f"| {q['attack']} | {_f(q['ratio'])} | {_ci(q['ci95'])} | {q['n_seeds']} |")
        lines.append("")
    timed = [(r.get("timing_s") or {}).get("total") for d in ntk_docs.values() for r in d["rows"]
             if (r.get("train_settings") or {}).get("protocol") == "paper"]
    timed = [t for t in timed if t is not None]
    flip_t = [(r.get("timing_s") or {}).get("total") for r in (flip_doc or {"rows": []})["rows"]]
    flip_t = [t for t in flip_t if t is not None]
    if timed or flip_t:
        lines += ["## What the whole paper-scale audit would cost on this card", "",
                  "Measured per cell here (MNIST, one worker): "
                  + (f"an NTK-distance cell under the paper's protocol {_f(sum(timed) / len(timed), 2)} s on average "
                     f"({_f(min(timed), 2)}-{_f(max(timed), 2)} s, widths 4 to 4096); " if timed else "")
                  + (f"a flip-rate cell (train, attack, retrain, influence) {_f(sum(flip_t) / len(flip_t), 2)} s."
                     if flip_t else ""), ""]
        lines += _cost_model_lines(ntk_docs, flip_doc)
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}/README.md" + (" and ntk-distance.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
