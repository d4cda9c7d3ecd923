"""Verdicts: each claim of the paper judged on the summary, each criterion written beside its judge.

Four outcomes, named the same in results.json and in the report (:data:`OUTCOMES`):

* ``holds`` (*holds as stated*): the reading closest to the paper holds; readings under which
  it fails are listed as information;
* ``depends`` (*holds only under a reading*): it fails (or cannot be tested) as stated, and the
  readings under which it holds are named;
* ``fails`` (*fails under every decided reading*);
* ``not-testable``: every reading rests on networks that did not learn, or the paper's
  quantity is unknown.

Two further labels say why nothing was judged: ``not-comparable`` (the paper's formula or
sample size is unknown, so magnitudes are shown, not judged) and ``not-run`` (no cells).

Each reading is itself ``holds``, ``fails`` or ``not-testable``; :func:`combine` turns them
into the claim's outcome. A reading whose cells include a network that did not learn is
``not-testable``, never ``fails``.
"""

from __future__ import annotations

import math
from typing import Callable

from malleability.reports.audit import paper_numbers as P
from malleability.reports.audit.summary import PRIMARY_NTK_READING, flip_cell
from malleability.stats import FLAT_SLOPE, slope_class
from malleability.theory.claims.verdicts import FAILS, HOLDS, NOT_TESTABLE, VERDICTS, claim_verdict

OUTCOMES = {
    **VERDICTS,
    "not-comparable": ("not comparable", "The paper's formula or sample size is unknown, so its magnitudes are shown "
                                         "beside ours but not judged."),
    "not-run": ("not run", "No cells of this claim ran at this scale."),
}
FACTOR = 2.0  # a ratio "agrees" within this factor of the paper's


def combine(as_stated: str | None, readings: dict[str, str]) -> str:
    """The claim's outcome from its readings' outcomes (holds / fails / not-testable each), by the theory's rule.

    ``as_stated``: the name of the reading closest to the paper (None: the paper leaves it open).
    """
    if not readings:
        return "not-run"
    return claim_verdict(readings.get(as_stated) if as_stated is not None else None, readings)


def reading_outcome(oks: list[bool | None]) -> str | None:
    """A reading from its comparisons: None entries are untestable (the networks did not learn)."""
    if not oks:
        return None
    judged = [o for o in oks if o is not None]
    if len(judged) < len(oks):
        return NOT_TESTABLE if not judged or all(judged) else FAILS
    return HOLDS if all(judged) else FAILS


def row(claim: str, statement: str, criterion: str, source: str, readings: dict[str, str | None],
        as_stated: str | None, detail: str, verdict: str | None = None) -> dict:
    readings = {k: v for k, v in readings.items() if v is not None}
    verdict = verdict or combine(as_stated, readings)
    label, meaning = OUTCOMES[verdict]
    return {"claim": claim, "statement": statement, "criterion": criterion, "source": source, "verdict": verdict,
            "verdict_label": label, "meaning": meaning, "as_stated": as_stated, "readings": readings,
            "readings_holding": sorted(k for k, v in readings.items() if v == HOLDS),
            "readings_failing": sorted(k for k, v in readings.items() if v == FAILS),
            "readings_not_testable": sorted(k for k, v in readings.items() if v == NOT_TESTABLE),
            "detail": detail}


JUDGES: list[Callable[[dict, dict], list[dict]]] = []


def judge(fn):
    JUDGES.append(fn)
    return fn


def task_classes(task: str) -> str:
    from malleability.empirics.data import parse_classes
    from malleability.reports.audit.scales import TASKS

    dataset, spec = TASKS[task]
    cls = parse_classes(spec, dataset)
    return ",".join(map(str, cls)) if cls else "all"


# --------------------------------------------------------------------------- theory

THEORY_CRITERION = ("the theory checker's verdict over its readings (exact rationals, float64, mpmath on generated "
                    "matrices), each failing reading with its smallest counterexample")


