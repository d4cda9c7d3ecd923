"""The report's sections, each a function of the results document (formatting only, no statistics)."""

from __future__ import annotations

from malleability.reports.report.lookup import (
    PRIMARY,
    ablation_cells,
    cells_of_kind,
    flip_set_sizes,
    is_binary,
    model_label,
    paper_flip,
    paper_ntk,
    ablation_cells,
    protocol_of,
    schedule_label,
    schedule_of,
    split_key,
    task_label,
)
from malleability.reports.report.markdown import Doc, esc, interval, num, pct, pow10


def _minutes(seconds) -> str:
    return "—" if seconds is None else f"{float(seconds) / 60:.1f} min"


def header(doc: Doc, r: dict) -> None:
    s, prov, opt = r["scale"], r.get("provenance", {}), r.get("options", {})
    v = prov.get("versions", {})
    doc.h(1, "Audit of *Influence Malleability in Linearized Attention* (arXiv 2603.13085)")
    doc.p(f"Scale **{esc(s['name'])}** ({esc(s.get('description', ''))}); device {esc(opt.get('device'))}, "
          f"{esc(opt.get('workers'))} worker(s); measured wall time {_minutes(r.get('wall_time_s'))} "
          f"(cost-model estimate at the start: {_minutes(r.get('estimate_s'))}"
          + (f", scaled x{r['estimate_speed_factor']:.2f} for this CPU's "
             + ("pace on the pace probe" if r.get("estimate_speed_measure") == "pace-probe" else "GEMM rate")
             if isinstance(r.get("estimate_speed_factor"), (int, float)) else "")
          + f"); started {esc(r.get('started_at'))}.")
    doc.p(f"Code {esc(r.get('code_version', {}).get('package'))}, git {esc(prov.get('git_commit'))}, "
          f"source hash {esc(str(r.get('code_version', {}).get('source_sha256', ''))[:12])}; "
          f"torch {esc(v.get('torch'))}, numpy {esc(v.get('numpy'))}, python {esc(v.get('python'))}; "
          f"platform {esc(prov.get('platform'))}"
          + (f"; machine {esc(mach.get('cpu'))}, {esc(mach.get('cores'))} cores, {esc(mach.get('memory_gib'))} GiB"
             if (mach := prov.get("machine")) else "") + ".")
    ep = {s["ntk"]["epochs"], s["flip"]["epochs"]}
    if max(ep) < 500:
        doc.p(f"Networks are trained {', '.join(map(str, sorted(ep)))} epochs, not the paper's 500: the measured cost "
              "model puts 500 epochs at these sizes far beyond a 2-core CPU (`--scale paper` on a GPU runs them). "
              "Every number from a trained network has its accuracy beside it.")
    scope = []
    if s["flip"].get("adv_training_tasks") is not None:
        scope.append(f"Table 4 (adversarial training) runs on {esc(', '.join(s['flip']['adv_training_tasks']) or 'no data set')} only")
    if s.get("limitation_models") and s.get("limitation_tasks") is not None:
        scope.append(f"the models beyond the paper run on {esc(', '.join(s['limitation_tasks']) or 'no data set')} only, "
                     "under the paper's protocol (the lazy control trains the paper's two models)")
    if scope:
        doc.p("At this scale " + "; ".join(scope) + ", to fit the run time; the paper scale runs every data set.")
    c = r.get("counts", {})
    doc.p(f"Cells: {c.get('cells')} ({c.get('computed')} computed, {c.get('cached')} from the cache, "
          f"{c.get('failed')} failed).")


