"""Every interval, slope and ratio of the project, in one place (on scipy.stats).

The CLI, the audit and the report all take their numbers from here, so the same cells
always give the same statistics. Each interval stays inside its quantity's range:

* :func:`mean_interval`: mean with a Student-t 95% interval over seeds; ``lower``/``upper``
  truncate it to the quantity's range (a norm never gets a negative bound).
* :func:`proportion_interval`: a Wilson score interval over pooled counts (flip rates,
  accuracies), always inside [0, 1].
* :func:`correlation_interval`: a mean of correlations with a t-interval on Fisher's z,
  mapped back, always inside [-1, 1].
* :func:`paired_ratio`: mean(num)/mean(den) over shared seeds with a paired percentile
  bootstrap (seeded).
* :func:`loglog_slope`: least-squares slope of log y on log x with its t-interval, and
  :func:`slope_class` / :func:`crossing` that read it.
* :func:`above_chance`: the one-sided binomial test of the "did it learn" gate.

Every function is pure and returns JSON-ready dicts; a statistic that is undefined is
``None`` with a ``reason``, never NaN.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
import scipy.stats

LEVEL = 0.95
FLAT_SLOPE = 0.05  # |slope| below this counts as flat, whatever its interval
BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0


def _finite(values: Iterable) -> np.ndarray:
    out = []
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return np.asarray(out, dtype=np.float64)


def _t_half(std: float, k: int, level: float) -> float:
    return float(scipy.stats.t.ppf(0.5 + level / 2, k - 1) * std / math.sqrt(k))


def _clip(lo: float, hi: float, lower: float | None, upper: float | None) -> list[float]:
    if lower is not None:
        lo, hi = max(lo, lower), max(hi, lower)
    if upper is not None:
        lo, hi = min(lo, upper), min(hi, upper)
    return [lo, hi]


def _require_in_range(v: np.ndarray, lower: float | None, upper: float | None) -> None:
    """A bounded quantity's values must lie in its range (to rounding): an interval clipped to the range
    would otherwise hide an impossible value, e.g. one edited into results.json."""
    if not v.size:
        return
    lo, hi = float(v.min()), float(v.max())
    if lower is not None and lo < lower - 1e-12 * max(1.0, abs(lower)):
        raise ValueError(f"value {lo:g} lies below the quantity's range [{lower}, {upper}]")
    if upper is not None and hi > upper + 1e-12 * max(1.0, abs(upper)):
        raise ValueError(f"value {hi:g} lies above the quantity's range [{lower}, {upper}]")


def mean_interval(values: Iterable, *, lower: float | None = None, upper: float | None = None,
                  level: float = LEVEL) -> dict:
    """Mean, sample std and a Student-t interval over the finite values (None with fewer than 2).

    ``lower``/``upper``: the quantity's range; the interval is truncated to it.
    """
    v = _finite(values)
    _require_in_range(v, lower, upper)
    k = int(v.size)
    out = {"n": k, "mean": None, "std": None, "ci95": None, "values": v.tolist(),
           "method": f"Student-t {level:.0%} over seeds" + (" (truncated to the quantity's range)"
                                                               if lower is not None or upper is not None else "")}
    if k == 0:
        return out
    mean = float(v.mean())
    out["mean"] = mean
    if k >= 2:
        std = float(v.std(ddof=1))
        half = _t_half(std, k, level)
        out["std"] = std
        out["ci95"] = _clip(mean - half, mean + half, lower, upper)
    return out


def proportion_interval(successes: int, trials: int, *, level: float = LEVEL) -> dict:
    """Pooled proportion with a Wilson score interval (inside [0, 1] by construction)."""
    successes, trials = int(successes), int(trials)
    if trials <= 0:
        return {"successes": successes, "trials": trials, "rate": None, "ci95": None, "method": "Wilson",
                "reason": "no trials"}
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} outside 0..{trials}")
    ci = scipy.stats.binomtest(successes, trials).proportion_ci(confidence_level=level, method="wilson")
    return {"successes": successes, "trials": trials, "rate": successes / trials,
            "ci95": [float(max(0.0, ci.low)), float(min(1.0, ci.high))], "method": f"Wilson {level:.0%} over pooled counts"}


def rate_summary(rates: Iterable, trials: Iterable, *, level: float = LEVEL) -> dict:
    """Per-seed rates with their trial counts: the mean over seeds, and a Wilson interval over the pooled counts.

    ``counts`` are rebuilt as round(rate * trials); a rate that is not a whole count of its trials is refused.
    """
    pairs = [(float(r), int(t)) for r, t in zip(rates, trials)
             if r is not None and t is not None and math.isfinite(float(r)) and int(t) > 0]
    seeds = mean_interval([r for r, _ in pairs], lower=0.0, upper=1.0, level=level)
    hits = 0
    total = 0
    for r, t in pairs:
        c = round(r * t)
        if abs(c - r * t) > 1e-6 * t:
            raise ValueError(f"rate {r} is not a count out of {t}")
        hits += c
        total += t
    pooled = proportion_interval(hits, total, level=level)
    return {"n": seeds["n"], "mean": seeds["mean"], "std": seeds["std"], "ci95": pooled["ci95"],
            "values": seeds["values"], "successes": hits, "trials": total, "method": pooled["method"]}


def correlation_interval(values: Iterable, *, level: float = LEVEL) -> dict:
    """Mean correlation over seeds; the interval is a t-interval of Fisher's z = atanh(ρ), mapped back."""
    v = _finite(values)
    _require_in_range(v, -1.0, 1.0)
    k = int(v.size)
    out = {"n": k, "mean": None, "std": None, "ci95": None, "values": v.tolist(),
           "method": f"Student-t {level:.0%} on Fisher's z, mapped back to [-1, 1]"}
    if k == 0:
        return out
    out["mean"] = float(v.mean())
    if k >= 2:
        out["std"] = float(v.std(ddof=1))
        z = np.arctanh(np.clip(v, -1 + 1e-12, 1 - 1e-12))
        half = _t_half(float(z.std(ddof=1)), k, level)
        zm = float(z.mean())
        out["ci95"] = [float(np.tanh(zm - half)), float(np.tanh(zm + half))]
    return out