@judge
def theory_verdicts(results: dict, summary: dict) -> list[dict]:
    out = []
    for c in results["cells"]:
        if c["kind"] != "theory":
            continue
        claim = c["tags"]["claim"]
        res = c.get("result") or {}
        if c["status"] == "failed" or not res:
            out.append(row(claim, "", THEORY_CRITERION, "theory.check_claims", {}, None,
                           c.get("error") or "not run", verdict="not-run"))
            continue
        readings = {r["name"]: {"holds": HOLDS, "fails": FAILS}.get(r.get("verdict"), NOT_TESTABLE)
                    for r in res.get("readings", [])}
        verdict = res.get("verdict")
        verdict = verdict if verdict in OUTCOMES else combine(res.get("as_stated"), readings)
        ce = res.get("counterexample")
        detail = f"smallest counterexample ({ce.get('reading')}): {ce.get('matrix', ce)}" if ce else "no counterexample"
        out.append(row(claim, res.get("statement", ""), THEORY_CRITERION, "theory.check_claims", readings,
                       res.get("as_stated"), detail, verdict=verdict))
    return out


# --------------------------------------------------------------------------- Table 1

NTK_TREND_CRITERION = (f"per distance reading and attention-input reading: for every model and data set, our log-log "
                       f"slope of the distance over width is classed rises / flat / falls (flat when its 95% interval "
                       f"contains 0 or |slope| < {FLAT_SLOPE}) and agrees when its class equals that of the paper's "
                       f"slope between m = 16 and m = 4096 (|slope| < {FLAT_SLOPE}: flat). Pairs whose networks did "
                       f"not learn, or whose slope has no interval (two points), are not testable. As stated: {PRIMARY_NTK_READING}, raw attention input, Adam")


def paper_slope(model: str, task: str) -> float | None:
    vals = P.NTK_DISTANCE_TABLE["values"].get((model, task))
    if not vals:
        return None
    return math.log(vals[-1] / vals[0]) / math.log(P.NTK_DISTANCE_TABLE["widths"][-1] / P.NTK_DISTANCE_TABLE["widths"][0])


def paper_slope_class(model: str, task: str) -> str | None:
    s = paper_slope(model, task)
    return None if s is None else ("flat" if abs(s) < FLAT_SLOPE else "rises" if s > 0 else "falls")


def _ntk_slope(summary, task, model, reading, distance, protocol="paper"):
    from malleability.empirics.experiments.ntk_distance import find_slope
    from malleability.reports.audit.summary import model_key

    s = summary["ntk"].get(task)
    return find_slope(s, model=model_key(model, reading), distance=distance, protocol=protocol) if s else None


def _ntk_learned(summary, task, model, reading, protocol="paper") -> bool:
    from malleability.reports.audit.summary import model_key

    cells = [c for c in (summary["ntk"].get(task) or {}).get("cells", [])
             if c["model"] == model_key(model, reading) and c["protocol"] == protocol]
    return bool(cells) and all(c["learned_seeds"] == c["seeds"] for c in cells)


