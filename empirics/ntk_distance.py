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

Seeds: a row's ``seed`` is the training seed (init and batch order); the data subset comes
from ``data.seed`` and is shared by all rows of a sweep.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from malleability.empirics.data import DataConfig, load_dataset
from malleability.empirics.models import MODEL_KINDS, attention_matrix, check_kind, embed
from malleability.empirics.ntk import empirical_ntk, infinite_ntk
from malleability.empirics.training import TrainConfig, resolve_loss, targets_for, train_model
from malleability.errors import MalleabilityError, require
from malleability.provenance import provenance

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
    model: str = field(default="relu", metadata={"help": "'relu' | 'mlp-attn'"})
    width: int = field(default=1024, metadata={"help": "hidden width m"})
    kernel_points: int | None = field(default=None, metadata={"help": "kernels on the first k training rows; None = all"})
    function_kernel: str = field(default="infinite", metadata={"help": "kernel of the function-space reference: 'infinite' | 'init'"})
    ridge: float = field(default=1e-6, metadata={"help": "λ = ridge · tr K / n in the kernel regression"})

    def __post_init__(self):
        if isinstance(self.data, dict):
            object.__setattr__(self, "data", DataConfig(**self.data))
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        check_kind(self.model)
        require(int(self.width) >= 1, f"width must be >= 1, got {self.width}")
        require(self.kernel_points is None or int(self.kernel_points) >= 1, "kernel_points must be >= 1")
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


def _predict(out: torch.Tensor) -> torch.Tensor:
    return (out[:, 0] > 0).long() if out.shape[1] == 1 else out.argmax(dim=1)