def verdicts(doc: Doc, r: dict) -> None:
    doc.h(2, "Verdicts")
    rows = []
    for v in r["verdicts"]:
        rows.append([esc(v["claim"]), esc(v.get("statement", "")), f"**{esc(v['verdict_label'])}**",
                     esc(v.get("meaning", "")),
                     esc(", ".join(v.get("readings_holding", [])) or "—"),
                     esc(", ".join(v.get("readings_failing", [])) or "—"),
                     esc(", ".join(v.get("readings_not_testable", [])) or "—")])
    doc.table(["claim", "statement", "verdict", "meaning", "holds under", "fails under", "not testable under"], rows)
    doc.p("What each verdict means:")
    order = ["holds", "depends", "fails", "not-testable", "not-comparable", "not-run"]
    keys = sorted(r["outcomes"], key=lambda k: (order.index(k) if k in order else len(order), k))
    doc.bullets(f"**{esc(r['outcomes'][k]['label'])}** (`{esc(k)}`): {esc(r['outcomes'][k]['meaning'])}" for k in keys)
    doc.h(3, "Criteria and details")
    for v in r["verdicts"]:
        doc.p(f"**{esc(v['claim'])}**: {esc(v['verdict_label'])}. {esc(v['meaning'])} "
              f"Criterion: {esc(v.get('criterion', ''))}."
              + ("" if "As stated" in v.get("criterion", "") else f" As stated: {esc(v.get('as_stated') or 'not stated')}.")
              + " "
              f"Detail: {esc(v.get('detail', ''))}")


def _acc(a) -> str:
    return "—" if a is None else f"{100 * float(a):.0f}%"


def table1(doc: Doc, r: dict, plots: dict) -> None:
    s = r["scale"]["ntk"]
    doc.h(2, "Table 1: NTK distance vs width")
    caption = (f"Scale {esc(r['scale']['name'])}; protocols {esc(', '.join(s['protocols']))}; n = {s['n']}, "
               f"n_test = {s['n_test']}; widths {esc(', '.join(map(str, s['widths'])))}; {s['epochs']} epochs "
               f"(paper: 500); {s['seeds']} seeds (seed s: data subset s, init s); {esc(r['scale'].get('dtype', 'float32'))} "
               f"training; reading {PRIMARY} (‖K_T − K_0‖_F); "
               "95% Student-t intervals truncated at 0; the paper's magnitudes are not comparable (its n and formula "
               "are unknown).")
    if plots.get("ntk_distance.png"):
        doc.image("ntk_distance.png", "NTK distance vs width")
    for task, summ in sorted(r["summary"]["ntk"].items()):
        rows = []
        for c in summ["cells"]:
            if c["distance"] != PRIMARY:
                continue
            base, _ = split_key(c["model"])
            paper = paper_ntk(r, task, base, c["width"]) if c["model"] == base and c["protocol"] == "paper" else None
            learned = f"{c['learned_seeds']}/{c['seeds']}" + ("" if c["learned_seeds"] == c["seeds"] else " (did not learn)")
            rows.append([model_label(r, c["model"]), esc(c["protocol"]), str(c["width"]), num(c["mean"]),
                         interval(c["ci95"]), str(c["n_seeds"]), _acc(c.get("accuracy_train")),
                         _acc(c.get("accuracy_test")), learned, num(paper)])
        doc.table(["model", "protocol", "width", "distance", "95%", "seeds", "train acc", "test acc", "learned",
                   "paper (not comparable)"], rows, caption=f"{task_label(r, task)}. {caption}")
    doc.h(3, "Slopes of log distance against log width")
    rows = []
    for task, summ in sorted(r["summary"]["ntk"].items()):
        for f in summ["slopes"]:
            rows.append([task_label(r, task), model_label(r, f["model"]), esc(f["protocol"]), esc(f["distance"]),
                         num(f["slope"]), interval(f.get("ci95")), esc(f.get("class") or "—"), str(f["n_points"])])
    doc.table(["data", "model", "protocol", "distance", "slope", "95%", "class", "points"], rows,
              caption="Least squares over all (width, seed) points; flat when the interval contains 0 or |slope| < 0.05.")


def _edge_rtol(r: dict) -> float | None:
    """The flip-set edge tolerance of the flip cells, None where no cell recorded its edge (older audits)."""
    tols = [c["edge_by_rounding"]["rtol"] for summ in r["summary"]["flip"].values() for c in summ["cells"]
            if isinstance(c.get("edge_by_rounding"), dict)]
    return max(tols) if tols else None


