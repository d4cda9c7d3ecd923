"""NTK distance vs width: how far each trained network is from its kernel limit.

The paper's NTK-distance formula is unknown, so a cell reports every plausible reading,
named (all kernels on the first ``kernel_points`` training rows, as the model sees them):

* ``after_vs_init_absolute``   = ‖K_T − K_0‖_F   (the paper's magnitudes, e.g. 45.1, suggest
  an unnormalised norm like this one; it grows with n, so compare only at equal n)
* ``after_vs_init_relative``   = ‖K_T − K_0‖_F / ‖K_0‖_F
* ``init_vs_infinite_relative`` = ‖K_0 − K∞‖_F / ‖K∞‖_F
* ``after_vs_infinite_relative`` = ‖K_T − K∞‖_F / ‖K∞‖_F
* ``function_space_relative``  = ‖f_T(X*) − f_ker(X*)‖_F / ‖f_ker(X*)‖_F on the test points X*,
  where ``f_ker(X*) = K(X*, X)(K(X, X) + λI)⁻¹ T`` is kernel (ridge) regression with the
  NTK ``K`` (``function_kernel``: ``infinite`` = K∞, ``init`` = K_0) on the whole training set,
  ``T`` the model's regression targets (±1 for mse; one-vs-rest ±1 for mse-ovr and, as a
  reading, for ce) and ``λ = ridge · tr K / n``. This is the m -> ∞ limit of gradient flow on
  MSE from f_0 ≈ 0 (the paper's init makes f_0 tiny). For CE the logit scale differs from
  ±1 targets, so ``function_space_agreement`` (fraction of test points where the two predict
  the same class) is the meaningful companion number.

Here K_0 / K_T are the empirical NTKs at init / after training (closed form, float64),
K∞ the analytic infinite-width kernel. For K-output models the scalar NTK is the diagonal
output block, which is the same for every output because the output weights are ±1
(a_rk² = 1); the off-diagonal blocks are not part of these distances.

``K_0`` vs ``K∞`` under the paper's init N(0, 0.01²): the ReLU NTK depends on W only through
the signs of ``W z``, so K_0 is the same as under N(0, 1) with the same draw and still
estimates K∞ (its distance shrinks like m^-1/2 either way; tested).

Seeds (:func:`sweep`, used by the CLI and the audit alike): seed ``s`` draws the data subset
``data_seed + s`` and the initialisation and batch order ``s``.

Every row also carries the network's ``accuracy`` (with the ``learned`` gate, see
:mod:`malleability.empirics.experiments.quality`), ``weight_change`` = ‖W_T − W_0‖/‖W_0‖ and
``pattern_flip_share``, the share of ReLU activation patterns on the training rows that
training flipped: under the ``lazy`` protocol both shrink with width.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from malleability.empirics.data import DataConfig, load_dataset
from malleability.empirics.experiments.flip_rate.summary import model_key
from malleability.empirics.experiments.memory import data_dimension, require_fits
from malleability.empirics.experiments.quality import model_quality, pattern_flip_share, predicted_classes, weight_change
from malleability.empirics.models import check_models, get_model, largest_state
from malleability.empirics.ntk import empirical_ntk, infinite_ntk
from malleability.empirics.ntk_params import full_ntk, ntk_blocks, split_parts
from malleability.empirics.training import TrainConfig, targets_for, train_model
from malleability.errors import MalleabilityError, require
from malleability.stats import loglog_slope, mean_interval, slope_class
from malleability.validation import refuse_repeats

NAME = "ntk-distance"

DISTANCE_NAMES = (
    "after_vs_init_absolute",
    "after_vs_init_relative",
    "init_vs_infinite_relative",
    "after_vs_infinite_relative",
    "function_space_relative",
)
FUNCTION_KERNELS = ("infinite", "init")


@dataclass(frozen=True)
class NTKDistanceConfig:
    """One model x one width x one (training) seed."""

    data: DataConfig = field(metadata={"help": "data set, n, n_test, classes, subset seed"})
    train: TrainConfig = field(metadata={"help": "protocol, epochs, loss, training seed, device, dtype"})
    model: str = field(default="relu", metadata={"help": "a registered model (see malleability.empirics.models)"})
    model_options: dict = field(default_factory=dict, metadata={"help": "the model's options"})
    width: int = field(default=1024, metadata={"help": "hidden width m"})
    kernel_points: int | None = field(default=None, metadata={"help": "kernels on the first k training rows; None = all"})
    function_kernel: str = field(default="infinite", metadata={"help": "kernel of the function-space reference: 'infinite' | 'init'"})
    ridge: float = field(default=1e-6, metadata={"help": "λ = ridge · tr K / n in the kernel regression"})

    def __post_init__(self):
        if isinstance(self.data, dict):
            object.__setattr__(self, "data", DataConfig(**self.data))
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        get_model(self.model, self.model_options)
        require(int(self.width) >= 1, f"width must be >= 1, got {self.width}")
        # one point's kernel is a scalar, with none of the off-diagonal structure the distances compare
        require(self.kernel_points is None or 2 <= int(self.kernel_points) <= int(self.data.n),
                f"kernel_points must be in 2..n = {self.data.n} (the training rows), got {self.kernel_points}")
        require(self.function_kernel in FUNCTION_KERNELS,
                f"unknown function_kernel {self.function_kernel!r}: choose one of {', '.join(FUNCTION_KERNELS)}")
        require(float(self.ridge) > 0, f"ridge must be > 0, got {self.ridge}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NTKDistanceConfig":
        return cls(**d)


def _fro(a: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(a, ord="fro"))


def kernel_distances(K0: torch.Tensor, KT: torch.Tensor, Kinf: torch.Tensor) -> dict:
    """The four kernel distances (see the module docstring) from three (k, k) kernels."""
    k0, kinf = _fro(K0), _fro(Kinf)
    d_ti = _fro(KT - K0)
    return {
        "after_vs_init_absolute": d_ti,
        "after_vs_init_relative": d_ti / k0 if k0 > 0 else None,
        "init_vs_infinite_relative": _fro(K0 - Kinf) / kinf,
        "after_vs_infinite_relative": _fro(KT - Kinf) / kinf,
    }


def kernel_regression(K_train: torch.Tensor, K_cross: torch.Tensor, T: torch.Tensor, ridge: float) -> torch.Tensor:
    """``K_cross (K_train + λI)⁻¹ T`` with ``λ = ridge · tr K_train / n`` (Cholesky, float64)."""
    n = K_train.shape[0]
    lam = float(ridge) * float(torch.trace(K_train)) / n
    A = K_train + lam * torch.eye(n, dtype=K_train.dtype, device=K_train.device)
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) != 0:  # not numerically PD: fall back to a least-squares solve
        return K_cross @ torch.linalg.lstsq(A, T).solution
    return K_cross @ torch.cholesky_solve(T, L)


def run_ntk_distance_cell(cfg: NTKDistanceConfig) -> dict:
    """Train one model and measure every named distance; a JSON-ready row (pure function of cfg on CPU)."""
    t_start = time.perf_counter()
    ds = load_dataset(cfg.data)
    feature_model = get_model(cfg.model, cfg.model_options)
    x_tr = torch.from_numpy(ds.x_train)
    y_tr = torch.from_numpy(ds.y_train)
    tm = train_model(feature_model, x_tr, y_tr, ds.num_classes, cfg.train, width=int(cfg.width))
    t_train = time.perf_counter() - t_start
    dev = tm.net.W.device
    f64 = torch.float64
    x64 = x_tr.to(device=dev, dtype=f64)
    state64 = feature_model.fit(x64)
    W0 = tm.W0.to(f64)
    WT = tm.net.W.detach().to(f64)
    with_params = bool(tm.params)
    if with_params:  # the projections moved too: kernels over every trained parameter (Prop B.4)
        state_T = {**state64, **{k2: v.detach().to(f64) for k2, v in tm.params.items()}}
        state_0 = {**state64, **{k2: v.to(f64) for k2, v in tm.params0.items()}}
        state64 = state_T
    z_all = feature_model.features(x64, state64).detach()
    k = z_all.shape[0] if cfg.kernel_points is None else min(int(cfg.kernel_points), z_all.shape[0])
    z = z_all[:k]
    parts = None
    if with_params:
        a = tm.net.a.to(f64)
        z0_all = feature_model.features(x64, state_0).detach()
        blocks0 = split_parts(ntk_blocks(feature_model, state_0, W0, a, x64[:k]))
        blocksT = split_parts(ntk_blocks(feature_model, state_T, WT, a, x64[:k]))
        K0, KT = blocks0["mlp"] + blocks0["projection"], blocksT["mlp"] + blocksT["projection"]
        Kinf = infinite_ntk(z0_all[:k], z0_all[:k])
        parts = {name: {"k0_fro": _fro(blocks0[name]), "kt_fro": _fro(blocksT[name]),
                        "after_vs_init_absolute": _fro(blocksT[name] - blocks0[name])} for name in ("mlp", "projection")}
    else:
        K0 = empirical_ntk(z, z, W0)
        KT = empirical_ntk(z, z, WT)
        Kinf = infinite_ntk(z, z)
    distance = kernel_distances(K0, KT, Kinf)
    norms = {"k0_fro": _fro(K0), "kt_fro": _fro(KT), "kinf_fro": _fro(Kinf)}

    agreement, f_ker = None, None
    with torch.no_grad():
        if ds.pixels_test.shape[0] > 0:
            x_te64 = torch.from_numpy(ds.x_test).to(device=dev, dtype=f64)
            z_te = feature_model.features(x_te64, state64)
            f_T = tm.net(tm.features(x_te64.to(tm.net.W.dtype))).to(f64)
            if cfg.function_kernel == "infinite":
                zi_all, zi_te = (z0_all, feature_model.features(x_te64, state_0)) if with_params else (z_all, z_te)
                K_tr, K_x = infinite_ntk(zi_all, zi_all), infinite_ntk(zi_te, zi_all)
            elif with_params:
                K_tr = full_ntk(feature_model, state_0, W0, a, x64)
                K_x = full_ntk(feature_model, state_0, W0, a, x_te64, x64)
            else:
                K_tr, K_x = empirical_ntk(z_all, z_all, W0), empirical_ntk(z_te, z_all, W0)
            T = targets_for(tm.loss, y_tr.to(dev), ds.num_classes, dtype=f64)
            f_ker = kernel_regression(K_tr, K_x, T, cfg.ridge)
            ref = _fro(f_ker)
            distance["function_space_relative"] = _fro(f_T - f_ker) / ref if ref > 0 else None
            agreement = float((predicted_classes(f_T) == predicted_classes(f_ker)).mean())
        else:
            distance["function_space_relative"] = None
    accuracy = model_quality(tm, ds.x_train, ds.y_train, ds.x_test, ds.y_test, krr_predictions=f_ker)
    # the names this row used before `accuracy` gained the gate
    accuracy["kernel_regression_test"] = accuracy["krr_test"]
    settings = cfg.train.resolved()
    return {
        "model": cfg.model,
        "model_label": feature_model.label,
        "model_options": feature_model.options(),
        "dataset": ds.name,
        "width": int(cfg.width),
        "seed": int(cfg.train.seed),
        "data_seed": int(cfg.data.seed),
        "distance": distance,
        "function_space_agreement": agreement,
        "norms": norms,
        "ntk_parts": parts,
        "accuracy": accuracy,
        "final_train_loss": tm.history[-1] if tm.history else None,
        "weight_change": weight_change(tm.W0, tm.net.W),
        "param_change": {k2: weight_change(tm.params0[k2], v) for k2, v in tm.params.items()} if with_params else None,
        "pattern_flip_share": pattern_flip_share(z_all, W0, WT),
        "kernel_points": int(k),
        "n_train": int(ds.pixels_train.shape[0]),
        "n_test": int(ds.pixels_test.shape[0]),
        "readings": {
            "loss": tm.loss,
            "protocol": cfg.train.protocol,
            "init": settings["init"],
            "epochs": int(settings["epochs"]),
            "kernel": ("empirical NTK over W and the model's parameters (mean of the diagonal output blocks), "
                       "torch.func, float64; K∞ is the infinite-width MLP part on the features at init"
                       if with_params else "scalar empirical NTK (diagonal output block), closed form, float64"),
            "function_kernel": cfg.function_kernel,
            "ce_targets": "one-vs-rest ±1" if tm.loss == "ce" else None,
            "features": feature_model.summary,
        },
        "data": ds.describe(),
        "train_settings": settings,
        "dtype": cfg.train.dtype,
        "timing_s": {"train": t_train, "total": time.perf_counter() - t_start},
        "threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------
# sweeps and summaries


def parse_widths(spec) -> tuple[int, ...]:
    """'16,64,256' -> (16, 64, 256); also 'default' (4..4096 in powers of 2)."""
    if isinstance(spec, (list, tuple)):
        parts = [str(s) for s in spec]
    else:
        text = str(spec).strip()
        if text == "default":
            return tuple(2**k for k in range(2, 13))
        parts = [p.strip() for p in text.split(",")]
    out = []
    for p in parts:
        try:
            w = int(p)
        except ValueError:
            raise MalleabilityError(f"bad --widths list {spec!r}: {p!r} is not an integer") from None
        require(w >= 1, f"width must be >= 1, got {w}")
        out.append(w)
    require(out, "empty --widths list")
    return tuple(refuse_repeats(out, "--widths", spec))


def sweep(data: DataConfig, train: TrainConfig, models, widths, seeds, *, model_options=None,
          **cell_options) -> list[NTKDistanceConfig]:
    """The cells of a sweep: models x widths x seeds; seed s draws data subset data.seed + s and init s.

    ``seeds``: a count (0..S-1) or a list of seeds. ``model_options``: {model: {option: value}}.
    """
    seeds = list(range(int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
    require(seeds, "seeds must not be empty")
    require(all(s >= 0 for s in seeds), "seeds must be >= 0")
    model_options = dict(model_options or {})
    d = data_dimension(data.dataset)
    check_models(models, model_options, d, data.n)
    for w in widths:
        require_fits(data.n, d, int(w), "ntk-distance", largest_state(models, model_options, data.n, d))
    return [
        NTKDistanceConfig(data=dataclasses.replace(data, seed=int(data.seed) + s), train=dataclasses.replace(train, seed=s),
                          model=m, model_options=dict(model_options.get(m, {})), width=int(w), **cell_options)
        for m in models
        for w in widths
        for s in seeds
    ]


def fit_group(row: dict) -> tuple:
    """The (data set, model with options, protocol) a row is fitted with: one slope per group."""
    return (row["dataset"], model_key(row), (row.get("readings") or {}).get("protocol", "paper"))


# A norm cannot be negative; the relative distances also cannot.
def summarise(rows) -> dict:
    """Per (dataset, model, protocol): each distance per width (mean, t-interval truncated at 0) and its
    log-log slope over all (width, seed) points with a 95% interval and its class (rises / flat / falls)."""
    values: dict = {}
    quality: dict = {}
    for r in rows:
        g = fit_group(r)
        for name, value in r["distance"].items():
            values.setdefault(g + (name,), {}).setdefault(int(r["width"]), []).append(value)
        quality.setdefault(g + (int(r["width"]),), []).append(r)
    cells, slopes = [], []
    for (dataset, model, protocol, name), by_width in sorted(values.items()):
        xs, ys = [], []
        for w in sorted(by_width):
            stats = mean_interval(by_width[w], lower=0.0)
            acc = [(q.get("accuracy") or {}) for q in quality[(dataset, model, protocol, w)]]
            cells.append({"dataset": dataset, "model": model, "protocol": protocol, "distance": name, "width": w,
                          **stats, "n_seeds": stats["n"],
                          "accuracy_test": mean_interval([a.get("test") for a in acc], lower=0.0, upper=1.0)["mean"],
                          "accuracy_train": mean_interval([a.get("train") for a in acc], lower=0.0, upper=1.0)["mean"],
                          "learned_seeds": sum(1 for a in acc if a.get("learned")), "seeds": len(acc)})
            xs += [w] * len(stats["values"])
            ys += stats["values"]
        fit = loglog_slope(xs, ys)
        slopes.append({"dataset": dataset, "model": model, "protocol": protocol, "distance": name, **fit,
                       "class": slope_class(fit), "widths": sorted(by_width)})
    return {"cells": cells, "slopes": slopes,
            "interval": "per width: Student-t 95% over seeds, truncated at 0; slopes: least squares of ln distance on "
                        "ln width over all (width, seed) points, Student-t 95%"}


def find_slope(summary: dict, **match) -> dict | None:
    for s in summary["slopes"]:
        if all(s.get(k) == v for k, v in match.items()):
            return s
    return None


def run_sweep(configs, *, progress=None, on_row=None) -> list[dict]:
    """Run cells in order; ``progress(i, total, cfg)`` before each, ``on_row(row)`` after each."""
    rows = []
    for i, cfg in enumerate(configs):
        if progress is not None:
            progress(i, len(configs), cfg)
        row = run_ntk_distance_cell(cfg)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


Config = NTKDistanceConfig
run_cell = run_ntk_distance_cell

__all__ = [
    "Config", "DISTANCE_NAMES", "NAME", "NTKDistanceConfig", "find_slope", "kernel_distances", "kernel_regression",
    "parse_widths", "run_cell", "run_ntk_distance_cell", "run_sweep", "summarise", "sweep",
]