@judge
def ntk_trend(results: dict, summary: dict) -> list[dict]:
    attention_readings = results["scale"]["attention_inputs"]
    readings, details = {}, []
    distances = sorted({s["distance"] for t in summary["ntk"].values() for s in t["slopes"]})
    for distance in distances:
        for att in attention_readings:
            oks = []
            agree = 0
            untestable = {"did not learn": 0, "a slope without an interval": 0}
            attention_pairs = 0  # a reading with no cells of the attention model says nothing of it
            for (model, task) in P.NTK_DISTANCE_TABLE["values"]:
                reading = att if model != results["scale"]["baseline"] else "-"
                fit = _ntk_slope(summary, task, model, reading, distance)
                if fit is None or fit.get("slope") is None:
                    continue
                attention_pairs += model != results["scale"]["baseline"]
                if not _ntk_learned(summary, task, model, reading):
                    oks.append(None)
                    untestable["did not learn"] += 1
                    continue
                if slope_class(fit) is None:  # two points: a slope without an interval decides nothing
                    oks.append(None)
                    untestable["a slope without an interval"] += 1
                    continue
                ok = slope_class(fit) == paper_slope_class(model, task)
                agree += ok
                oks.append(ok)
                if distance == PRIMARY_NTK_READING:
                    ci = fit.get("ci95")
                    details.append(f"{task} {model} ({att}): ours {fit['slope']:+.3f}"
                                   + (f" (95%: {ci[0]:+.3f}..{ci[1]:+.3f})" if ci else "")
                                   + f" {slope_class(fit)}, paper {paper_slope(model, task):+.3f} "
                                     f"{paper_slope_class(model, task)}")
            name = f"{distance}/{att}"
            if not attention_pairs:
                continue
            readings[name] = reading_outcome(oks)
            if oks:
                testable = [o for o in oks if o is not None]
                why = "; ".join(f"{count} not testable: {reason}" for reason, count in untestable.items() if count)
                details.append(f"{name}: {agree} of {len(testable)} testable model/data pairs agree with the "
                               f"paper's direction" + (f" ({why})" if why else ""))
    return [row("ntk-trend", "NTK distance of MLP-Attn grows with width while 2L-ReLU's shrinks or stays flat "
                "(non-convergent NTK dynamics; Table 1)", NTK_TREND_CRITERION, P.NTK_DISTANCE_TABLE["source"],
                readings, f"{PRIMARY_NTK_READING}/raw", "; ".join(details) or "no NTK-distance cells")]


@judge
def table1_values(results: dict, summary: dict) -> list[dict]:
    shown = []
    for (model, task), vals in P.NTK_DISTANCE_TABLE["values"].items():
        for w, paper in zip(P.NTK_DISTANCE_TABLE["widths"], vals):
            for c in (summary["ntk"].get(task) or {}).get("cells", []):
                if c["model"] == model and c["width"] == w and c["distance"] == PRIMARY_NTK_READING \
                        and c["protocol"] == "paper" and c["mean"] is not None:
                    shown.append(f"{task} {model} m={w}: ours {c['mean']:.3g}, paper {paper}")
    return [row("table1-values", "Table 1 NTK distance magnitudes",
                "not judged: the paper's distance formula and sample size n are unknown, and the unnormalised "
                "distance grows with n; the direction of change (ntk-trend) carries the claim",
                P.NTK_DISTANCE_TABLE["source"], {}, None, "; ".join(shown) or "no cells at the paper's widths",
                verdict="not-comparable")]


# --------------------------------------------------------------------------- Tables 2-4

FLIP_CRITERION = (f"per attention-input reading and quantity: for every data set and attack, our model/baseline "
                  f"ratio of mean flip rates ('rate') or of flip rates in excess of the noise control and the "
                  f"numerical floor ('excess') is within a factor {FACTOR:g} of the paper's ratio; a pair whose "
                  f"networks did not learn is not testable. As stated: raw/rate")


def _excess(cell: dict) -> float | None:
    """Flip rate above the larger of the noise control and the numerical floor (0 when below)."""
    mean = cell["flip_rate"]["mean"]
    ex = cell.get("excess_over_noise")
    if mean is None or ex is None or ex.get("mean") is None:
        return None
    floor = (cell.get("numerical_floor") or {}).get("mean") or 0.0
    noise = mean - ex["mean"]
    return max(0.0, mean - max(noise, floor))


def _ratio_check(a: dict | None, r: dict | None, paper: float, quantity: str) -> tuple[bool | None, str] | None:
    if a is None or r is None:
        return None
    if not (a["accuracy"]["learned"] and r["accuracy"]["learned"]):
        return None, "did not learn"
    if quantity == "rate":
        num, den = a["flip_rate"]["mean"], r["flip_rate"]["mean"]
    else:
        num, den = _excess(a), _excess(r)
    if num is None or den is None:
        return None
    if den == 0:
        return (num == 0 and paper == 1.0), f"baseline {quantity} is 0"
    ours = num / den
    ok = ours > 0 and 1 / FACTOR <= ours / paper <= FACTOR
    return ok, f"{ours:.2f} vs paper {paper:.2f}"


