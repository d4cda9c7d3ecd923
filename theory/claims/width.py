"""Thm 4.7 (second half): NTK convergence needs width m = Ω(κ(G)⁶/ε²) (v1), Ω(κ_d(G)⁶ n log n) (v2).

Measurement. For each n in the profile (X square, n = d) and each κ(G) from 1 (X = I, so
G = I) up to 1e4, the first-layer ReLU NTK of MLP-Attn at width m,
Θ_m = (A Aᵀ/m) ∘ (Z Zᵀ) with A_ir = 1{w_rᵀ z_i > 0}, w_r ~ N(0, I), is compared with its
infinite-width limit Θ∞ (Thm 4.2, diagonal exactly 1/2). Two error readings:

* ``rel-lambda-min`` (the primary one): ‖Θ_m − Θ∞‖₂ / λ_min(Θ∞), the error a convergence
  argument needs (‖Θ_m − Θ∞‖₂ ≤ ε λ_min keeps Θ_m positive definite and close);
* ``rel-lambda-max``: ‖Θ_m − Θ∞‖₂ / λ_max(Θ∞);
* ``rms-frobenius``: no sampling, a closed form. Each entry of Θ_m is u_ij times a mean of
  m Bernoulli(p_ij) variables, p_ij = (π − arccos u_ij)/(2π), so
  E‖Θ_m − Θ∞‖_F² = Σ_ij u_ij² p_ij (1 − p_ij) / m exactly; the width is the smallest power
  of two at which this root-mean-square error is ≤ ε λ_min(Θ∞). Since ‖·‖₂ ≤ ‖·‖_F it
  bounds the root-mean-square spectral width from above, and it is never censored, so it
  decides the growth with κ where the sampled widths pass the cap.

Widths are powers of two; the neurons of one stream are nested (width 2m reuses the m
neurons of width m). The measured width is the smallest power of two at which the
**largest** error over ``width_seeds`` independent streams is ≤ ε; when none up to
2^width_max_log2 is, the width is censored (reported as null, known only to exceed the cap).

Readings (each under both error readings; the second carries the suffix ``/rel-lambda-max``):

* ``as-stated`` (necessary, v1): the needed width grows at least like κ(G)⁶. Judged per n
  on the least-squares slope of log(measured width) against log κ(G): the reading fails at
  an n whose slope is below ``REQUIRED_SLOPE`` = 6 − 1 (one unit of slack for power-of-two
  rounding and seed noise) with no censored width, holds where the slope is at least that,
  and is not testable where censored widths leave it open. Censored widths enter the slope
  as the cap: a lower bound of the slope when every censored point lies right of the mean
  log κ (otherwise that n is not testable).
* ``v2-necessary``: the same test against κ_d (κ of the rank-min(n, d) truncation).
* ``v1-sufficient``: m = κ⁶/ε² suffices, i.e. measured ≤ predicted on every matrix.
* ``v2-sufficient``: m = κ_d⁶ · n · ln n suffices (constant 1).
* ``smallest-constant`` (informational, not part of the verdict): the smallest c such that
  c·κ⁶/ε² suffices on every matrix measured; holds when finite (no censored width).

A sufficient reading fails on a matrix when its measured width exceeds the prediction
(a censored width exceeds it when the prediction is below the cap); matrices where the
prediction exceeds the cap and the width is censored decide nothing. Every failing reading
carries its smallest counterexample (smallest κ, then smallest n).
"""

from __future__ import annotations

import math

import numpy as np

from malleability.properties import generators as gen
from malleability.theory.claims import register
from malleability.theory.claims.base import Profile, Reading
from malleability.theory.claims.verdicts import FAILS, HOLDS, NOT_TESTABLE
from malleability.theory.conditioning import condition_numbers
from malleability.theory.kernels import ntk_inf_from_cosines, normalised_features

EPS = 0.1
REQUIRED_SLOPE = 5.0  # Ω(κ⁶): slope 6, less one unit of slack
ERROR_READINGS = ("rel-lambda-min", "rel-lambda-max", "rms-frobenius")
_CHUNK = 1 << 14  # neurons per batch, bounds the memory of one draw


def ntk_inf(z: np.ndarray) -> np.ndarray:
    """Θ∞ on unit rows z, with the diagonal set to its exact value 1/2 (u = 1)."""
    theta = ntk_inf_from_cosines(z @ z.T)
    np.fill_diagonal(theta, 0.5)
    return theta