def difference_interval(a_by_seed: Mapping, b_by_seed: Mapping, *, lower: float | None = None,
                        upper: float | None = None, level: float = LEVEL) -> dict:
    """Mean of the per-seed differences a − b over the seeds both have, with a t-interval (truncated to the range)."""
    seeds = sorted(set(a_by_seed) & set(b_by_seed))
    out = mean_interval([float(a_by_seed[s]) - float(b_by_seed[s]) for s in seeds], lower=lower, upper=upper,
                        level=level)
    out["seeds"] = seeds
    return out


def paired_ratio(num_by_seed: Mapping, den_by_seed: Mapping, *, draws: int = BOOTSTRAP_DRAWS,
                 seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> dict:
    """mean(num) / mean(den) over the seeds both have, with a paired percentile bootstrap interval.

    Resampling seeds keeps each seed's two numbers together (both models of a seed share its
    data subset). Resamples whose denominator mean is 0 are dropped and counted.
    """
    seeds = sorted(set(num_by_seed) & set(den_by_seed))
    out = {"n_seeds": len(seeds), "ratio": None, "ci95": None, "reason": None,
           "method": f"paired percentile bootstrap over seeds, {draws} resamples, seed {seed}"}
    if not seeds:
        out["reason"] = "no seed has both"
        return out
    a = np.array([float(num_by_seed[s]) for s in seeds])
    b = np.array([float(den_by_seed[s]) for s in seeds])
    if b.mean() == 0:
        out["reason"] = "denominator mean is 0: ratio undefined"
        return out
    out["ratio"] = float(a.mean() / b.mean())
    if len(seeds) < 2:
        out["reason"] = "one seed: no interval"
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(seeds), size=(draws, len(seeds)))
    num, den = a[idx].mean(axis=1), b[idx].mean(axis=1)
    ok = den > 0
    out["bootstrap_dropped"] = int((~ok).sum())
    if ok.any():
        r = num[ok] / den[ok]
        tail = 100 * (1 - level) / 2
        out["ci95"] = [float(np.percentile(r, tail)), float(np.percentile(r, 100 - tail))]
    return out