def run_ntk_distance_cell(cfg: NTKDistanceConfig) -> dict:
    """Train one model and measure every named distance; a JSON-ready row (pure function of cfg on CPU)."""
    t_start = time.perf_counter()
    ds = load_dataset(cfg.data)
    x_tr = torch.from_numpy(ds.x_train)
    y_tr = torch.from_numpy(ds.y_train)
    tm = train_model(cfg.model, x_tr, y_tr, ds.num_classes, cfg.train, width=int(cfg.width))
    t_train = time.perf_counter() - t_start
    dev = tm.net.W.device
    f64 = torch.float64
    x64 = x_tr.to(device=dev, dtype=f64)
    C64 = attention_matrix(x64) if cfg.model == "mlp-attn" else None
    z_all = embed(cfg.model, x64, C64)
    k = z_all.shape[0] if cfg.kernel_points is None else min(int(cfg.kernel_points), z_all.shape[0])
    z = z_all[:k]
    W0 = tm.W0.to(f64)
    WT = tm.net.W.detach().to(f64)
    K0 = empirical_ntk(z, z, W0)
    KT = empirical_ntk(z, z, WT)
    Kinf = infinite_ntk(z, z)
    distance = kernel_distances(K0, KT, Kinf)
    norms = {"k0_fro": _fro(K0), "kt_fro": _fro(KT), "kinf_fro": _fro(Kinf)}

    with torch.no_grad():
        train_pred = _predict(tm.net(tm.features(x_tr.to(device=dev, dtype=tm.net.W.dtype))))
        accuracy = {"train": float((train_pred.cpu() == y_tr).double().mean())}
        agreement = None
        if ds.pixels_test.shape[0] > 0:
            x_te64 = torch.from_numpy(ds.x_test).to(device=dev, dtype=f64)
            y_te = torch.from_numpy(ds.y_test)
            z_te = embed(cfg.model, x_te64, C64)
            f_T = tm.net(tm.features(x_te64.to(tm.net.W.dtype))).to(f64)
            if cfg.function_kernel == "infinite":
                K_tr, K_x = infinite_ntk(z_all, z_all), infinite_ntk(z_te, z_all)
            else:
                K_tr, K_x = empirical_ntk(z_all, z_all, W0), empirical_ntk(z_te, z_all, W0)
            T = targets_for(tm.loss, y_tr.to(dev), ds.num_classes, dtype=f64)
            f_ker = kernel_regression(K_tr, K_x, T, cfg.ridge)
            ref = _fro(f_ker)
            distance["function_space_relative"] = _fro(f_T - f_ker) / ref if ref > 0 else None
            p_T, p_ker = _predict(f_T).cpu(), _predict(f_ker).cpu()
            agreement = float((p_T == p_ker).double().mean())
            accuracy["test"] = float((p_T == y_te).double().mean())
            accuracy["kernel_regression_test"] = float((p_ker == y_te).double().mean())
        else:
            distance["function_space_relative"] = None
    settings = cfg.train.resolved()
    return {
        "model": cfg.model,
        "dataset": ds.name,
        "width": int(cfg.width),
        "seed": int(cfg.train.seed),
        "distance": distance,
        "function_space_agreement": agreement,
        "norms": norms,
        "accuracy": accuracy,
        "final_train_loss": tm.history[-1] if tm.history else None,
        "kernel_points": int(k),
        "n_train": int(ds.pixels_train.shape[0]),
        "n_test": int(ds.pixels_test.shape[0]),
        "readings": {
            "loss": tm.loss,
            "protocol": cfg.train.protocol,
            "init": settings["init"],
            "epochs": int(settings["epochs"]),
            "kernel": "scalar empirical NTK (diagonal output block), closed form, float64",
            "function_kernel": cfg.function_kernel,
            "ce_targets": "one-vs-rest ±1" if tm.loss == "ce" else None,
            "attention_embedding": "normalize(x C), C = XᵀX of the training rows" if cfg.model == "mlp-attn" else None,
        },
        "data": ds.describe(),
        "config": cfg.to_dict(),
        "train_settings": settings,
        "dtype": cfg.train.dtype,
        "timing_s": {"train": t_train, "total": time.perf_counter() - t_start},
        "provenance": provenance(device=str(dev)),
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
    require(len(set(out)) == len(out), f"--widths has a repeated width: {spec!r}")
    return tuple(out)


def sweep_configs(data: DataConfig, train: TrainConfig, models, widths, seeds: int, **cell_options):
    """The cells of a sweep: models x widths x training seeds 0..seeds-1."""
    require(int(seeds) >= 1, f"seeds must be >= 1, got {seeds}")
    for m in models:
        check_kind(m)
    return [
        NTKDistanceConfig(data=data, train=dataclasses.replace(train, seed=s), model=m, width=int(w), **cell_options)
        for m in models
        for w in widths
        for s in range(int(seeds))
    ]


def fit_slopes(rows) -> dict:
    """Least-squares slope of log(distance) vs log(width), over all (width, seed) points.

    Returns ``{dataset: {model: {distance: {"slope", "intercept", "stderr", "r2", "n_points",
    "widths"}}}}`` (natural logs; NTK theory predicts slope −1/2 for the init/infinite
    distances). Nonpositive or missing values are skipped; fewer than two distinct widths
    give ``slope: None``.
    """
    groups: dict = {}
    for r in rows:
        for name, value in r["distance"].items():
            if value is None or not math.isfinite(value) or value <= 0:
                continue
            groups.setdefault((r["dataset"], r["model"], name), []).append((float(r["width"]), float(value)))
    out: dict = {}
    for (dataset, model, name), pts in sorted(groups.items()):
        lx = np.log([p[0] for p in pts])
        ly = np.log([p[1] for p in pts])
        widths = sorted({int(p[0]) for p in pts})
        fit = {"slope": None, "intercept": None, "stderr": None, "r2": None, "n_points": len(pts), "widths": widths}
        if len(widths) >= 2:
            A = np.stack([lx, np.ones_like(lx)], 1)
            coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
            resid = ly - A @ coef
            dof = len(pts) - 2
            sxx = float(np.sum((lx - lx.mean()) ** 2))
            sst = float(np.sum((ly - ly.mean()) ** 2))
            fit.update(
                slope=float(coef[0]),
                intercept=float(coef[1]),
                stderr=float(math.sqrt(np.sum(resid**2) / dof / sxx)) if dof > 0 else None,
                r2=float(1 - np.sum(resid**2) / sst) if sst > 0 else None,
            )
        out.setdefault(dataset, {}).setdefault(model, {})[name] = fit
    return out


def summarise(rows) -> list[dict]:
    """Mean and spread over seeds for each (dataset, model, width, distance)."""
    groups: dict = {}
    for r in rows:
        for name, value in r["distance"].items():
            if value is not None:
                groups.setdefault((r["dataset"], r["model"], int(r["width"]), name), []).append(float(value))
    out = []
    for (dataset, model, width, name), vals in sorted(groups.items()):
        v = np.asarray(vals)
        out.append({
            "dataset": dataset, "model": model, "width": width, "distance": name,
            "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n_seeds": int(v.size),
        })
    return out


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


__all__ = [
    "DISTANCE_NAMES", "MODEL_KINDS", "NTKDistanceConfig", "run_ntk_distance_cell", "fit_slopes", "summarise",
    "sweep_configs", "run_sweep", "parse_widths", "kernel_distances", "kernel_regression",
]
