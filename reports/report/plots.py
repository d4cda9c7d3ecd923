"""The report's plots, each readable without the text: one function per PNG, drawn from the summary only."""

from __future__ import annotations

from pathlib import Path

from malleability.reports.report.lookup import (ATTACKS, PRIMARY, ablation_cells, is_binary, model_text, paper_flip, paper_ntk,
                                                ramp_epochs, schedule_of, split_key)

MARKERS = "osD^vP*X"
PAPER_MODELS = ("relu", "mlp-attn")  # the variants beyond the paper have their own verdict rows


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> bool:
    import textwrap

    top = 0.96
    title = fig._suptitle
    if title is not None:
        # a title wider than the figure is cut off at both edges: wrap it to the figure's width
        lines = textwrap.wrap(title.get_text(), width=max(40, int(fig.get_figwidth() * 15)))
        title.set_text("\n".join(lines))
        top = 1 - 0.045 * len(lines) * 4.6 / fig.get_figheight()
    if not getattr(fig, "_laid_out", False):
        fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return True


def _positive_errors(mean, ci):
    """Whiskers for a log axis: never below a small positive fraction of the mean."""
    if mean is None or not ci or mean <= 0:
        return [[0], [0]]
    lo = max(ci[0], mean / 10)
    return [[mean - lo], [max(0.0, ci[1] - mean)]]


def plot_ntk(results: dict, path: Path) -> bool:
    ntk = results["summary"]["ntk"]
    if not ntk:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(ntk), figsize=(6.5 * len(ntk), 6.2), squeeze=False)
    for ax, (task, summ) in zip(axes[0], sorted(ntk.items())):
        keys = sorted({(c["model"], c["protocol"]) for c in summ["cells"] if c["distance"] == PRIMARY
                       and split_key(c["model"])[0] in PAPER_MODELS})
        for i, (model, protocol) in enumerate(keys):
            cells = sorted((c for c in summ["cells"] if c["distance"] == PRIMARY and c["model"] == model
                            and c["protocol"] == protocol and c["mean"]), key=lambda c: c["width"])
            if not cells:
                continue
            xs = [c["width"] for c in cells]
            ys = [c["mean"] for c in cells]
            err = [sum((_positive_errors(c["mean"], c["ci95"])[j] for c in cells), []) for j in (0, 1)]
            learned = [c["learned_seeds"] == c["seeds"] for c in cells]
            note = "" if all(learned) else " (did not learn)" if not any(learned) else " (some widths did not learn)"
            marker = MARKERS[i % len(MARKERS)]
            bar = ax.errorbar(xs, ys, yerr=err, marker=marker, capsize=3,
                              linestyle="-" if protocol == "paper" else "--", label=f"{model_text(results, model)}, {protocol}{note}")
            failed = [(x, y) for x, y, ok in zip(xs, ys, learned) if not ok]
            if failed:  # hollow markers at exactly the widths whose networks did not learn
                ax.plot([x for x, _ in failed], [y for _, y in failed], linestyle="none", marker=marker,
                        mfc="white", color=bar.lines[0].get_color(), zorder=3)
            base, _ = split_key(model)
            paper = [(w, paper_ntk(results, task, base, w)) for w in (16, 1024, 4096)]
            paper = [(w, v) for w, v in paper if v is not None]
            if paper and model == base and protocol == "paper":
                ax.plot([p[0] for p in paper], [p[1] for p in paper], marker="*", markersize=13, linestyle=":",
                        mfc="white", color=bar.lines[0].get_color(), label=f"paper {model_text(results, model)}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width m")
        ax.set_ylabel("‖K_T − K_0‖_F (after vs init, absolute)")
        ax.set_title(results.get("labels", {}).get("datasets", {}).get(task, task))
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)  # below: never over the data
    fig.suptitle("NTK distance vs width: ours (lines; 95% intervals, lower whiskers cut at a tenth of the mean) "
                 "and the paper's Table 1 (stars); hollow markers: widths whose networks did not learn", fontsize=9)
    return _save(plt, fig, path)


def _ablation_learned(summ: dict, ablation: dict, *, adv_train: bool, schedule: str = "constant") -> bool:
    """Whether the networks behind one bar of the Table 4 panel learned (True when no cell says otherwise)."""
    std, adv = ablation_cells(summ, ablation, schedule)
    cell = adv if adv_train else std
    return True if cell is None else bool(cell["accuracy"]["learned"])


# Table 4 bars: standard training, then adversarial training under each schedule
_TABLE4_BARS = (("standard", None, "C0", "standard training"),
                ("adversarial_training", "constant", "C3", "PGD adversarial training"),
                ("adversarial_training", "ramp", "C4", "PGD adversarial training, ε ramp"))