def error_curve(z: np.ndarray, theta: np.ndarray, max_log2: int, rng) -> np.ndarray:
    """‖Θ_m − Θ∞‖₂ for m = 2^0 .. 2^max_log2 along one nested stream of Gaussian neurons."""
    n, d = z.shape
    cos = z @ z.T
    acc = np.zeros((n, n))
    done = 0
    errs = []
    for log2 in range(max_log2 + 1):
        m = 1 << log2
        while done < m:
            k = min(_CHUNK, m - done)
            act = (z @ rng.standard_normal((d, k)) > 0).astype(float)
            acc += act @ act.T
            done += k
        errs.append(np.linalg.norm(acc / m * cos - theta, 2))
    return np.asarray(errs)


def measured_width(errors: np.ndarray, eps: float) -> int | None:
    """Smallest power of two whose error (max over the rows = streams) is ≤ eps; None if none."""
    worst = np.max(np.atleast_2d(errors), axis=0)
    ok = np.flatnonzero(worst <= eps)
    return int(2 ** ok[0]) if ok.size else None


def rms_frobenius_width(z: np.ndarray, lam_min: float, eps: float) -> int:
    """Smallest power of two m with Σ u² p (1 − p) / m ≤ (ε λ_min)² (see the module docstring)."""
    u = np.clip(z @ z.T, -1.0, 1.0)
    np.fill_diagonal(u, 1.0)
    p = (np.pi - np.arccos(u)) / (2 * np.pi)
    need = float(np.sum(u * u * p * (1 - p))) / (eps * lam_min) ** 2
    return int(2 ** max(0, math.ceil(math.log2(need)))) if need > 1 else 1


def measure(prof: Profile, eps: float = EPS) -> list[dict]:
    """The measurement table: one row per (n, κ) with both measured widths and both predictions."""
    rng = np.random.default_rng(prof.seed + 2)
    rows = []
    for n in prof.width_ns:
        for kappa in prof.width_kappas:
            x = np.eye(n) if kappa == 1 else gen.conditioned_matrix(rng, n=n, d=n, kappa_x=math.sqrt(kappa))
            c = condition_numbers(x)
            z = normalised_features(x)
            theta = ntk_inf(z)
            lam = np.linalg.eigvalsh(theta)
            curves = np.array([error_curve(z, theta, prof.width_max_log2, rng) for _ in range(prof.width_seeds)])
            kg, kd = float(c["kappa_G"]), float(c["kappa_d"])
            rows.append({
                "n": n, "d": n, "kappa_G_target": kappa, "kappa_G": kg, "kappa_d": kd,
                "lambda_min_ntk": float(lam[0]), "lambda_max_ntk": float(lam[-1]),
                "width_rel-lambda-min": measured_width(curves / lam[0], eps),
                "width_rel-lambda-max": measured_width(curves / lam[-1], eps),
                "width_rms-frobenius": rms_frobenius_width(z, float(lam[0]), eps),
                "predicted_v1": kg**6 / eps**2, "predicted_v2": kd**6 * n * math.log(n) if n > 1 else 0.0,
            })
    return rows


def _ce(row, key, pred_key, **extra):
    return {"n": row["n"], "kappa_G": row["kappa_G"], "kappa_d": row["kappa_d"], "measured_width": row[key],
            "predicted_width": row[pred_key], **extra}


def judge_sufficient(rows: list[dict], key: str, pred_key: str, cap: int) -> tuple[str, dict | None, dict]:
    """(verdict, smallest counterexample, evidence) of 'measured width ≤ predicted on every matrix'."""
    decided = failed = 0
    first = None
    for row in sorted(rows, key=lambda r: (r["kappa_G"], r["n"])):
        m, p = row[key], row[pred_key]
        if m is None and p >= cap:
            continue  # censored above the cap, prediction above it too: undecided
        decided += 1
        if m is None or m > p:
            failed += 1
            if first is None:
                first = _ce(row, key, pred_key, note=None if m is not None else f"measured width > cap {cap}")
    ev = {"matrices_decided": decided, "matrices_failing": failed, "matrices": len(rows)}
    if first is not None:
        return FAILS, first, ev
    return (HOLDS, None, ev) if decided else (NOT_TESTABLE, None, {**ev, "why": "every width censored at the cap"})


def loglog_slope(xs, ys) -> float:
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    return float(np.polyfit(xs, ys, 1)[0])


