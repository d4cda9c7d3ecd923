"""k layers of linearised attention on real data: the exponent p with κ(Gram_k) = κ(G)^p.

For each data set, n, recursion code of :mod:`malleability.theory.layers` (Q, K, V each the
input X or the current layer X_l) and k = 1..4, one row compares three numbers:

* ``kappa_G`` = κ₂(G), G = X Xᵀ of the unit rows (``theory.conditioning.condition_numbers``:
  singular values of X, escalated to mpmath when float64 cannot resolve them).
* *theory*: κ of Gram_k = (t·P_k(t)²)(G) from X's singular values
  (``theory.layers.gram_kappas_from_singular_values``), the polynomial the recursion implies.
* *measured*: κ of the k-layer features' Gram computed from the recursion itself, without the
  polynomial: every layer is X_l = A_l X with A_0 = I and, by associativity alone,
  A_{l+1} = A_q G A_kᵀ A_v (A_q, A_k, A_v ∈ {I, A_l} by the code), so Gram_k = A_k G A_kᵀ
  is computed in mpmath from the float64 rows taken exactly, with log10 κ_theory + ``dps_margin``
  digits (the largest of its code), and its κ by an mpmath eigensolve
  (``theory.conditioning.spectral_kappa`` of its eigenvalues); only for n <= ``measure_max_n`` (the
  eigensolve is slow) and for Grams that need at most ``MAX_MEASURE_DIGITS`` digits
  (``measured_digits`` says how many a row used, ``unmeasured_reason`` why a row has none).
* ``float64``: κ of the float64 features X_k themselves, what a float64 model sees (``precision``
  and ``trusted`` say whether it resolved).

``exponent`` = log κ(Gram_k) / log κ(G), compared with the candidate laws 2k+1 (the paper),
2^(k+1) − 1 and 3^k; ``nearest`` names the closest. The exact exponent of the code is that of
its Gram polynomial (every plain code gives a monomial G^p).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import mpmath
import numpy as np

from malleability.errors import require
from malleability.theory import conditioning, layers

NAME = "k-layer"
DATASETS = ("mnist", "cifar10")
# digits beyond log10 κ: 200 is exact far beyond float64; 10^5 digits would run for hours
MAX_DPS_MARGIN = 200
# digits of one mpmath measurement: an n = 50 Gram at 2000 digits takes about 7 s; ccc at k = 60 would need
# about 10^28 digits, so Grams above the cap are not measured and their rows keep the Gram polynomial's κ
MAX_MEASURE_DIGITS = 2000
_OVER_CAP = "above the cap of"  # how a row's unmeasured_reason names the digit cap (over_digit_cap reads it)


def candidate_exponents(k: int) -> dict[str, int]:
    """The laws the exponent is compared with."""
    require(isinstance(k, int) and k >= 1, f"k must be an integer >= 1, got {k!r}")
    return {"2k+1": 2 * k + 1, "2^(k+1)-1": 2 ** (k + 1) - 1, "3^k": 3 ** k}


def nearest_candidate(exponent: float | None, k: int) -> str | None:
    """The candidate law closest to ``exponent`` (ties: the first listed), None when unknown."""
    if exponent is None:
        return None
    cands = candidate_exponents(k)
    return min(cands, key=lambda name: abs(cands[name] - exponent))


def theory_exponent(code: str, k: int) -> int | None:
    """p with Gram_k = G^p exactly (None when the Gram polynomial is not a monomial, e.g. residual codes).

    From the layer degrees, not the polynomial, whose coefficient list at ccc, k = 60 would hold 3^60 terms."""
    return layers.gram_exponent(code, k)


def coefficient_layers(g, code: str, k: int, *, mul, transpose, add, identity) -> list:
    """[A_1, ..., A_k] with X_l = A_l X (see the module docstring), in any arithmetic given by the ops."""
    base, residual = layers.parse_recursion(code)
    require(isinstance(k, int) and k >= 1, f"k must be an integer >= 1, got {k!r}")
    cur = identity
    out = []
    for _ in range(k):
        a_q, a_k, a_v = ((identity if ch == "i" else cur) for ch in base)
        nxt = mul(mul(mul(a_q, g), transpose(a_k)), a_v)
        cur = add(cur, nxt) if residual else nxt
        out.append(cur)
    return out


def float64_features(x: np.ndarray, code: str, k: int) -> list[np.ndarray]:
    """[X_1, ..., X_k] by the recursion in float64 (Q Kᵀ V on the rows), what a float64 model computes."""
    base, residual = layers.parse_recursion(code)
    x0 = cur = np.asarray(x, dtype=np.float64)
    out = []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(k):
            q, kk, v = ((x0 if ch == "i" else cur) for ch in base)
            nxt = (q @ kk.T) @ v
            cur = cur + nxt if residual else nxt
            out.append(cur)
    return out


def _mp_log10(value) -> float | None:
    if value is None:
        return None
    v = mpmath.mpf(value) if not isinstance(value, str) else mpmath.mpf(value)
    if not mpmath.isfinite(v) or v <= 0:
        return None
    return float(mpmath.log10(v))


def exponent(log10_kappa_k: float | None, log10_kappa_g: float | None) -> float | None:
    """log κ(Gram_k) / log κ(G); None when either is unknown or κ(G) = 1 (no exponent is defined)."""
    if log10_kappa_k is None or log10_kappa_g is None or log10_kappa_g <= 0:
        return None
    return log10_kappa_k / log10_kappa_g


def mp_gram_kappas(x: np.ndarray, codes, ks, dps) -> dict[tuple[str, int], object]:
    """{(code, k): κ₂(Gram_k)} with every product in mpmath at ``dps`` digits (float64 rows taken exactly).

    ``ks`` and ``dps`` are one value for every code or a mapping code -> value, so a code whose
    exponent grows slowly is not measured at the digits of the fastest-growing one."""
    ks_of = ks if isinstance(ks, dict) else {code: ks for code in codes}
    dps_of = dps if isinstance(dps, dict) else {code: dps for code in codes}
    codes = [code for code in codes if ks_of.get(code)]
    out = {}
    if not codes:
        return out
    # G is exact at any dps >= 40 (53-bit rows, sums of d products), so it is formed once at the largest
    with mpmath.workdps(max(int(dps_of[code]) for code in codes)):
        X = mpmath.matrix(np.asarray(x, dtype=np.float64).tolist())
        G = X * X.T
    n = G.rows
    for code in codes:
        with mpmath.workdps(int(dps_of[code])):
            eye = mpmath.eye(n)
            A = coefficient_layers(G, code, max(ks_of[code]), mul=lambda a, b: a * b, transpose=lambda a: a.T,
                                   add=lambda a, b: a + b, identity=eye)
            for k in ks_of[code]:
                gram = A[k - 1] * G * A[k - 1].T
                w = mpmath.eigsy(gram, eigvals_only=True)
                out[(code, k)] = conditioning.spectral_kappa([w[i] for i in range(n)])
    return out


def measure_digits(log10_kappa_theory: float | None, dps_margin: int) -> float:
    """Digits the mpmath measurement of one Gram needs: log10 κ beyond the margin, at least 40."""
    top = 0.0 if log10_kappa_theory is None else float(log10_kappa_theory)
    if not math.isfinite(top):
        return math.inf  # κ beyond float's exponent range: beyond any cap
    return max(40, int(math.ceil(top)) + int(dps_margin))


def k_layer_rows(x: np.ndarray, *, codes=layers.CODES, ks=(1, 2, 3, 4), measure: bool = True, dps_margin: int = 30,
                 dataset: str = "", n_label: int | None = None) -> list[dict]:
    """One row per (code, k) for the unit rows x (see the module docstring); JSON-ready."""
    x = np.asarray(x, dtype=np.float64)
    require(x.ndim == 2 and x.shape[0] >= 2, f"need an (n, d) matrix with n >= 2, got shape {x.shape}")
    ks = tuple(int(k) for k in ks)
    require(ks and all(k >= 1 for k in ks), f"ks must be integers >= 1, got {ks}")
    for code in codes:
        layers.parse_recursion(code)
    cond = conditioning.condition_numbers(x, powers=(1,), keep_singular_values=True)
    n = x.shape[0]
    log_g = _mp_log10(cond["kappa_G"]) if cond["kappa_G"] is not None else None
    svals, rank = cond["singular_values"], cond["rank"]
    # condition_numbers works on an exactly rescaled X; a non-homogeneous (residual) Gram polynomial needs X's own scale
    rescale = mpmath.mpf(cond["s_max"]) / mpmath.mpf(svals[0])
    svals = [mpmath.mpf(v) * rescale for v in svals[:rank]]
    theory = {}
    for code in codes:
        for k in ks:
            t = layers.gram_kappas_from_singular_values(svals, rank, n, code, k, dps=60)
            theory[(code, k)] = _mp_log10(t["kappa"])
    measured, digits, unmeasured = {}, {}, {}
    if not measure:
        unmeasured = {key: "n above measure_max_n" for key in theory}
    elif log_g is None:
        unmeasured = {key: "kappa(G) unknown (G singular)" for key in theory}
    else:
        need = {key: measure_digits(v, dps_margin) for key, v in theory.items()}
        # a code's Grams are measured at the digits of its largest one that fits the cap; beyond, theory only
        ks_of = {code: tuple(k for k in ks if need[(code, k)] <= MAX_MEASURE_DIGITS) for code in codes}
        dps_of = {code: max((need[(code, k)] for k in ks_of[code]), default=0) for code in codes}
        measured = {key: _mp_log10(v) for key, v in mp_gram_kappas(x, codes, ks_of, dps_of).items()}
        digits = {(code, k): dps_of[code] for code in codes for k in ks_of[code]}
        unmeasured = {key: f"needs {need[key]:.4g} digits, {_OVER_CAP} {MAX_MEASURE_DIGITS}"
                      for key in theory if key not in digits}
    out = []
    for code in codes:
        feats = float64_features(x, code, max(ks))
        for k in ks:
            xk = feats[k - 1]
            f64 = None
            if np.all(np.isfinite(xk)) and np.abs(xk).max() > 0:
                c = conditioning.condition_numbers(xk, powers=(1,), allow_mpmath=False)
                f64 = {"log10_kappa": _mp_log10(c["kappa_G"]) if c["kappa_G"] is not None else None,
                       "precision": c["precision"], "trusted": not c["warnings"] and c["kappa_G"] is not None}
            exact = theory_exponent(code, k)
            row = {
                "dataset": dataset, "n": int(n_label if n_label is not None else n), "d": int(x.shape[1]),
                "code": code, "k": k, "log10_kappa_G": log_g, "kappa_G_precision": cond["precision"],
                "exact_exponent": exact,
                "log10_kappa_theory": theory[(code, k)],
                "exponent_theory": exponent(theory[(code, k)], log_g),
                "log10_kappa_measured": measured.get((code, k)),
                "exponent_measured": exponent(measured.get((code, k)), log_g),
                "measured_digits": digits.get((code, k)),
                "unmeasured_reason": unmeasured.get((code, k)),
                "float64": None if f64 is None else {**f64, "exponent": exponent(f64["log10_kappa"], log_g)},
                "candidates": candidate_exponents(k),
            }
            best = row["exponent_measured"] if row["exponent_measured"] is not None else row["exponent_theory"]
            row["nearest"] = nearest_candidate(best, k)
            out.append(row)
    return out


def over_digit_cap(rows: list[dict]) -> dict[str, list[int]]:
    """{code: [k, ...]} of the rows whose Gram the mpmath recursion skipped for its digits (any data set or n)."""
    out: dict[str, set[int]] = {}
    for r in rows:
        if _OVER_CAP in (r.get("unmeasured_reason") or ""):
            out.setdefault(r["code"], set()).add(int(r["k"]))
    return {code: sorted(ks) for code, ks in sorted(out.items())}


@dataclass(frozen=True)
class KLayerConfig:
    """The grid of the k-layer experiment."""

    datasets: tuple[str, ...] = field(default=DATASETS, metadata={"help": "data sets (unit rows of their training images)"})
    n: tuple[int, ...] = field(default=(50, 100, 200), metadata={"help": "training-set sizes"})
    codes: tuple[str, ...] = field(default=layers.CODES, metadata={"help": "recursion codes of theory.layers"})
    ks: tuple[int, ...] = field(default=(1, 2, 3, 4), metadata={"help": "numbers of layers"})
    seed: int = field(default=0, metadata={"help": "seeds the subset draw"})
    data_root: str | None = field(default=None, metadata={"help": "as DataConfig.data_root"})
    measure_max_n: int = field(default=50, metadata={"help": "largest n measured by the mpmath recursion (slow)"})
    dps_margin: int = field(default=30, metadata={"help": "digits beyond log10 κ of the mpmath measurement"})

    def __post_init__(self):
        for name in ("datasets", "n", "codes", "ks"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        require(self.n and all(int(v) >= 2 for v in self.n), f"every n must be >= 2, got {self.n}")
        require(self.ks and all(isinstance(k, int) and 1 <= k <= layers.MAX_LAYERS for k in self.ks),
                f"ks must be integers in 1..{layers.MAX_LAYERS}, got {self.ks}")
        for code in self.codes:
            layers.parse_recursion(code)
        require(int(self.measure_max_n) >= 0 and 10 <= int(self.dps_margin) <= MAX_DPS_MARGIN,
                f"measure_max_n >= 0 and dps_margin in 10..{MAX_DPS_MARGIN}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run(cfg: KLayerConfig, *, progress=None) -> list[dict]:
    """Every row of the grid: per data set and n, the unit rows of a seeded subset."""
    from malleability.empirics.data import DataConfig, load_dataset

    out = []
    for dataset in cfg.datasets:
        for n in cfg.n:
            ds = load_dataset(DataConfig(dataset=dataset, n=int(n), n_test=0, seed=int(cfg.seed), data_root=cfg.data_root))
            if progress is not None:
                progress(dataset, n)
            out.extend(k_layer_rows(ds.x_train, codes=cfg.codes, ks=cfg.ks, measure=int(n) <= int(cfg.measure_max_n),
                                    dps_margin=cfg.dps_margin, dataset=ds.name, n_label=int(n)))
    return out


def summarise(rows: list[dict], *, tolerance: float = 0.05) -> dict:
    """Per (code, k): the exponents over data sets and n, the exact one, and which law they follow.

    A law *fits* a code when every measured (else theory) exponent is within ``tolerance``
    (relative) of it; ``follows`` lists the laws that fit at every k of the code.
    """
    by: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        by.setdefault((r["code"], int(r["k"])), []).append(r)
    cells = []
    for (code, k), rs in sorted(by.items()):
        values = [r["exponent_measured"] if r["exponent_measured"] is not None else r["exponent_theory"] for r in rs]
        values = [v for v in values if v is not None]
        cands = candidate_exponents(k)
        fits = sorted(name for name, p in cands.items() if values and all(abs(v - p) <= tolerance * p for v in values))
        cells.append({"code": code, "k": k, "exact_exponent": rs[0]["exact_exponent"], "exponents": values,
                      "min": min(values) if values else None, "max": max(values) if values else None,
                      "fits": fits, "paper_2k_plus_1_fits": "2k+1" in fits})
    follows = {}
    for code in sorted({c["code"] for c in cells}):
        mine = [c for c in cells if c["code"] == code]
        follows[code] = sorted(set.intersection(*(set(c["fits"]) for c in mine))) if mine else []
    return {"cells": cells, "follows": follows, "tolerance": tolerance,
            "reading": "exponent = log κ(Gram_k) / log κ(G); measured (mpmath recursion) where run, else theory",
            "max_measure_digits": MAX_MEASURE_DIGITS, "over_digit_cap": over_digit_cap(rows)}


Config = KLayerConfig
run_cell = run  # config -> its rows (one grid per config: the experiment has no per-cell training)

__all__ = ["Config", "KLayerConfig", "MAX_MEASURE_DIGITS", "NAME", "candidate_exponents", "coefficient_layers",
           "exponent", "float64_features", "k_layer_rows", "measure_digits", "mp_gram_kappas", "nearest_candidate",
           "over_digit_cap", "run", "run_cell", "summarise", "theory_exponent"]
