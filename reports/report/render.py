"""Render an audit's results.json into report.md, report.html (plots inline) and PNG plots.

The report is built once as a list of blocks (heading, paragraph, table, image) and
written twice, as Markdown and as self-contained HTML (PNGs inline as base64), so the two
never disagree. Rendering is a pure function of results.json: ``malleability report DIR``
re-renders without recomputing anything. Plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path

from malleability.reports import paper_numbers as P

NOISE = "noise"  # the control attack (random signs, same budget); see reports.audit.noise_control

PLOTS = ("ntk_distance.png", "widths.png", "flip_rates.png", "kappa.png")
EPS_PLOT = "eps_sweep.png"  # only where the results hold ε-sweep cells


# --------------------------------------------------------------------------- formatting


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def pct(x) -> str:
    return "—" if x is None else f"{100 * float(x):.1f}%"


def mean_spread(stats: dict | None, as_pct: bool = False) -> str:
    if not stats or stats.get("mean") is None:
        return "missing"
    f = pct if as_pct else fmt
    s = f(stats["mean"])
    if stats.get("std") is not None:
        s += f" ± {f(stats['std'])}"
    ci = stats.get("ci95")
    if ci:
        s += f" [{f(ci[0])}, {f(ci[1])}]"
    return s + f" (s={stats['n_seeds']})"


def label(model_or_task: str) -> str:
    return P.MODEL_LABELS.get(model_or_task) or P.DATASET_LABELS.get(model_or_task) or model_or_task


# --------------------------------------------------------------------------- blocks


class Doc:
    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]):
        if items:
            self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list[str]]):
        self.blocks.append(("table", header, rows))

    def image(self, filename: str, alt: str):
        self.blocks.append(("img", filename, alt))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {item}" for item in b[1]))
            elif b[0] == "table":
                esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
                lines = ["| " + " | ".join(esc(c) for c in b[1]) + " |", "|" + "---|" * len(b[1])]
                lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in b[2]]
                out.append("\n".join(lines))
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1]})")
        return "\n\n".join(out) + "\n"

    def html(self, folder: Path) -> str:
        e = html.escape
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "ul":
                body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "table":
                head = "".join(f"<th>{e(str(c))}</th>" for c in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif b[0] == "img":
                path = folder / b[1]
                if path.is_file():
                    data = base64.b64encode(path.read_bytes()).decode("ascii")
                    body.append(f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}"/>'
                                f"<figcaption>{e(b[2])}</figcaption></figure>")
                else:
                    body.append(f"<p>(plot {e(b[1])} missing)</p>")
        style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #999;padding:.25em .5em;"
                 "font-size:.9em;vertical-align:top}th{background:#eee}img{max-width:100%}")
        return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>malleability audit</title>"
                f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


# --------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> bool:
    """Lay out, write and close a figure (every plot is saved the same way)."""
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def plot_ntk(results: dict, path: Path) -> bool:
    ntk = results["summary"]["ntk"]
    reading = ntk["primary_reading"] if ntk["primary_reading"] in ntk["readings"] else (ntk["readings"] or [None])[0]
    tasks = sorted({r["task"] for r in ntk["rows"]} | {t for (_m, t) in P.NTK_DISTANCE_TABLE["values"]})
    plt = _plt()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    colors = {"relu": "tab:blue", "mlp-attn": "tab:red"}
    for ax, task in zip(axes[0], tasks):
        anchor = None
        for model in ("relu", "mlp-attn"):
            rows = sorted((r for r in ntk["rows"] if r["task"] == task and r["model"] == model and r["reading"] == reading
                           and r["mean"] is not None and r["mean"] > 0), key=lambda r: r["width"])
            if rows:
                ws = [r["width"] for r in rows]
                ms = [r["mean"] for r in rows]
                lo = [r["mean"] - r["ci95"][0] if r["ci95"] else 0 for r in rows]
                hi = [r["ci95"][1] - r["mean"] if r["ci95"] else 0 for r in rows]
                lo = [min(v, m * 0.999) for v, m in zip(lo, ms)]
                ax.errorbar(ws, ms, yerr=[lo, hi], marker="o", color=colors[model], capsize=3,
                            label=f"ours {label(model)} ({reading})")
                anchor = anchor or (ws[0], ms[0])
            paper = P.NTK_DISTANCE_TABLE["values"].get((model, task))
            if paper:
                ax.plot(P.NTK_DISTANCE_TABLE["widths"], paper, linestyle="--", marker="s", color=colors[model],
                        alpha=0.6, label=f"paper {label(model)}")
        if anchor:
            ws = [anchor[0], 4096]
            ax.plot(ws, [anchor[1] * (w / anchor[0]) ** -0.5 for w in ws], color="gray", linestyle=":",
                    label="m^-1/2 reference")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width m")
        ax.set_ylabel("NTK distance")
        ax.set_title(label(task))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_widths(results: dict, path: Path) -> bool:
    w = results["summary"].get("widths", {})
    items = []  # (label, log10 width, colour)
    for r in w.get("predicted", []):
        for version in ("v1", "v2"):
            if r.get(f"log10_{version}") is not None:
                items.append((f"predicted {version}\n{r['task']} n={r['n']}\n{r['features']}", r[f"log10_{version}"],
                              "tab:orange" if r["features"] == "relu" else "tab:red"))
    for r in w.get("measured", []):
        if r.get("log10_width") is not None:
            items.append((f"measured\n{r['task']} {r['model']}\n{r['reading']}", r["log10_width"], "tab:green"))
    for version in ("v1", "v2"):
        for task, v in P.PREDICTED_WIDTH_LOWER_BOUNDS[version].items():
            items.append((f"paper {version} bound\n{task}", math.log10(v), "tab:gray"))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(items)), 4.5))
    xs = range(len(items))
    ax.bar(xs, [v for _l, v, _c in items], color=[c for *_x, c in items])
    ax.set_xticks(list(xs))
    ax.set_xticklabels([lab for lab, *_x in items], rotation=90, fontsize=6)
    ax.set_ylabel(f"log10 width (ε = {w.get('eps')})")
    ax.set_title("Predicted (paper's formulas on our κ) vs measured widths; gray: paper's stated bounds")
    return _save(plt, fig, path)


def plot_flip(results: dict, path: Path) -> bool:
    flip = results["summary"]["flip"]
    panels = [("table2", False, P.FLIP_RATE_10CLASS), ("table3", False, P.FLIP_RATE_BINARY),
              ("table4", True, P.FLIP_RATE_ADV_TRAINING)]
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colors = {"relu": "tab:blue", "mlp-attn": "tab:red"}
    for ax, (table, adv, paper_table) in zip(axes, panels):
        groups = sorted({(task, attack) for (task, model), vals in paper_table["values"].items()
                         for attack in (P.ATTACKS if table != "table4" else ("pgd",))})
        if table != "table4":  # the noise control beside the paper's attacks (no paper mark)
            tasks = {t for (t, _a) in groups}
            groups += sorted({(r["task"], NOISE) for r in flip["rows"] if r["table"] == table and r["attack"] == NOISE
                              and not r["adv_train"] and r["task"] in tasks})
            groups.sort(key=lambda g: (g[0], g[1] == NOISE, g[1]))
        for k, model in enumerate(("relu", "mlp-attn")):
            bars = {False: ([], [], []), True: ([], [], [])}  # is-noise -> xs, means, errors
            pv = []
            for g, (task, attack) in enumerate(groups):
                row = next((r for r in flip["rows"] if (r["table"], r["task"], r["attack"], r["adv_train"], r["model"])
                            == (table, task, attack, adv, model)), None)
                st = (row or {}).get("flip_rate")
                x = g + (k - 0.5) * 0.38
                if st and st.get("mean") is not None:
                    xs, ms, errs = bars[attack == NOISE]
                    xs.append(x)
                    ms.append(st["mean"])
                    errs.append((st["ci95"][1] - st["mean"]) if st.get("ci95") else 0)
                vals = paper_table["values"].get((task, model), {})
                pv.append((x, vals.get("adversarial" if adv else attack)))
            xs, ms, errs = bars[False]
            if xs:
                ax.bar(xs, ms, width=0.38, yerr=errs, capsize=3, color=colors[model], alpha=0.7, label=f"ours {label(model)}")
            xs, ms, errs = bars[True]
            if xs:
                ax.bar(xs, ms, width=0.38, yerr=errs, capsize=3, color="lightgray", edgecolor=colors[model], hatch="//",
                       label=f"noise control {label(model)}")
            pts = [(x, v) for x, v in pv if v is not None]
            if pts:
                ax.scatter([x for x, _ in pts], [v for _, v in pts], marker="_", s=300, color="black", zorder=5,
                           label="paper" if model == "relu" else None)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{t}\n{'noise ctrl' if a == NOISE else a}" for t, a in groups], fontsize=7)
        ax.set_ylabel("flip rate")
        ax.set_ylim(bottom=0)  # t-intervals over few seeds can reach below 0; a rate cannot
        ax.set_title({"table2": "Table 2: 10-class", "table3": "Table 3: binary",
                      "table4": "Table 4: PGD, adversarial training"}[table])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(plt, fig, path)


def eps_sweep_summary(results: dict) -> dict:
    """summary['eps_sweep'], recomputed from the cells for results.json written before the sweep existed."""
    from malleability.reports.audit import summarise_eps_sweep

    sweep = results.get("summary", {}).get("eps_sweep")
    return sweep if sweep is not None else summarise_eps_sweep(results.get("cells", []))


def plot_eps_sweep(results: dict, path: Path) -> bool:
    """Flip rate against ε, one panel per data set, one line per (model, attack), 95% intervals as bars."""
    sweep = eps_sweep_summary(results)
    tasks = sorted({r["task"] for r in sweep["rows"]})
    if not tasks:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    colors = {"relu": "tab:blue", "mlp-attn": "tab:red"}
    for ax, task in zip(axes[0], tasks):
        for model, attack in sorted({(r["model"], r["attack"]) for r in sweep["rows"] if r["task"] == task}):
            pts = sorted((r["eps"], r["flip_rate"]) for r in sweep["rows"]
                         if (r["task"], r["model"], r["attack"]) == (task, model, attack) and r["flip_rate"]["mean"] is not None)
            if not pts:
                continue
            xs = [e for e, _ in pts]
            ms = [st["mean"] for _, st in pts]
            errs = [(st["ci95"][1] - st["mean"]) if st.get("ci95") else 0 for _, st in pts]
            ax.errorbar(xs, ms, yerr=errs, capsize=3, marker="o", color=colors.get(model, "black"),
                        linestyle="--" if attack == NOISE else "-", label=f"{label(model)} {_attack_label(attack)}")
        ax.set_xlabel("ε (ℓ∞)")
        ax.set_ylabel("flip rate")
        ax.set_ylim(bottom=0)
        ax.set_title(f"ε sweep: {label(task)} (no paper numbers)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(plt, fig, path)


def _eps_sweep_section(doc: "Doc", results: dict, plots: dict[str, bool]) -> None:
    sweep = eps_sweep_summary(results)
    doc.h(2, "ε sweep (no paper numbers)")
    if not sweep["rows"]:
        doc.p("Not run: this results.json holds no ε-sweep cells (scale field flip_eps_sweep).")
        return
    doc.p(sweep.get("note", "") + ". Ours: mean ± std [95% t-interval] over seeds (s).")
    if plots.get(EPS_PLOT):
        doc.image(EPS_PLOT, "flip rate vs ε with 95% intervals; dashed: noise control")
    eps_list = sweep["eps"]
    rows = []
    for task, attack, model in sorted({(r["task"], r["attack"], r["model"]) for r in sweep["rows"]},
                                      key=lambda k: (k[0], k[1] == NOISE, k[1], k[2])):
        by_eps = {r["eps"]: r["flip_rate"] for r in sweep["rows"] if (r["task"], r["attack"], r["model"]) == (task, attack, model)}
        rows.append([label(task), _attack_label(attack), label(model),
                     *[mean_spread(by_eps[e], True) if e in by_eps else "—" for e in eps_list]])
    doc.table(["data", "attack", "model", *[f"ε = {fmt(e)}" for e in eps_list]], rows)
    ratio_cells = {(r["task"], r["attack"], r["eps"]): r for r in sweep["ratios"]}
    rows = []
    for task, attack in sorted({(k[0], k[1]) for k in ratio_cells}, key=lambda k: (k[0], k[1] == NOISE, k[1])):
        cells = []
        for e in eps_list:
            r = ratio_cells.get((task, attack, e))
            ci = (r or {}).get("ci95")
            cells.append("—" if not r or r["ratio"] is None else fmt(r["ratio"]) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""))
        rows.append([label(task), _attack_label(attack), *cells])
    if rows:
        doc.p("MLP-Attn / 2L-ReLU ratio of mean flip rates per ε [bootstrap 95% over seeds]:")
        doc.table(["data", "attack", *[f"ε = {fmt(e)}" for e in eps_list]], rows)
    excess = {(r["task"], r["attack"], r["model"], r["eps"]): r["excess"] for r in sweep["excess_over_noise"]}
    if excess:
        rows = []
        for task, attack, model in sorted({k[:3] for k in excess}):
            rows.append([label(task), _attack_label(attack), label(model),
                         *[_points(excess.get((task, attack, model, e))) for e in eps_list]])
        doc.p("Flip rate above the noise control of the same ε, in percentage points (mean attack − mean noise):")
        doc.table(["data", "attack", "model", *[f"ε = {fmt(e)}" for e in eps_list]], rows)


def plot_kappa(results: dict, path: Path) -> bool:
    rows = results["summary"]["kappa"]["rows"]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * max(1, len(rows))), 4.5))
    readings = ("kappa_G", "pseudo_kappa_G", "kappa_d")
    width = 0.25
    for k, reading in enumerate(readings):
        xs, vs = [], []
        for i, r in enumerate(rows):
            v = r.get(f"log10_{reading}")
            if v is not None:
                xs.append(i + (k - 1) * width)
                vs.append(v)
        if xs:
            ax.bar(xs, vs, width=width, label=reading)
    for i, r in enumerate(rows):
        paper = P.KAPPA["values"].get(r["task"])
        if paper:
            ax.scatter([i], [math.log10(paper)], marker="_", s=400, color="black", zorder=5,
                       label="paper κ(G)" if i == 0 else None)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r['task']}\nn={r['n']}\n{r['features']}" for r in rows], fontsize=7)
    ax.set_ylabel("log10 κ")
    ax.set_title("Condition number of G = XXᵀ of each data set (missing bar: G singular)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return _save(plt, fig, path)


# --------------------------------------------------------------------------- the report


def build_doc(results: dict, plots: dict[str, bool]) -> Doc:
    doc = Doc()
    scale = results["scale"]
    prov = results.get("provenance", {})
    versions = prov.get("versions", {})
    doc.h(1, f"Audit of arXiv 2603.13085 — scale `{scale['name']}`")
    doc.p(f"Scale: {scale.get('description', '')}. Device {results['options'].get('device')}, "
          f"{results['options'].get('workers')} worker(s). Code {prov.get('git_commit')}, torch {versions.get('torch')}, "
          f"malleability {versions.get('malleability')}, python {versions.get('python')}. "
          f"Cells: {results['counts']['cells']} ({results['counts']['computed']} computed, {results['counts']['cached']} "
          f"from cache, {results['counts']['failed']} failed), {results['counts']['missing']} not run. "
          f"Started {results.get('started_at')}, wall time {results.get('wall_time_s', 0):.0f} s.")
    doc.p("Sizes here are scaled down from the paper (see 'What the numbers depend on'); the paper's numbers come "
          "from PAPER.md (abstract and third-party notes of v1/v2). Nothing is dropped because it disagrees.")

    doc.h(2, "Verdicts")
    criteria = results.get("criteria", {})
    by_text = {text: name for name, text in criteria.items()}
    doc.table(["claim", "verdict", "criterion", "source", "detail"],
              [[v["claim"], v["verdict"] + (f" ({', '.join(v['readings_holding'])})"
                                             if v["verdict"].startswith("holds only under a reading") and v.get("readings_holding") else ""),
                by_text.get(v["criterion"], v["criterion"]), v.get("source", ""), v.get("detail") or ""]
               for v in results["verdicts"]])
    control = _noise_verdict_sentence(results["summary"]["flip"])
    if control:
        doc.p(control)
    doc.p("Criteria (written down before looking at the numbers; 'not run' = no cell of this scale measured it):")
    doc.bullets([f"{name}: {text}" for name, text in criteria.items()])

    # Table 1
    ntk = results["summary"]["ntk"]
    doc.h(2, "Table 1: NTK distance vs width")
    if plots.get("ntk_distance.png"):
        doc.image("ntk_distance.png", "NTK distance vs width (log-log); dashed: paper; dotted: m^-1/2")
    rows = []
    for r in ntk["rows"]:
        if r["reading"] != ntk["primary_reading"]:
            continue
        rows.append([label(r["task"]), label(r["model"]), r["width"], fmt(r["paper"]), mean_spread(r),
                     fmt(P_ratio(r["mean"], r["paper"]))])
    for (model, task), vals in P.NTK_DISTANCE_TABLE["values"].items():
        for m, v in zip(P.NTK_DISTANCE_TABLE["widths"], vals):
            if not any(x for x in ntk["rows"] if x["task"] == task and x["model"] == model and x["width"] == m
                       and x["reading"] == ntk["primary_reading"]):
                rows.append([label(task), label(model), m, fmt(v), "missing (width or data set not run at this scale)", "—"])
    doc.p(f"Reading shown: `{ntk['primary_reading']}` (‖K_T − K_0‖_F, unnormalised like the paper's magnitudes). "
          "Ours: mean ± std [95% t-interval] over seeds (s). Ratio = ours / paper.")
    doc.table(["data", "model", "width", "paper", "ours", "ratio"], rows)
    doc.p("Fitted log-log slope of the mean distance against width, every reading (NTK theory: −1/2 for "
          "distances that vanish in the kernel limit):")
    doc.table(["data", "model", "reading", "slope", "widths"],
              [[label(s["task"]), label(s["model"]), s["reading"], fmt(s["slope"]), ",".join(map(str, s["widths"]))]
               for s in ntk["slopes"]])
    other = [r for r in ntk["rows"] if r["reading"] != ntk["primary_reading"]]
    if other:
        doc.p("All other readings of the distance:")
        doc.table(["data", "model", "reading", "width", "ours"],
                  [[label(r["task"]), label(r["model"]), r["reading"], r["width"], mean_spread(r)] for r in other])

    # widths and kappa
    doc.h(2, "κ of the data and the width the paper's bound predicts")
    if plots.get("kappa.png"):
        doc.image("kappa.png", "κ of each data set (bars: our readings; black: paper)")
    doc.p("κ = σ_max/σ_min of G = XXᵀ (2-norm) of the rows as each model sees them: 2L-ReLU the unit-norm "
          "pixels, MLP-Attn the normalised attention features. κ(G) is infinite when G is singular (n > d, or rank "
          "deficiency); pseudo-κ uses the nonzero spectrum, κ_d the rank-min(n, d) truncation (v2).")
    doc.table(["data", "n", "features", "rank", "κ(G)", "pseudo-κ", "κ_d", "paper κ(G)", "precision"],
              [[label(r["task"]), r["n"], r["features"], r.get("rank", "—"), _pow10(r.get("log10_kappa_G"), "∞ (singular)"),
                _pow10(r.get("log10_pseudo_kappa_G")), _pow10(r.get("log10_kappa_d"), "∞ (singular)"),
                fmt(P.KAPPA["values"].get(r["task"])) if r["features"] == "relu" else "—", r.get("precision") or "—"]
               for r in results["summary"]["kappa"]["rows"]])
    w = results["summary"].get("widths", {})
    if plots.get("widths.png"):
        doc.image("widths.png", "predicted vs measured widths (log10)")
    doc.table(["data", "n", "features", "predicted v1 κ⁶/ε² (κ used)", "predicted v2 κ_d⁶ n ln n", "paper v1 bound",
               "paper v2 bound"],
              [[label(r["task"]), r["n"], r["features"], f"{_pow10(r.get('log10_v1'), '∞')} ({r.get('v1_reading')})",
                _pow10(r.get("log10_v2"), "∞"), "≫ " + fmt(P.PREDICTED_WIDTH_LOWER_BOUNDS["v1"].get(r["task"])),
                "≫ " + fmt(P.PREDICTED_WIDTH_LOWER_BOUNDS["v2"].get(r["task"]))] for r in w.get("predicted", [])])
    doc.p(f"Measured: the width at which the fitted power law of each relative distance reaches ε = {w.get('eps')}.")
    doc.table(["data", "model", "reading", "slope", "measured width"],
              [[label(r["task"]), label(r["model"]), r["reading"], fmt(r["slope"]), fmt(r["width"]) if r["width"] else
                (r.get("note") or "—")] for r in w.get("measured", [])])

    # flip tables
    flip = results["summary"]["flip"]
    if plots.get("flip_rates.png"):
        doc.image("flip_rates.png", "flip rates with 95% intervals; black bars: paper; grey hatched: noise control")
    for table, adv, paper_table, title in (
        ("table2", False, P.FLIP_RATE_10CLASS, "Table 2: influence flip rate, 10-class"),
        ("table3", False, P.FLIP_RATE_BINARY, "Table 3: binary tasks"),
    ):
        doc.h(2, f"{title}, ε = {results['scale'].get('flip_eps')}")
        rows = []
        for (task, model), vals in paper_table["values"].items():
            for attack in P.ATTACKS:
                st = _flip_stats(flip, table, task, attack, adv, model)
                mean = (st.get("flip_rate") or {}).get("mean") if st else None
                inside = _inside(st, vals[attack])
                rows.append([label(task), label(model), attack.upper(), pct(vals[attack]),
                             mean_spread(st.get("flip_rate"), True) if st else "missing",
                             fmt(P_ratio(mean, vals[attack])), inside,
                             mean_spread(st.get("spearman")) if st else "—", mean_spread(st.get("topk_overlap")) if st else "—"])
            st = _flip_stats(flip, table, task, NOISE, adv, model)
            if st:  # the control, right below the paper's attacks of the same data set and model
                rows.append(_extra_row(st))
        # our cells the paper has no number for (e.g. Fashion-MNIST, other attacks): shown, never dropped
        for r in flip["rows"]:
            if r["table"] == table and r["adv_train"] == adv and (
                    (r["task"], r["model"]) not in paper_table["values"] or r["attack"] not in P.ATTACKS) and not (
                    r["attack"] == NOISE and (r["task"], r["model"]) in paper_table["values"]):
                rows.append(_extra_row(r))
        doc.table(["data", "model", "attack", "paper", "ours", "ours/paper", "paper in our 95% CI",
                   "Spearman ρ", "top-k overlap"], rows)
        doc.table(["data", "attack", "paper MLP-Attn/ReLU", "ours MLP-Attn/ReLU [bootstrap 95%]"],
                  _ratio_rows(flip, table, paper_table))
        sentence = _noise_table_sentence(flip, table)
        if sentence:
            doc.p(sentence)
    doc.h(2, "Table 4: PGD flip rate, standard vs adversarial training")
    rows = []
    for (task, model), vals in P.FLIP_RATE_ADV_TRAINING["values"].items():
        st_std = _flip_stats(flip, "table2", task, "pgd", False, model)
        st_adv = _flip_stats(flip, "table4", task, "pgd", True, model)
        rows.append([label(task), label(model), pct(vals["standard"]),
                     mean_spread(st_std.get("flip_rate"), True) if st_std else "missing", pct(vals["adversarial"]),
                     mean_spread(st_adv.get("flip_rate"), True) if st_adv else "missing"])
    doc.table(["data", "model", "paper standard", "ours standard", "paper adv. training", "ours adv. training"], rows)
    _eps_sweep_section(doc, results, plots)

    # dependencies
    doc.h(2, "What the numbers depend on")
    doc.bullets(_dependencies(results))
    doc.h(2, "Missing cells")
    if results.get("missing"):
        by_why: dict[str, list[str]] = {}
        for m in results["missing"]:
            by_why.setdefault(f"{m['kind']}: {m['why']}", []).append(m["label"])
        doc.table(["why", "cells"], [[why, f"{len(labels)}: " + ", ".join(labels[:6]) + (" …" if len(labels) > 6 else "")]
                                     for why, labels in sorted(by_why.items())])
    else:
        doc.p("None: every planned cell ran.")
    if results.get("cache_refusals"):
        doc.h(2, "Cache entries refused")
        doc.bullets(results["cache_refusals"][:50])
    doc.h(2, "Scale")
    doc.table(["field", "value", "meaning"],
              [[k, _short(v), results.get("scale_help", {}).get(k, {}).get("help", "")] for k, v in scale.items()])
    return doc


def _pow10(log10_value, none_text: str = "—") -> str:
    """10^x written without overflow (κ⁶ of real data reaches 1e100 and beyond)."""
    if log10_value is None:
        return none_text
    if abs(log10_value) < 5:
        return fmt(10.0**log10_value)
    mant = 10 ** (log10_value - math.floor(log10_value))
    return f"{mant:.2f}e{int(math.floor(log10_value)):+d}"


def P_ratio(ours, paper):  # noqa: N802 - reads as 'paper ratio'
    if ours is None or paper in (None, 0):
        return None
    return ours / paper


def _short(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v)) or "(none)"
    return str(v)


def _flip_stats(flip: dict, table, task, attack, adv, model) -> dict:
    for r in flip["rows"]:
        if (r["table"], r["task"], r["attack"], r["adv_train"], r["model"]) == (table, task, attack, adv, model):
            return r
    return {}


def _inside(st: dict, paper: float) -> str:
    ci = (st.get("flip_rate") or {}).get("ci95") if st else None
    if not ci:
        return "—"
    return "yes" if ci[0] <= paper <= ci[1] else "no"


def _ratio_rows(flip: dict, table: str, paper_table: dict) -> list[list[str]]:
    from malleability.reports.audit import ratio, ratio_interval

    rows = []
    for (task, model), vals in paper_table["values"].items():
        if model != "mlp-attn":
            continue
        for attack in P.ATTACKS:
            paper = vals[attack] / paper_table["values"][(task, "relu")][attack]
            a = (_flip_stats(flip, table, task, attack, False, "mlp-attn").get("flip_rate") or {})
            r = (_flip_stats(flip, table, task, attack, False, "relu").get("flip_rate") or {})
            ours = ratio(a.get("mean"), r.get("mean"))
            ci = ratio_interval(a.get("values", []), r.get("values", []))
            text = "missing" if ours is None else fmt(ours) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")
            rows.append([label(task), attack.upper(), fmt(paper), text])
        rows.extend(_ratio_row(flip, table, task, NOISE, "—"))
    for task in sorted({r["task"] for r in flip["rows"] if r["table"] == table and r["attack"] == NOISE}
                       - {t for (t, _m) in paper_table["values"]}):
        rows.extend(_ratio_row(flip, table, task, NOISE, "—"))
    return rows


def _ratio_row(flip: dict, table: str, task: str, attack: str, paper_text: str) -> list[list[str]]:
    from malleability.reports.audit import ratio, ratio_interval

    a = (_flip_stats(flip, table, task, attack, False, "mlp-attn").get("flip_rate") or {})
    r = (_flip_stats(flip, table, task, attack, False, "relu").get("flip_rate") or {})
    if not a and not r:
        return []
    ours = ratio(a.get("mean"), r.get("mean"))
    ci = ratio_interval(a.get("values", []), r.get("values", []))
    text = "missing" if ours is None else fmt(ours) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")
    return [[label(task), _attack_label(attack), paper_text, text]]


def _attack_label(attack: str) -> str:
    return "noise control" if attack == NOISE else attack.upper()


def _extra_row(r: dict) -> list[str]:
    """A table row for a cell the paper has no number for (other data sets, the noise control)."""
    return [label(r["task"]), label(r["model"]), _attack_label(r["attack"]), "—",
            mean_spread(r.get("flip_rate"), True), "—", "—", mean_spread(r.get("spearman")),
            mean_spread(r.get("topk_overlap"))]


def _noise_entries(flip: dict, table: str | None = None) -> list[dict]:
    from malleability.reports.audit import noise_control

    entries = flip.get("noise_control")
    if entries is None:  # results.json written before the control existed
        entries = noise_control(flip)
    return [e for e in entries if table is None or e["table"] == table]


def _points(x) -> str:
    return "—" if x is None else f"{100 * x:+.1f}"


def _noise_table_sentence(flip: dict, table: str) -> str | None:
    """What the noise control shows for one table, computed from the numbers."""
    parts = []
    for e in _noise_entries(flip, table):
        excess = "; ".join(
            f"{label(model)} " + ", ".join(f"{a.upper()} {_points(e['excess'][model].get(a))}" for a in P.ATTACKS)
            for model in ("relu", "mlp-attn"))
        parts.append(f"{label(e['task'])}: noise flips {pct(e['noise']['relu'])} (2L-ReLU) and "
                     f"{pct(e['noise']['mlp-attn'])} (MLP-Attn), MLP-Attn/ReLU ratio for noise {fmt(e['noise_ratio'])}; "
                     f"flip rate above noise, in percentage points: {excess}")
    if not parts:
        return None
    return ("Noise control (random signs of the same ℓ∞ budget on the same rows, same retrain; not in the paper, "
            "not part of any verdict; an excess near 0 means the attack moves influences no more than any "
            "perturbation of its size): " + ". ".join(parts) + ".")


def _noise_verdict_sentence(flip: dict) -> str | None:
    """One sentence under the verdict table: the control's ratio and PGD's excess, per 10-class data set."""
    parts = []
    for e in _noise_entries(flip, "table2"):
        ex = {m: e["excess"][m].get("pgd") for m in ("relu", "mlp-attn")}
        parts.append(f"{label(e['task'])}: MLP-Attn/ReLU ratio for noise {fmt(e['noise_ratio'])}, PGD flip rate "
                     f"exceeds noise by {_points(ex['mlp-attn'])} points (MLP-Attn) and {_points(ex['relu'])} points "
                     "(2L-ReLU)")
    if not parts:
        return None
    return ("Noise control (information only, not a verdict; Table 2, random signs of the same budget): "
            + "; ".join(parts) + ".")


def _dependencies(results: dict) -> list[str]:
    items = []
    seen = set()
    for c in results["cells"]:
        cfg = c.get("config") or {}
        if c["kind"] in ("ntk", "flip"):
            data = {k: v for k, v in cfg.get("data", {}).items() if k != "seed"}
            train = {k: v for k, v in cfg.get("train", {}).items() if k != "seed"}
            opts = {k: v for k, v in cfg.items() if k not in ("data", "train", "seed", "model", "width", "attack", "adv_train")}
            key = (c["kind"], data.get("dataset"), str(data.get("classes")), data.get("n"), data.get("n_test"),
                   str(sorted(train.items())), str(sorted((k, v) for k, v in opts.items() if k not in ("width",))))
            if key in seen:
                continue
            seen.add(key)
            res = c.get("result") or {}
            notes = (res.get("data") or {}).get("notes") if isinstance(res.get("data"), dict) else None
            note = f" ({notes})" if notes else ""
            if not note and data.get("dataset") == "cifar10":
                note = " (CIFAR-10 here is the first-4000-image subset of the training set; test rows drawn from it)"
            opts_text = ", ".join(f"{k}={v}" for k, v in sorted(opts.items()))
            items.append(f"{c['kind']}: {data.get('dataset')} classes={data.get('classes')} n={data.get('n')} "
                         f"n_test={data.get('n_test')}{note}; training protocol={train.get('protocol')} "
                         f"epochs={train.get('epochs')} loss={train.get('loss')} dtype={train.get('dtype')} "
                         f"device={train.get('device')}; options: {opts_text or 'defaults'}")
        elif c["kind"] == "theory" and "theory" not in seen:
            seen.add("theory")
            items.append(f"theory: check_claims profile={cfg.get('profile')}; each reading's evidence (matrices, "
                         "precision) is in results.json under cells[].result.readings")
        elif c["kind"] == "kappa" and "kappa" not in seen:
            seen.add("kappa")
            items.append("κ: computed on the unit-ℓ2-row training data (2L-ReLU's inputs) and, where reported, the "
                         "normalised attention features; 2-norm condition numbers from singular values; κ(G) is "
                         "undefined when n > d (G singular), hence pseudo-κ and κ_d")
    items.append("Seeds: seed s draws the data subset and initialises/trains the network; spread is over seeds only.")
    return items


def render_report(results: dict, out_dir: str | os.PathLike) -> dict[str, bool]:
    """Write the PNGs, report.md and report.html into ``out_dir``; returns which plots were made."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, bool] = {}
    for name, fn in (("ntk_distance.png", plot_ntk), ("widths.png", plot_widths), ("flip_rates.png", plot_flip),
                     ("kappa.png", plot_kappa)):
        try:
            plots[name] = fn(results, out / name)
        except Exception as exc:  # a plot must never cost the report; say so in it
            plots[name] = False
            results.setdefault("render_warnings", []).append(f"{name}: {type(exc).__name__}: {exc}")
    if eps_sweep_summary(results)["rows"]:  # older results (no sweep) keep their four plots
        try:
            plots[EPS_PLOT] = plot_eps_sweep(results, out / EPS_PLOT)
        except Exception as exc:
            plots[EPS_PLOT] = False
            results.setdefault("render_warnings", []).append(f"{EPS_PLOT}: {type(exc).__name__}: {exc}")
    doc = build_doc(results, plots)
    if results.get("render_warnings"):
        doc.h(2, "Rendering warnings")
        doc.bullets(results["render_warnings"])
    (out / "report.md").write_text(doc.markdown(), encoding="utf-8")
    (out / "report.html").write_text(doc.html(out), encoding="utf-8")
    return plots