def _flip_table(results, summary, claim, statement, paper_table) -> dict:
    readings, details = {}, []
    for att in results["scale"]["attention_inputs"]:
        for quantity in ("rate", "excess"):
            oks = []
            for (task, model), vals in paper_table["values"].items():
                if model == results["scale"]["baseline"]:
                    continue
                for attack in P.ATTACKS:
                    kw = dict(classes=task_classes(task), attack=attack, eps=paper_table["eps"], adv=False)
                    a = flip_cell(summary, task, model=model, reading=att, **kw)
                    r = flip_cell(summary, task, model=results["scale"]["baseline"], reading="-", **kw)
                    paper = vals[attack] / paper_table["values"][(task, results["scale"]["baseline"])][attack]
                    got = _ratio_check(a, r, paper, quantity)
                    if got is None:
                        continue
                    oks.append(got[0])
                    details.append(f"{att}/{quantity} {task} {attack}: {got[1]}")
            readings[f"{att}/{quantity}"] = reading_outcome(oks)
    return row(claim, statement, FLIP_CRITERION, paper_table["source"], readings, "raw/rate",
               "; ".join(details) or "no cells of this table at this scale")


@judge
def flip_tables(results: dict, summary: dict) -> list[dict]:
    return [
        _flip_table(results, summary, "table2", "MLP-Attn's influence is several times more malleable (10-class)",
                    P.FLIP_RATE_10CLASS),
        _flip_table(results, summary, "table3",
                    "binary tasks: MNIST 3 vs 8 malleable, CIFAR-10 cars vs planes no effect", P.FLIP_RATE_BINARY),
    ]


ADV_CRITERION = (f"per attention-input reading and adversarial-training schedule ('<input>': the full ε from the "
                 f"first step; '<input>/eps-ramp': ε warmed up linearly over the first epochs, which the paper does not "
                 f"mention): for every data set and model, our adversarial/standard ratio of mean PGD flip rates is "
                 f"within a factor {FACTOR:g} of the paper's; networks that did not learn are not testable. As stated: raw")


def table4_reading(attention_input: str, schedule: str) -> str:
    """The reading name of one attention input under one adversarial-training schedule."""
    return attention_input if schedule == "constant" else f"{attention_input}/eps-{schedule}"


@judge
def table4(results: dict, summary: dict) -> list[dict]:
    readings, details = {}, []
    schedules = results["scale"].get("flip", {}).get("adv_train_schedules") or ("constant",)
    for schedule in schedules:
        for att in results["scale"]["attention_inputs"]:
            name = table4_reading(att, schedule)
            oks = []
            for (task, model), vals in P.FLIP_RATE_ADV_TRAINING["values"].items():
                reading = att if model != results["scale"]["baseline"] else "-"
                kw = dict(classes=task_classes(task), attack="pgd", eps=P.FLIP_RATE_ADV_TRAINING["eps"], model=model,
                          reading=reading)
                std = flip_cell(summary, task, adv=False, **kw)
                adv = flip_cell(summary, task, adv=True, schedule=schedule, **kw)
                if std is None or adv is None:
                    continue
                if not (std["accuracy"]["learned"] and adv["accuracy"]["learned"]):
                    oks.append(None)
                    details.append(f"{name} {task} {model}: did not learn")
                    continue
                s, a = std["flip_rate"]["mean"], adv["flip_rate"]["mean"]
                paper = vals["adversarial"] / vals["standard"]
                if not s:
                    oks.append(False)
                    details.append(f"{name} {task} {model}: standard flip rate 0")
                    continue
                ok = a / s > 0 and 1 / FACTOR <= (a / s) / paper <= FACTOR
                oks.append(ok)
                details.append(f"{name} {task} {model}: {a / s:.2f} vs paper {paper:.2f}")
            readings[name] = reading_outcome(oks)
    return [row("table4", "adversarial training raises the PGD flip rate of both models", ADV_CRITERION,
                P.FLIP_RATE_ADV_TRAINING["source"], readings, "raw",
                "; ".join(details) or "no adversarial-training cells at this scale")]