def _flip_caption(r: dict, what: str) -> str:
    f = r["scale"]["flip"]
    return (f"{what}. Scale {esc(r['scale']['name'])}; n = {f['n']}, n_test = {f['n_test']}; width {f['width']}; "
            f"{f['epochs']} epochs (paper: 500); {f['seeds']} seeds; {esc(f.get('dtype') or r['scale'].get('dtype', 'float32'))} "
            f"training; flip set {flip_set_sizes(r)} points (τ n); "
            f"ε = {f['eps']} in pixel space; flip-rate intervals Wilson 95% over pooled counts. "
            + (f"Floor: the flip rate when the flip set moves by random signs of size {f['null_eps']:g}. " if f.get("null_eps") else "")
            + (f"'edge tied in s/S': s of S seeds whose flip set's last and next point differ in |influence| by a "
               f"relative {_edge_rtol(r):g} or less, so rounding alone can swap them (the floor keeps the flip set). "
               if _edge_rtol(r) is not None else "")
            + "Readings: raw (the paper's text) and centred attention input side by side.")


def _learned_acc(cell: dict | None) -> str:
    if cell is None:
        return "—"
    acc = cell["accuracy"]
    return _acc(acc["test"]["mean"]) + ("" if acc["learned"] else " (did not learn)")


def _floor_text(floor: dict | None, edge: dict | None) -> str:
    """The null-eps floor, and the seeds whose flip set's edge is a tie within rounding (which that floor
    cannot show: it keeps the flip set)."""
    text = pct(floor["mean"]) if floor else "—"
    if edge and edge["seeds"]:
        text += f"; edge tied in {len(edge['seeds'])}/{edge['recorded']}"
    return text


def _flip_rows(r: dict, task: str, cells: list[dict]) -> list[list[str]]:
    rows = []
    for c in cells:
        base, _ = split_key(c["model"])
        fr, acc = c["flip_rate"], c["accuracy"]
        paper = paper_flip(r, task, base, c["attack"]) if c["model"] == base and not c["adv_train"] else None
        inside = "—"
        if paper is not None and fr["n"] >= 3 and fr["ci95"]:
            inside = "yes" if fr["ci95"][0] <= paper <= fr["ci95"][1] else "no"
        ex = c.get("excess_over_noise")
        floor = c.get("numerical_floor")
        learned = f"{acc['learned_seeds']}/{acc['seeds']}" + ("" if acc["learned"] else " (did not learn)")
        protocol = protocol_of(c) + (f", ε {schedule_label(r, schedule_of(c))}" if schedule_of(c) == "ramp" else "")
        rows.append([model_label(r, c["model"]), esc(protocol), esc(c["attack"]), pct(fr["mean"]),
                     interval(fr["ci95"], True), "—" if not ex or ex["mean"] is None else f"{100 * ex['mean']:+.1f} pt",
                     _floor_text(floor, c.get("edge_by_rounding")), num(c["spearman"]["mean"]),
                     _acc(acc["train"]["mean"]), _acc(acc["test"]["mean"]), _acc(acc["krr_test"]["mean"]), learned,
                     pct(paper) if paper is not None else "—", inside])
    return rows


FLIP_HEADER = ["model", "protocol", "attack", "flip rate", "95%", "− noise", "floor", "Spearman", "train acc",
               "test acc", "KRR acc", "learned", "paper", "paper in 95% (≥ 3 seeds)"]