def loglog_slope(x: Iterable, y: Iterable, *, level: float = LEVEL) -> dict:
    """Least-squares slope of ln y on ln x over all points (each seed its own point), with a t-interval.

    Points with y <= 0 or non-finite values are skipped (counted in ``skipped``). Fewer than two
    distinct x give ``slope: None``; exactly two points give a slope without an interval.
    """
    x, y = list(x), list(y)
    pts = [(float(a), float(b)) for a, b in zip(x, y)
           if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))
           and float(a) > 0 and float(b) > 0]
    xs = sorted({p[0] for p in pts})
    out = {"slope": None, "intercept": None, "ci95": None, "stderr": None, "r2": None, "n_points": len(pts),
           "x_range": [xs[0], xs[-1]] if xs else None, "skipped": len(x) - len(pts),
           "method": f"least squares of ln y on ln x, Student-t {level:.0%} on the slope"}
    if len(xs) < 2:
        out["reason"] = "fewer than two distinct widths"
        return out
    lx = np.log([p[0] for p in pts])
    ly = np.log([p[1] for p in pts])
    fit = scipy.stats.linregress(lx, ly)
    out["slope"], out["intercept"] = float(fit.slope), float(fit.intercept)
    dof = len(pts) - 2
    if dof > 0 and math.isfinite(fit.stderr):
        half = float(scipy.stats.t.ppf(0.5 + level / 2, dof) * fit.stderr)
        out["stderr"] = float(fit.stderr)
        out["ci95"] = [out["slope"] - half, out["slope"] + half]
        out["r2"] = float(fit.rvalue ** 2) if math.isfinite(fit.rvalue) else None
    else:
        out["reason"] = "two points: a slope without an interval"
    return out


def slope_class(fit: Mapping | None, *, flat: float = FLAT_SLOPE) -> str | None:
    """'rises', 'flat' or 'falls'. Flat when |slope| < ``flat`` or the interval contains 0.

    A slope without an interval (two points) is not classed (None): two points always have a sign,
    so a class read from it could not come out "flat", and a check resting on it could not fail.
    """
    if not fit or fit.get("slope") is None or fit.get("ci95") is None:
        return None
    s = float(fit["slope"])
    ci = fit["ci95"]
    if abs(s) < flat or ci[0] <= 0 <= ci[1]:
        return "flat"
    return "rises" if s > 0 else "falls"


def slope_sentence(fit: Mapping | None) -> str:
    """'slope -0.48 (95%: -0.55..-0.41)' or 'no fit (reason)'."""
    if not fit or fit.get("slope") is None:
        return f"no fit ({(fit or {}).get('reason', 'no data')})"
    ci = fit.get("ci95")
    return f"slope {fit['slope']:+.3f}" + (f" (95%: {ci[0]:+.3f}..{ci[1]:+.3f})" if ci else " (no interval)")


def crossing(fit: Mapping | None, level_y: float) -> dict:
    """Where a fitted power law y = e^b x^s reaches ``level_y``: only when the slope's interval is below 0.

    Returns ``{"log10_x", "extrapolated", "label"}``; ``log10_x`` is None (label 'no trend') unless the
    whole interval of the slope lies below 0. Beyond the measured x range the label says extrapolated.
    """
    out = {"log10_x": None, "extrapolated": None, "label": "no trend"}
    if not fit or fit.get("slope") is None:
        out["label"] = "no fit"
        return out
    ci = fit.get("ci95")
    if ci is None or ci[1] >= 0 or not level_y > 0:
        return out
    ln_x = (math.log(level_y) - float(fit["intercept"])) / float(fit["slope"])
    log10_x = ln_x / math.log(10)
    lo, hi = fit["x_range"]
    inside = math.log10(lo) <= log10_x <= math.log10(hi)
    out["log10_x"] = log10_x
    out["extrapolated"] = not inside
    where = "measured" if inside else "extrapolated"
    out["label"] = (f"{where} from slope {fit['slope']:+.3f} (95%: {ci[0]:+.3f}..{ci[1]:+.3f}) "
                    f"over widths {lo:g}..{hi:g}")
    return out


def above_chance(correct: int, total: int, chance: float, *, alpha: float = 0.01) -> dict:
    """One-sided exact binomial test that accuracy exceeds ``chance`` (the "did it learn" gate)."""
    correct, total = int(correct), int(total)
    if total <= 0:
        return {"learned": None, "p_value": None, "reason": "no test points"}
    p = float(scipy.stats.binomtest(correct, total, float(chance), alternative="greater").pvalue)
    return {"learned": bool(p < alpha), "p_value": p, "alpha": alpha,
            "test": f"one-sided exact binomial, accuracy > chance {chance:.3g}, level {alpha:g}"}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)