HEADLINE_CRITERION = ("every 10-class model/baseline ratio of mean flip rates (raw attention input) lies in [6, 9] "
                      "(v1): holds as stated; all in [2, 9] (v2's wording): holds only under the v2 reading; "
                      "networks that did not learn: not testable")


@judge
def headline(results: dict, summary: dict) -> list[dict]:
    base = results["scale"]["baseline"]
    ratios, untestable = [], []
    for (task, model) in P.FLIP_RATE_10CLASS["values"]:
        if model == base:
            continue
        for attack in P.ATTACKS:
            kw = dict(classes=task_classes(task), attack=attack, eps=P.FLIP_RATE_10CLASS["eps"], adv=False)
            a, r = flip_cell(summary, task, model=model, reading="raw", **kw), flip_cell(summary, task, model=base, reading="-", **kw)
            if a is None or r is None:
                continue
            if not (a["accuracy"]["learned"] and r["accuracy"]["learned"]):
                untestable.append(f"{task} {attack}")
                continue
            if r["flip_rate"]["mean"]:
                ratios.append((f"{task} {attack}", a["flip_rate"]["mean"] / r["flip_rate"]["mean"]))
    readings = {}
    for version in ("v1", "v2"):
        lo, hi = P.HEADLINE_RATIO[version]
        if ratios:
            readings[version] = HOLDS if all(lo <= x <= hi for _, x in ratios) else FAILS
        elif untestable:
            readings[version] = NOT_TESTABLE
    detail = ", ".join(f"{k} {x:.2f}" for k, x in ratios) + (f"; not testable: {', '.join(untestable)}" if untestable else "")
    return [row("headline-6-9x", "attention is 6-9x more malleable than ReLU (v2: 2-9x)", HEADLINE_CRITERION,
                P.HEADLINE_RATIO["source"], readings, "v1", detail or "no 10-class flip-rate cells")]


# --------------------------------------------------------------------------- κ

KAPPA_CRITERION = ("the paper does not say at which n (nor which κ) it measured: per κ reading, the claim holds at "
                   "an n of our grid where |log10(ours / paper)| <= 1 on the unit-row data; the reading names that n")


@judge
def kappa_values(results: dict, summary: dict) -> list[dict]:
    per_reading: dict[str, list[tuple[str, bool, int | None]]] = {}
    details = []
    for m in summary["widths"]["paper_kappa_match"]:
        if m["view"] != "relu":  # the paper's κ(G) is of the (unit-row) data
            continue
        if m.get("log10_kappa") is None:
            per_reading.setdefault(m["reading"], []).append((m["task"], False, None))
            details.append(f"{m['task']} {m['reading']}: infinite at every n")
            continue
        ok = abs(m["log10_gap"]) <= 1
        per_reading.setdefault(m["reading"], []).append((m["task"], ok, m["n"]))
        details.append(f"{m['task']} {m['reading']}: closest at n={m['n']}, 1e{m['log10_kappa']:.2f} vs "
                       f"{m['paper_kappa']:.3g}")
    readings = {}
    for name, hits in per_reading.items():
        if all(ok for _, ok, _ in hits):
            readings[f"{name} ({', '.join(f'{t} n={n}' for t, _, n in hits)})"] = HOLDS
        else:
            readings[name] = FAILS
    return [row("kappa-values", "κ(G) ≈ 1.2e3 (MNIST), ≈ 8.7e3 (CIFAR-10)", KAPPA_CRITERION, P.KAPPA["source"],
                readings, None, "; ".join(details) or "no κ cells")]


def verdicts(results: dict, summary: dict) -> list[dict]:
    """Every claim's verdict row (see the module docstring), in a fixed order."""
    out = []
    for fn in JUDGES:
        out.extend(fn(results, summary))
    return out


def criteria() -> dict[str, str]:
    return {"theory": THEORY_CRITERION, "ntk-trend": NTK_TREND_CRITERION, "flip": FLIP_CRITERION,
            "table4": ADV_CRITERION, "headline": HEADLINE_CRITERION, "kappa": KAPPA_CRITERION}