def judge_necessary(rows: list[dict], key: str, kappa_key: str, pred_key: str, cap: int,
                    required: float = REQUIRED_SLOPE) -> tuple[str, dict | None, dict]:
    """(verdict, counterexample, evidence) of 'the needed width grows at least like κ⁶' (slope test per n)."""
    per_n = {}
    first = None
    for n in sorted({r["n"] for r in rows}):
        pts = sorted((r for r in rows if r["n"] == n), key=lambda r: r[kappa_key])
        xs = [math.log(r[kappa_key]) for r in pts]
        if len(set(np.round(xs, 9))) < 2:
            per_n[n] = {"verdict": NOT_TESTABLE, "why": "fewer than two distinct κ"}
            continue
        ys = [math.log(r[key] if r[key] is not None else 2 * cap) for r in pts]
        slope = loglog_slope(xs, ys)
        censored = [x for x, r in zip(xs, pts) if r[key] is None]
        mean_x = float(np.mean(xs))
        if not censored:
            verdict = HOLDS if slope >= required else FAILS
        elif all(x > mean_x for x in censored):
            verdict = HOLDS if slope >= required else NOT_TESTABLE  # slope is a lower bound
        else:
            verdict = NOT_TESTABLE
        per_n[n] = {"verdict": verdict, "slope": slope, "slope_is_lower_bound": bool(censored),
                    "censored": len(censored)}
        if verdict == FAILS and first is None:
            big = max(pts, key=lambda r: r[kappa_key])
            first = _ce(big, key, pred_key, slope=slope, required_slope=required,
                        why="the needed width grows far slower than κ⁶ (log-log slope below the required one)")
    vs = [v["verdict"] for v in per_n.values()]
    ev = {"per_n": per_n, "required_slope": required}
    if FAILS in vs:
        return FAILS, first, ev
    if vs and all(v == HOLDS for v in vs):
        return HOLDS, None, ev
    return NOT_TESTABLE, None, {**ev, "why": "censored widths leave the growth open"}


def judge_constant(rows: list[dict], key: str, cap: int) -> tuple[str, dict | None, dict]:
    ratios = [r[key] / r["predicted_v1"] for r in rows if r[key] is not None]
    censored = [r for r in rows if r[key] is None]
    c = max(ratios) if ratios else None
    if censored:
        lb = max([2 * cap / r["predicted_v1"] for r in censored] + ([c] if c is not None else []))
        return NOT_TESTABLE, None, {"smallest_constant_at_least": lb, "censored": len(censored),
                                    "why": "censored widths: the constant is only bounded below"}
    return HOLDS, None, {"smallest_constant": c,
                         "meaning": "the smallest c with measured ≤ c·κ⁶/ε² on every matrix measured"}


def judge_width(rows: list[dict], cap: int, eps: float = EPS) -> list[Reading]:
    """Every reading from a measurement table (pure: the tests feed it hand-made tables)."""
    readings = []
    for er in ERROR_READINGS:
        key = f"width_{er}"
        suffix = "" if er == "rel-lambda-min" else f"/{er}"
        common = {"error_reading": er, "eps": eps, "cap": cap,
                  "widths": "powers of two; error = max over independent neuron streams"}
        for name, (verdict, ce, ev) in (
            ("as-stated", judge_necessary(rows, key, "kappa_G", "predicted_v1", cap)),
            ("v1-sufficient", judge_sufficient(rows, key, "predicted_v1", cap)),
            ("v2-necessary", judge_necessary(rows, key, "kappa_d", "predicted_v2", cap)),
            ("v2-sufficient", judge_sufficient(rows, key, "predicted_v2", cap)),
        ):
            readings.append(Reading(name + suffix, verdict, ce, {**common, **ev}))
        verdict, ce, ev = judge_constant(rows, key, cap)
        readings.append(Reading("smallest-constant" + suffix, verdict, ce, {**common, **ev}, informational=True))
    return readings


@register("thm4.7-width",
          statement="NTK convergence needs width m = Ω(κ(G)⁶/ε²) (v1), Ω(κ_d(G)⁶ n log n) (v2)")
def check_width(prof: Profile) -> list[Reading]:
    rows = measure(prof)
    cap = 2**prof.width_max_log2
    readings = judge_width(rows, cap)
    table = [{k: v for k, v in r.items()} for r in rows]
    for r in readings:
        r.evidence.update(precision="float64", rows=table if r.name == "as-stated" else "see as-stated")
    return readings