def plot_flip(results: dict, path: Path) -> bool:
    flip = results["summary"]["flip"]
    eps = results["scale"]["flip"]["eps"]
    panels = [(t, s) for t, s in sorted(flip.items()) if any(c["eps"] == eps for c in s["cells"])]
    has_adv = any(s["ablation"] for _, s in panels)
    if not panels:
        return False
    plt = _plt()
    n = len(panels) + (1 if has_adv else 0)
    fig, axes = plt.subplots(n, 1, figsize=(12, 3.6 * n), squeeze=False)
    for ax, (task, summ) in zip(axes[:, 0], panels):
        cells = [c for c in summ["cells"] if c["eps"] == eps and not c["adv_train"]
                 and c["readings"].endswith("protocol=paper") and split_key(c["model"])[0] in PAPER_MODELS]
        models = sorted({c["model"] for c in cells})
        width = 0.8 / max(1, len(models))
        for j, model in enumerate(models):
            labelled = False
            for i, attack in enumerate(ATTACKS):
                c = next((c for c in cells if c["model"] == model and c["attack"] == attack), None)
                if c is None:
                    continue
                first, labelled = not labelled, True
                x = i + (j - (len(models) - 1) / 2) * width
                fr = c["flip_rate"]
                ci = fr["ci95"] or [fr["mean"], fr["mean"]]
                ax.bar(x, fr["mean"], width, color=f"C{j}", hatch=None if c["accuracy"]["learned"] else "//",
                       edgecolor="black" if not c["accuracy"]["learned"] else f"C{j}",
                       label=model_text(results, model) + ("" if c["accuracy"]["learned"] else " (did not learn)")
                       if first else None)
                ax.errorbar(x, fr["mean"], yerr=[[fr["mean"] - ci[0]], [ci[1] - fr["mean"]]], color="0.3", capsize=2)
                base, _ = split_key(model)
                paper = paper_flip(results, task, base, attack) if model == base else None
                if paper is not None:
                    ax.plot(x, paper, marker="D", color="red", mfc="white", markersize=7, linestyle="none",
                            label="paper")
        ax.set_xticks(range(len(ATTACKS)))
        ax.set_xticklabels([a.upper() if a != "noise" else "noise (control)" for a in ATTACKS])
        ax.set_ylim(0, 1)
        ax.set_ylabel("flip rate")
        kind = "binary" if cells and is_binary(cells[0]) else "10-class"
        ax.set_title(f"{results.get('labels', {}).get('datasets', {}).get(task, task)} ({kind}), ε = {eps}", fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=6.5, ncol=3, loc="upper right")
    if has_adv:
        ax = axes[-1, 0]
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        # one group per (data set, model): the standard bar and one adversarial bar per schedule
        groups: dict[tuple, dict] = {}
        for t, s in panels:
            for a in s["ablation"]:
                g = groups.setdefault((t, a["model"], a["attack"], a["eps"], a["readings"]),
                                      {"task": t, "summ": s, "entry": a, "adv": {}})
                g["adv"][a.get("adv_schedule") or "constant"] = a
        groups = list(groups.values())
        shown = [b for b in _TABLE4_BARS if b[1] is None or any(b[1] in g["adv"] for g in groups)]
        bar_w = 0.8 / len(shown)
        any_unlearned = any_paper = False
        for i, g in enumerate(groups):
            task, summ = g["task"], g["summ"]
            for j, (key, schedule, color, _) in enumerate(shown):
                a = g["entry"] if schedule is None else g["adv"].get(schedule)
                if a is None:
                    continue
                st = a[key]
                x = i + (j - (len(shown) - 1) / 2) * bar_w
                ci = st["ci95"] or [st["mean"], st["mean"]]
                learned = _ablation_learned(summ, a, adv_train=schedule is not None, schedule=schedule or "constant")
                any_unlearned |= not learned
                ax.bar(x, st["mean"], bar_w, color=color, hatch=None if learned else "//",
                       edgecolor=color if learned else "black")
                ax.errorbar(x, st["mean"], yerr=[[st["mean"] - ci[0]], [ci[1] - st["mean"]]], color="0.3", capsize=2)
                base, _ = split_key(a["model"])
                paper = (paper_flip(results, task, base, "pgd", "standard" if schedule is None else "adversarial")
                         if a["model"] == base else None)
                if paper is not None:
                    any_paper = True
                    ax.plot(x, paper, marker="D", color="red", mfc="white", markersize=7, linestyle="none")
        # legend from plain patches: a hatched first bar must not make its colour's entry look unlearned
        handles = [Patch(facecolor=color, label=label) for _, _, color, label in shown]
        if any_unlearned:
            handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="did not learn"))
        if any_paper:
            handles.append(Line2D([], [], marker="D", color="red", mfc="white", markersize=7, linestyle="none",
                                  label="paper"))
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{g['task']}\n{model_text(results, g['entry']['model'])}" for g in groups], fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("PGD flip rate")
        title = "Table 4: standard vs adversarial training"
        if any(b[1] == "ramp" for b in shown) and ramp_epochs(results) and "epochs" in results["scale"]["flip"]:
            title += (f" (ε ramp: ε rises linearly to its full value over the first {ramp_epochs(results)} of "
                      f"{results['scale']['flip']['epochs']} epochs)")
        ax.set_title(title, fontsize=9)
        ax.legend(handles=handles, fontsize=7)
    fig.suptitle("Influence flip rates (bars: ours with Wilson 95% intervals; red diamonds: the paper; "
                 "hatched: network did not learn)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig._laid_out = True
    return _save(plt, fig, path)


def plot_kappa(results: dict, path: Path) -> bool:
    rows = results["summary"]["widths"]["rows"]
    if not rows:
        return False
    plt = _plt()
    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, view in enumerate(sorted({r["features"] for r in rows if r["task"] == task})):
            pts = sorted((r["n"], r["log10_pseudo_kappa_G"]) for r in rows
                         if r["task"] == task and r["features"] == view and r["log10_pseudo_kappa_G"] is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=MARKERS[i], label=f"{model_text(results, view)} view")
        paper = [p["value"] for p in results.get("paper_numbers", []) if p.get("quantity") == "kappa_G"
                 and p.get("dataset") == task]
        if paper:
            import math

            ax.axhline(math.log10(paper[0]), color="red", linestyle="--", label=f"paper κ(G) = {paper[0]:.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("training-set size n")
        ax.set_ylabel("log10 pseudo-κ of the Gram matrix")
        ax.set_title(results.get("labels", {}).get("datasets", {}).get(task, task))
        ax.legend(fontsize=7)
    fig.suptitle("Condition number of the data as each model sees it, against n", fontsize=9)
    return _save(plt, fig, path)


def plot_widths(results: dict, path: Path) -> bool:
    rows = results["summary"]["widths"]["rows"]
    measured = [(t, m) for t, ms in results["summary"]["measured_widths"].items() for m in ms
                if m["log10_width"] is not None]
    if not rows:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 5))
    # one colour per (data set, view): each model sees differently conditioned rows
    groups = sorted({(r["task"], r["features"]) for r in rows})
    for i, (task, view) in enumerate(groups):
        pts = sorted((r["n"], r["log10_v1"], r["log10_v2"]) for r in rows
                     if r["task"] == task and r["features"] == view)
        name = f"{model_text(results, task)}, {model_text(results, view)} view"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=f"C{i}", label=f"{name}: v1 κ⁶/ε²")
        ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="s", linestyle="--", color=f"C{i}",
                label=f"{name}: v2 κ_d⁶ n ln n")
    top = max([p for r in rows for p in (r["log10_v1"], r["log10_v2"]) if p is not None] + [5.0]) + 5
    n_ntk = results["scale"]["ntk"]["n"]
    shown = set()
    for task, m in measured:
        above = m["log10_width"] > top
        label = ("measured, extrapolated" if m["extrapolated"] else "measured") + (" (above the axis)" if above else "")
        ax.plot(n_ntk, min(m["log10_width"], top - 0.5), marker="^" if above else "*", markersize=11,
                linestyle="none", color="black", mfc="white" if m["extrapolated"] else "black",
                label=None if label in shown else label)
        shown.add(label)
    ax.set_ylim(0, top)
    import math

    widest = max(results["scale"]["ntk"]["widths"])
    ax.axhline(math.log10(widest), color="grey", linestyle=":", label=f"largest width run ({widest})")
    ax.set_xscale("log")
    ax.set_xlabel("training-set size n")
    ax.set_ylabel("log10 width")
    ax.set_title("Widths Thm 4.7 predicts from our κ (unit-row data) vs widths where the measured distance reaches ε",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: never over the lines
    return _save(plt, fig, path)


def plot_eps(results: dict, path: Path) -> bool:
    flip = results["summary"]["flip"]
    series = {}
    for task, summ in flip.items():
        for c in summ["cells"]:
            if not c["adv_train"] and c["readings"].endswith("protocol=paper") \
                    and c["attack"] in results["scale"]["flip"]["eps_sweep_attacks"]:
                series.setdefault((task, c["model"], c["attack"]), []).append((c["eps"], c["flip_rate"]["mean"]))
    series = {k: sorted(v) for k, v in series.items() if len(v) >= 2}
    if not series:
        return False
    plt = _plt()
    tasks = sorted({k[0] for k in series})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, (key, pts) in enumerate(sorted((k, v) for k, v in series.items() if k[0] == task)):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=MARKERS[i % len(MARKERS)],
                    linestyle="--" if key[2] == "noise" else "-", label=f"{model_text(results, key[1])}, {key[2]}")
        ax.set_ylim(0, 1)
        ax.set_xlabel("ℓ∞ budget ε (pixel space)")
        ax.set_ylabel("flip rate")
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.suptitle("ε sweep: flip rate against the budget (dashed: the random-sign noise control)", fontsize=9)
    return _save(plt, fig, path)