def _with_paper_column(cells: list[dict], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """The paper-in-interval column only where some cell has 3 seeds or more (fewer give no usable interval)."""
    if any(c["flip_rate"]["n"] >= 3 for c in cells):
        return FLIP_HEADER, rows
    return FLIP_HEADER[:-1], [row[:-1] for row in rows]


def flip_tables(doc: Doc, r: dict, plots: dict) -> None:
    eps = r["scale"]["flip"]["eps"]
    doc.h(2, "Tables 2 and 3: influence flip rates")
    if plots.get("flip_rates.png"):
        doc.image("flip_rates.png", "flip rates")
    for task, summ in sorted(r["summary"]["flip"].items()):
        cells = [c for c in summ["cells"] if c["eps"] == eps and not c["adv_train"]]
        if not cells:
            continue
        what = f"{task_label(r, task)} ({'binary, Table 3' if is_binary(cells[0]) else '10-class, Table 2'})"
        doc.table(*_with_paper_column(cells, _flip_rows(r, task, cells)), caption=_flip_caption(r, what))
    ratios = [(task, x) for task, summ in sorted(r["summary"]["flip"].items()) for x in summ["ratios"]
              if x["eps"] == eps and x["attack"] != "noise"]
    doc.table(["data", "model / baseline", "attack", "adv. training", "protocol", "ratio", "95% (paired bootstrap)", "note"],
              [[task_label(r, t), f"{model_label(r, x['model'])} / {model_label(r, x['baseline'])}", esc(x["attack"]),
                ("yes (ε ramp)" if schedule_of(x) == "ramp" else "yes") if x["adv_train"] else "no",
                esc(x["readings"].rsplit("protocol=", 1)[-1]), num(x["ratio"]),
                interval(x["ci95"]), esc(x.get("reason") or "")] for t, x in ratios],
              caption="Flip-rate ratios of each model to the baseline, per data set and attack.")
    doc.h(2, "Table 4: standard vs adversarial training (PGD)")
    rows = []
    for task, summ in sorted(r["summary"]["flip"].items()):
        for a in summ["ablation"]:
            base, _ = split_key(a["model"])
            schedule = a.get("adv_schedule") or "constant"
            std, adv = ablation_cells(summ, a, schedule)
            rows.append([task_label(r, task), model_label(r, a["model"]), esc(schedule_label(r, schedule)),
                         pct(a["standard"]["mean"]), interval(a["standard"]["ci95"], True), _learned_acc(std),
                         pct(a["adversarial_training"]["mean"]), interval(a["adversarial_training"]["ci95"], True),
                         _learned_acc(adv), pct(paper_flip(r, task, base, "pgd", "standard")),
                         pct(paper_flip(r, task, base, "pgd", "adversarial"))])
    doc.table(["data", "model", "ε schedule", "standard", "95%", "test acc", "adversarial training", "95%", "test acc",
               "paper standard", "paper adversarial"],
              rows, caption=_flip_caption(r, f"PGD adversarial training with {r['scale']['flip']['adv_train_steps']} "
                                             "steps per batch; ε schedules: constant (the full ε from the first step, "
                                             "the paper's plain wording) and ramp (ε warmed up linearly over the first "
                                             "epochs, a reading the paper does not mention); test accuracy of the "
                                             "networks each rate comes from, '(did not learn)' where the gate fails"))
    adv_rows = []
    for task, summ in sorted(r["summary"]["flip"].items()):
        adv_rows += _flip_rows(r, task, [c for c in summ["cells"] if c["adv_train"]])
    if adv_rows:
        adv_cells = [c for summ in r["summary"]["flip"].values() for c in summ["cells"] if c["adv_train"]]
        doc.table(*_with_paper_column(adv_cells, adv_rows), caption="The adversarially trained cells with their accuracies.")


def eps_sweep(doc: Doc, r: dict, plots: dict) -> None:
    eps = r["scale"]["flip"]["eps"]
    rows = []
    for task, summ in sorted(r["summary"]["flip"].items()):
        swept = sorted({c["eps"] for c in summ["cells"] if not c["adv_train"]})
        if len(swept) < 2:
            continue
        for c in summ["cells"]:
            if not c["adv_train"] and protocol_of(c) == "paper" and c["attack"] in r["scale"]["flip"]["eps_sweep_attacks"]:
                rows.append([task_label(r, task), model_label(r, c["model"]), esc(c["attack"]), num(c["eps"]),
                             pct(c["flip_rate"]["mean"]), interval(c["flip_rate"]["ci95"], True),
                             _acc(c["accuracy"]["test"]["mean"])])
    if not rows:
        return
    doc.h(2, "ε sweep (the paper lists ε ∈ {0.1, 0.2, 0.3, 0.5} and reports no numbers)")
    if plots.get("eps_sweep.png"):
        doc.image("eps_sweep.png", "flip rate vs epsilon")
    doc.table(["data", "model", "attack", "ε", "flip rate", "95%", "test acc"], rows,
              caption=f"Information only, never part of a verdict; the ε = {eps} points are Table 2's cells.")


def kappa(doc: Doc, r: dict, plots: dict) -> None:
    doc.h(2, "κ of the data and the widths Thm 4.7 predicts")
    if plots.get("kappa.png"):
        doc.image("kappa.png", "kappa vs n")
    rows = []
    for w in r["summary"]["widths"]["rows"]:
        bound = w.get("rel_error_bound")
        prec = esc(w.get("precision")) + (f" (rel. error ≤ {num(bound)})" if bound is not None and bound > 1e-6 else "")
        col = w.get("collinearity") or {}
        rows.append([task_label(r, w["task"]), str(w["n"]), model_label(r, w["features"]), pow10(w["log10_kappa_G"]),
                     pow10(w["log10_pseudo_kappa_G"]), pow10(w["log10_kappa_d"]), prec,
                     num(col.get("top_eigenvalue_share")), num(col.get("mean_cosine")), pow10(w["log10_v1"]),
                     pow10(w["log10_v2"])])
    doc.table(["data", "n", "view", "κ(G)", "pseudo-κ", "κ_d", "precision", "top-eigenvalue share", "mean cosine",
               "v1 width κ⁶/ε²", "v2 width κ_d⁶ n ln n"], rows,
              caption=f"ε = {r['scale']['widths']['eps']}; κ of the Gram matrix of the rows as each model sees them.")
    matches = r["summary"]["widths"]["paper_kappa_match"]
    doc.table(["data", "view", "reading", "closest n", "ours", "paper"],
              [[task_label(r, m["task"]), model_label(r, m["view"]), esc(m["reading"]), str(m.get("n")),
                pow10(m.get("log10_kappa")), num(m["paper_kappa"])] for m in matches],
              caption="The n of our grid whose κ is closest to the paper's κ(G).")
    rows = []
    for task, ms in sorted(r["summary"]["measured_widths"].items()):
        for m in ms:
            if m["distance"] in ("init_vs_infinite_relative", "after_vs_infinite_relative", "after_vs_init_relative"):
                rows.append([task_label(r, task), model_label(r, m["model"]), esc(m.get("protocol")), esc(m["distance"]),
                             pow10(m["log10_width"]), esc(m["label"])])
    doc.table(["data", "model", "protocol", "distance", "width where it reaches ε", "how"], rows,
              caption="Measured widths: only where the slope's whole 95% interval lies below 0.")
    if plots.get("widths.png"):
        doc.image("widths.png", "predicted and measured widths")


def _k_layer_data(r: dict) -> str:
    """Each data set and n of the k-layer cells, and whether the mpmath recursion measured it."""
    seen = {}
    for c in cells_of_kind(r, "k-layer"):
        for row in (c.get("result") or {}).get("rows") or []:
            key = (row["dataset"], row["n"])
            seen[key] = seen.get(key, False) or row.get("exponent_measured") is not None
    return "; ".join(f"{esc(d)} n={n}: {'mpmath recursion' if m else 'Gram polynomial (theory)'}"
                     for (d, n), m in sorted(seen.items())) or "—"


def k_layer(doc: Doc, r: dict) -> None:
    """κ of k stacked linearised-attention layers on real rows, against the three candidate laws."""
    doc.h(2, "k layers of attention on real data")
    s, scale = r["summary"].get("k_layer"), r["scale"].get("k_layer") or {}
    if not s:
        doc.p("No k-layer cells at this scale.")
        return
    laws = {}  # k -> the candidate exponents, as the rows carry them
    for c in cells_of_kind(r, "k-layer"):
        for row in (c.get("result") or {}).get("rows") or []:
            laws.setdefault(row["k"], row.get("candidates") or {})
    skipped = s.get("over_digit_cap") or {}
    which = "; ".join(f"{code} k = {','.join(map(str, ks))}" for code, ks in skipped.items())
    capped = "" if not skipped else (f"; Grams that need more than {s.get('max_measure_digits')} mpmath digits are "
                                     f"not measured and show the polynomial's exponent ({esc(which)})")
    rows = []
    for c in s["cells"]:
        cand = laws.get(c["k"], {})
        rows.append([esc(c["code"]), str(c["k"]), num(c["exact_exponent"]),
                     "—" if c["min"] is None else f"{num(c['min'], 4)}–{num(c['max'], 4)}",
                     *(num(cand.get(name)) for name in ("2k+1", "2^(k+1)-1", "3^k")),
                     esc(", ".join(c["fits"]) or "none")])
    doc.table(["code", "k", "exact exponent", "measured exponent (min–max)", "2k+1", "2^(k+1)−1", "3^k",
               "laws that fit"], rows,
              caption=f"p with κ(Gram_k) = κ(G)^p on the unit rows of {esc(', '.join(scale.get('datasets', [])))}, "
                      f"n = {esc(', '.join(map(str, scale.get('n', []))))}; the mpmath recursion measures n ≤ "
                      f"{esc(scale.get('measure_max_n'))}, larger n use the Gram polynomial of X's singular "
                      f"values{capped}; "
                      f"a law fits when every exponent is within {num(s['tolerance'])} (relative) of it. Codes: Q, K, V "
                      "each the input X (i) or the current layer X_l (c).")
    doc.bullets(f"**{esc(code)}** follows {esc(' and '.join(fl) or 'no law of the three')}"
                for code, fl in sorted(s["follows"].items()))
    doc.p(f"Data sets and n: {_k_layer_data(r)}. Reading: {esc(s.get('reading', ''))}.")


LIMITATIONS = ("limitation-softmax", "limitation-inductive", "prop-b4", "limitation-truncation")


def limitations(doc: Doc, r: dict, plots: dict) -> None:
    """One subsection per limitation the paper names, with its verdict, and the truncation trade-off."""
    rows = [v for v in r["verdicts"] if v["claim"] in LIMITATIONS]
    if not rows:
        return
    doc.h(2, "Beyond the paper: its named limitations, measured")
    inputs = ", ".join(r["scale"].get("attention_inputs") or ["raw"])
    doc.p("Softmax attention, inductive (within-image) attention, learnable Q/K/V (Prop B.4) and truncated "
          "attention run in Table 1 and Table 2 beside 2L-ReLU and MLP-Attn, under the same accuracy gate, once per "
          f"attention-input reading ({esc(inputs)}); each is compared with MLP-Attn under the same reading, and a "
          "reading's name starts with its attention input (raw is the paper's text and the as-stated reading).")
    for v in rows:
        doc.h(3, f"{esc(v['claim'])}: {esc(v['verdict_label'])}")
        doc.p(f"{esc(v.get('statement', ''))}. {esc(v['meaning'])} Criterion: {esc(v.get('criterion', ''))}. "
              f"Holds under: {esc(', '.join(v.get('readings_holding', [])) or '—')}; fails under: "
              f"{esc(', '.join(v.get('readings_failing', [])) or '—')}; not testable under: "
              f"{esc(', '.join(v.get('readings_not_testable', [])) or '—')}. Detail: {esc(v.get('detail', ''))}")
    if plots.get("truncation.png"):
        doc.image("truncation.png", "truncated attention: flip rate and accuracy against the rank")


def missing(doc: Doc, r: dict) -> None:
    doc.h(2, "Missing cells")
    if not r.get("missing"):
        doc.p("None: every planned cell ran.")
        return
    doc.table(["kind", "cell", "why"], [[esc(m["kind"]), esc(m["label"]), esc(m["why"])] for m in r["missing"]])


def scale_table(doc: Doc, r: dict) -> None:
    doc.h(2, "Scale and reproducibility")
    rows = []
    for key, meta in r["scale_help"].items():
        part, _, field = key.partition(".")
        value = r["scale"][part][field] if field else r["scale"].get(part)
        rows.append([esc(key), esc(value), esc(meta["help"])])
    doc.table(["field", "value", "meaning"], rows)
    prov = r.get("provenance", {})
    doc.bullets([f"{esc(k)} {esc(v)}" for k, v in sorted(prov.get("versions", {}).items())]
                + [f"data root: {esc(r.get('options', {}).get('data_root'))}",
                   f"cache: {esc(r.get('options', {}).get('cache_dir'))} (refused entries: "
                   f"{len(r.get('cache_refusals') or [])})",
                   "every cell of results.json carries its config, seed, wall time and provenance"])