def plot_truncation(results: dict, path: Path) -> bool:
    """Accuracy against malleability over the rank r of truncated attention (the paper's untested remark), one
    panel per data set, one line style per attention-input reading."""
    import re

    from matplotlib.ticker import NullFormatter

    eps = results["scale"]["flip"]["eps"]
    series: dict[str, dict[str, list]] = {}
    for task, summ in sorted(results["summary"]["flip"].items()):
        for c in summ["cells"]:
            base, opts = split_key(c["model"])
            if base != "truncated-attn" or c["attack"] != "pgd" or c["eps"] != eps or c["adv_train"]:
                continue
            m = re.search(r"rank=(\w+)", opts)
            rank = None if (m is None or m.group(1) == "None") else int(m.group(1))
            att = re.search(r"attention_input=(\w+)", opts)
            series.setdefault(task, {}).setdefault(att.group(1) if att else "raw", []).append(
                (rank, c["flip_rate"], c["accuracy"]))
    if not series:
        return False

    def mlp_attn_input(model_key: str) -> str | None:
        base, opts = split_key(model_key)
        if base != "mlp-attn":
            return None
        att = re.search(r"attention_input=(\w+)", opts)
        return att.group(1) if att else "raw"

    for task, by_input in series.items():  # full rank is MLP-Attn itself: its own cells where none were planned
        for att, pts in by_input.items():
            if any(r is None for r, _, _ in pts):
                continue
            pts.extend((None, c["flip_rate"], c["accuracy"]) for c in results["summary"]["flip"][task]["cells"]
                       if mlp_attn_input(c["model"]) == att and c["attack"] == "pgd" and c["eps"] == eps
                       and not c["adv_train"] and c["readings"].endswith("protocol=paper"))
    plt = _plt()
    fig, axes = plt.subplots(1, len(series), figsize=(7.5 * len(series), 4.4), squeeze=False)
    styles = {"raw": "-", "center": "--", "standardize": ":"}
    for ax, (task, by_input) in zip(axes[0], sorted(series.items())):
        ranks = sorted({r for pts in by_input.values() for r, _, _ in pts if r is not None})
        full = max(ranks + [1]) * 4  # full rank drawn to the right of the largest r
        chance = 0.0
        for att, pts in sorted(by_input.items(), key=lambda kv: (kv[0] != "raw", kv[0])):
            pts = sorted(pts, key=lambda p: full if p[0] is None else p[0])
            xs = [full if r is None else r for r, _, _ in pts]
            fr = [p[1]["mean"] for p in pts]
            lo = [p[1]["mean"] - (p[1]["ci95"] or [p[1]["mean"]] * 2)[0] for p in pts]
            hi = [(p[1]["ci95"] or [p[1]["mean"]] * 2)[1] - p[1]["mean"] for p in pts]
            ls = styles.get(att, "-.")
            ax.errorbar(xs, fr, yerr=[lo, hi], marker="o", capsize=3, color="C3", linestyle=ls,
                        label=f"PGD flip rate, {att} input (Wilson 95%)")
            ax.plot(xs, [p[2]["test"]["mean"] for p in pts], marker="s", color="C0", linestyle=ls,
                    label=f"test accuracy, {att} input")
            chance = max([chance] + [p[2]["chance"] or 0 for p in pts])
        ax.axhline(chance, color="grey", linestyle=":", label=f"chance accuracy ({chance:.2f})")
        ticks = ranks + [full]
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(r) for r in ranks] + ["full"])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, 1)
        ax.set_xlabel("rank r of the truncated attention matrix C_r")
        ax.set_ylabel("flip rate / test accuracy")
        ax.set_title(results.get("labels", {}).get("datasets", {}).get(task, task))
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Truncated attention: malleability and accuracy against the rank (full = MLP-Attn)", fontsize=9)
    return _save(plt, fig, path)


PLOTS = {"ntk_distance.png": plot_ntk, "flip_rates.png": plot_flip, "kappa.png": plot_kappa,
         "widths.png": plot_widths, "eps_sweep.png": plot_eps, "truncation.png": plot_truncation}
