"""Influence malleability: how much NTK influence rankings move under adversarial interventions.

One *cell* (:func:`run_flip_rate_cell`) = one model x one seed x one attack x one eps x one
intervention, a pure function of its frozen :class:`FlipRateConfig` (same config -> the same
numbers on the CPU). Steps:

1. Load the data (E1's :func:`load_dataset`) and train the model (E1's :func:`train_model`;
   with ``adv_train`` each mini-batch is replaced by its PGD adversarial version, see
   :func:`adversarial_batch_transform`).
2. Influence before: exact LOO influence of KRR with the empirical NTK of the trained network
   (``ntk_at='trained'``; ``'init'`` uses W at initialisation), ridge ``lam``, summed over the
   test set (:mod:`malleability.empirics.influence`; sign convention: positive = removing the
   point raises the test loss). Computed in float64 whatever the training dtype.
3. Rank the training points by |influence|; the top ``tau`` fraction (ceil(tau n), at least 1)
   is the *flip set*.
4. Intervention (the attack targets the model of step 1 with its own training loss):
   ``transformed`` (default) replaces the top-tau by their adversarial versions;
   ``curated`` removes them; ``adversarial`` perturbs every training point.
   MLP-Attn is transductive: C = X^T X of the *perturbed* training set replaces the clean C,
   so every training and test embedding moves (``attention_c='recompute'``, default);
   ``attention_c='fixed'`` keeps the clean C (the attack then acts only through the rows).
5. Influence after: ``recompute='retrain'`` (default) trains a fresh network on the new data
   with the same seed (same init, same batch order); ``recompute='kernel'`` keeps the trained W
   and recomputes only the kernel on the new data (and the new C).
6. Metrics on the points present before and after:
   * ``flip_rate``: fraction of the flip set whose influence changes sign strictly
     (before * after < 0; an exact zero does not count as a flip).
     ``curated`` removes the flip set itself, so there we read the flip rate on
     ``curated_flip_set='next'`` (default: the next ceil(tau n) points by |influence| before
     among the remaining ones) or ``'remaining'`` (all remaining points); the row names the reading.
   * ``spearman``: Spearman rho between the signed influences before and after; ``None`` with
     ``spearman_reason`` when undefined (constant input, fewer than 2 points).
   * ``topk_overlap``: |top-k before ∩ top-k after| / k by |influence| (k = ``topk`` or the
     flip-set size).

Attack space: ``pixel`` (default): eps applies to the [0, 1] image before normalisation, the
image is clipped to [0, 1] and re-normalised by the model's pipeline; an image the attack
drives to all zeros becomes a zero feature row (counted in ``zero_rows_after_attack``).
``feature``: eps applies to the unit rows; ``feature_renormalize`` (default True) projects back
to the unit sphere after each step (the paper's models take unit rows).

Defaults for what the paper leaves open (recorded in every row under ``attack_params``): PGD 40
steps, step 2.5 eps / steps, random start; MIM 10 steps, step eps / steps, decay 1.0; FGSM one
step of eps. Adversarial training: PGD with ``adv_train_steps`` (10) at ``adv_train_eps``
(None -> the cell's eps), same space.

Control: ``attack='noise'`` (not in the paper) replaces the same rows by random-sign noise of the
same budget (each coordinate +-eps, then the same clipping; seeded by the train seed; the model
is never consulted). With ``recompute='retrain'`` any change of the data moves influences, so the
noise flip rate is the floor an attack must clear; the summary reports each attack's
``excess_over_noise`` (mean flip rate of the attack minus that of noise, same group).

The summariser (:func:`summarise_flip_rates`) gives per group mean, std, a 95% t interval over
seeds, and the MLP-Attn / ReLU ratio of mean flip rates with a seeded paired bootstrap interval
over seeds (resampling seeds; both models of a seed share the same data subset). Where the same
group also has ``noise`` rows, every other attack's cell gets ``excess_over_noise``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from malleability.empirics.attacks import ATTACK_NAMES, SPACES, make_attack
from malleability.empirics.data import DataConfig, load_dataset
from malleability.empirics.influence import (
    MULTI_OUTPUT_READING,
    SIGN_CONVENTION,
    TEST_LOSS,
    loo_influence,
    regression_targets,
)
from malleability.empirics.models import MODEL_KINDS, attention_matrix, embed
from malleability.empirics.ntk import empirical_ntk
from malleability.empirics.training import TrainConfig, TrainedModel, resolve_device, train_model
from malleability.errors import MalleabilityError, require
from malleability.provenance import provenance

INTERVENTIONS = ("transformed", "curated", "adversarial")
RECOMPUTE = ("retrain", "kernel")
NTK_AT = ("trained", "init")
ATTENTION_C = ("recompute", "fixed")
CURATED_FLIP_SETS = ("next", "remaining")
KRR_TARGETS = ("onehot", "pm1")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class FlipRateConfig:
    """One flip-rate cell; JSON-serialisable with ``dataclasses.asdict``."""

    data: DataConfig = field(metadata=_help("data set, n, n_test, classes, subset seed"))
    train: TrainConfig = field(default_factory=TrainConfig, metadata=_help("training protocol; its seed seeds init, batches and attacks"))
    model: str = field(default="mlp-attn", metadata=_help("'mlp-attn' | 'relu'"))
    attack: str = field(default="pgd", metadata=_help("'fgsm' | 'pgd' | 'mim' | 'noise' (the control: random signs, same budget)"))
    eps: float = field(default=0.3, metadata=_help("l-infinity budget (>= 0) in the attack space"))
    intervention: str = field(default="transformed", metadata=_help("'transformed' | 'curated' | 'adversarial'"))
    tau: float = field(default=0.1, metadata=_help("fraction of most influential training points, in (0, 1]"))
    adv_train: bool = field(default=False, metadata=_help("PGD adversarial training of the model"))
    recompute: str = field(default="retrain", metadata=_help("'retrain' (same seed) | 'kernel' (same W, new data)"))
    space: str = field(default="pixel", metadata=_help("'pixel' ([0,1] image) | 'feature' (unit rows)"))
    lam: float = field(default=1e-3, metadata=_help("KRR ridge lambda > 0"))
    width: int = field(default=256, metadata=_help("hidden width m"))
    ntk_at: str = field(default="trained", metadata=_help("empirical NTK at the 'trained' W or at 'init' (W0)"))
    attention_c: str = field(default="recompute", metadata=_help("MLP-Attn C after an intervention: 'recompute' | 'fixed'"))
    curated_flip_set: str = field(default="next", metadata=_help("curated: flip rate on the 'next' top-tau or all 'remaining'"))
    krr_targets: str = field(default="onehot", metadata=_help("multi-class KRR targets: 'onehot' (0/1) | 'pm1' (+-1); binary: +-1"))
    feature_renormalize: bool = field(default=True, metadata=_help("space='feature': back to the unit sphere each step"))
    pgd_steps: int = field(default=40, metadata=_help("PGD iterations"))
    pgd_step_size: float | None = field(default=None, metadata=_help("PGD step; None -> 2.5 eps / steps"))
    mim_steps: int = field(default=10, metadata=_help("MIM iterations"))
    mim_decay: float = field(default=1.0, metadata=_help("MIM momentum decay"))
    adv_train_steps: int = field(default=10, metadata=_help("PGD iterations per batch in adversarial training"))
    adv_train_eps: float | None = field(default=None, metadata=_help("adversarial-training budget; None -> eps"))
    topk: int | None = field(default=None, metadata=_help("k of the top-k overlap; None -> the flip-set size"))

    def __post_init__(self):
        require(isinstance(self.data, DataConfig), "data must be a DataConfig")
        require(isinstance(self.train, TrainConfig), "train must be a TrainConfig")
        require(self.model in MODEL_KINDS, f"unknown model {self.model!r}: choose one of {', '.join(MODEL_KINDS)}")
        require(self.attack in ATTACK_NAMES, f"unknown attack {self.attack!r}: choose one of {', '.join(ATTACK_NAMES)}")
        _check_eps(self.eps, "eps")
        if self.adv_train_eps is not None:
            _check_eps(self.adv_train_eps, "adv_train_eps")
        require(self.intervention in INTERVENTIONS, f"unknown intervention {self.intervention!r}: choose one of {', '.join(INTERVENTIONS)}")
        require(_finite(self.tau) and 0 < float(self.tau) <= 1, f"tau must lie in (0, 1], got {self.tau}")
        require(self.recompute in RECOMPUTE, f"unknown recompute {self.recompute!r}: choose one of {', '.join(RECOMPUTE)}")
        require(self.space in SPACES, f"unknown space {self.space!r}: choose one of {', '.join(SPACES)}")
        require(_finite(self.lam) and float(self.lam) > 0, f"lam must be a positive number, got {self.lam}")
        require(int(self.width) >= 1, f"width must be >= 1, got {self.width}")
        require(self.ntk_at in NTK_AT, f"unknown ntk_at {self.ntk_at!r}: choose one of {', '.join(NTK_AT)}")
        require(self.attention_c in ATTENTION_C, f"unknown attention_c {self.attention_c!r}: choose one of {', '.join(ATTENTION_C)}")
        require(self.curated_flip_set in CURATED_FLIP_SETS, f"unknown curated_flip_set {self.curated_flip_set!r}")
        require(self.krr_targets in KRR_TARGETS, f"unknown krr_targets {self.krr_targets!r}: choose one of {', '.join(KRR_TARGETS)}")
        require(int(self.pgd_steps) >= 1 and int(self.mim_steps) >= 1 and int(self.adv_train_steps) >= 1, "attack steps must be >= 1")
        require(self.topk is None or int(self.topk) >= 1, f"topk must be >= 1, got {self.topk}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "FlipRateConfig":
        d = dict(d)
        d["data"] = DataConfig(**d["data"])
        d["train"] = TrainConfig(**d["train"])
        return cls(**d)


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _check_eps(eps, name: str) -> None:
    require(_finite(eps) and float(eps) >= 0, f"{name} must be a finite number >= 0, got {eps}")


# --------------------------------------------------------------------------------------------
# metrics (pure)


def top_tau_indices(scores: np.ndarray, tau: float) -> np.ndarray:
    """Indices of the ceil(tau n) (at least 1) largest scores, largest first (ties by index)."""
    scores = np.asarray(scores, dtype=np.float64)
    require(scores.ndim == 1 and scores.size >= 1, "scores must be a non-empty 1-D array")
    require(_finite(tau) and 0 < tau <= 1, f"tau must lie in (0, 1], got {tau}")
    k = max(1, int(math.ceil(tau * scores.size - 1e-9)))
    return np.argsort(-scores, kind="stable")[:k]


def flip_rate(before: np.ndarray, after: np.ndarray) -> float:
    """Fraction of points whose influence changes sign strictly (before * after < 0)."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    require(before.shape == after.shape and before.ndim == 1 and before.size >= 1, "flip_rate needs two equal, non-empty 1-D arrays")
    return float(np.mean(before * after < 0))


def spearman(before: np.ndarray, after: np.ndarray) -> tuple[float | None, str | None]:
    """(rho, None), or (None, reason) when Spearman's rho is undefined."""
    import scipy.stats

    before, after = np.asarray(before, float), np.asarray(after, float)
    require(before.shape == after.shape and before.ndim == 1, "spearman needs two equal 1-D arrays")
    if before.size < 2:
        return None, "fewer than 2 points"
    if np.ptp(before) == 0:
        return None, "influence before is constant"
    if np.ptp(after) == 0:
        return None, "influence after is constant"
    rho = float(scipy.stats.spearmanr(before, after).statistic)
    if not math.isfinite(rho):
        return None, "spearman rho is not finite"
    return rho, None


def topk_overlap(before: np.ndarray, after: np.ndarray, k: int) -> float:
    """|top-k by |before| ∩ top-k by |after|| / k (k clipped to the number of points)."""
    before, after = np.abs(np.asarray(before, float)), np.abs(np.asarray(after, float))
    require(before.shape == after.shape and before.size >= 1, "topk_overlap needs two equal, non-empty arrays")
    k = max(1, min(int(k), before.size))
    a = set(np.argsort(-before, kind="stable")[:k].tolist())
    b = set(np.argsort(-after, kind="stable")[:k].tolist())
    return len(a & b) / k


# --------------------------------------------------------------------------------------------
# influence of a trained network


def krr_targets(labels: np.ndarray, num_outputs: int, reading: str) -> np.ndarray:
    """KRR targets: binary (one output) +-1; multi-class one-hot 0/1 ('onehot') or +-1 ('pm1')."""
    y = regression_targets(np.asarray(labels, dtype=np.int64), num_outputs)
    return 2.0 * y - 1.0 if (num_outputs > 1 and reading == "pm1") else y


def network_influence(kind: str, W: torch.Tensor, C: torch.Tensor | None, x_train_unit: torch.Tensor,
                      y_train: np.ndarray, x_test_unit: torch.Tensor, y_test: np.ndarray, num_outputs: int,
                      lam: float, targets: str = "onehot"):
    """Exact LOO influence with the empirical NTK of a network with first layer W, in float64.

    Features are ``embed(kind, x, C)``; the kernel is the block shared by all outputs
    (see :data:`malleability.empirics.influence.MULTI_OUTPUT_READING`).
    """
    W64 = W.detach().to(torch.float64)
    C64 = None if C is None else C.detach().to(device=W64.device, dtype=torch.float64)
    z_tr = embed(kind, x_train_unit.detach().to(device=W64.device, dtype=torch.float64), C64)
    z_te = embed(kind, x_test_unit.detach().to(device=W64.device, dtype=torch.float64), C64)
    K = empirical_ntk(z_tr, z_tr, W64).cpu().numpy()
    K_test = empirical_ntk(z_te, z_tr, W64).cpu().numpy()
    return loo_influence(K, K_test, krr_targets(y_train, num_outputs, targets),
                         krr_targets(y_test, num_outputs, targets), lam)


# --------------------------------------------------------------------------------------------
# attacks on a trained model


def build_attack(cfg: FlipRateConfig, *, eps: float | None = None, name: str | None = None, steps: int | None = None,
                 loss_fn=None, seed: int | None = None):
    name = name or cfg.attack
    kwargs = {"space": cfg.space, "loss_fn": loss_fn, "seed": int(cfg.train.seed if seed is None else seed)}
    if cfg.space == "feature":
        kwargs["renormalize"] = bool(cfg.feature_renormalize)
    if name == "pgd":
        kwargs.update(steps=int(steps or cfg.pgd_steps), step_size=cfg.pgd_step_size)
    elif name == "mim":
        kwargs.update(steps=int(steps or cfg.mim_steps), decay=float(cfg.mim_decay))
    return make_attack(name, float(cfg.eps if eps is None else eps), **kwargs)


def _model_fn(model: TrainedModel, space: str):
    dtype = model.net.W.dtype
    if space == "pixel":
        return lambda p: model.logits_from_pixels(p.to(dtype))
    return lambda z: model.net(model.features(z.to(dtype)))


def attack_rows(model: TrainedModel, attack, rows: torch.Tensor, labels: torch.Tensor, space: str,
                chunk: int = 2048) -> torch.Tensor:
    """Adversarial versions of ``rows`` (pixels or unit rows, by ``space``) against ``model``."""
    if not getattr(attack, "uses_model", True):
        # no gradients, so no memory reason to chunk; one call keeps the seeded signs independent
        # across rows (chunks would each restart the generator and repeat the same sign pattern)
        chunk = max(1, rows.shape[0])
    out = []
    for start in range(0, rows.shape[0], chunk):
        out.append(attack(_model_fn(model, space), rows[start : start + chunk], labels[start : start + chunk]))
    return torch.cat(out) if out else rows.clone()


def adversarial_batch_transform(cfg: FlipRateConfig, pixels_train: torch.Tensor, x_train_unit: torch.Tensor):
    """``batch_transform`` for E1's ``train_model``: PGD adversarial training (Madry et al. 2018).

    ``train_model`` hands over unit rows; in pixel space we recover each row's image as the
    training row with the largest cosine (the row itself; identical directions are identical
    images up to scale), attack the image, and return its unit row. Each step uses a fresh,
    deterministic random start (seed = train seed * 1_000_003 + step).
    """
    state = {"step": 0}
    eps = cfg.eps if cfg.adv_train_eps is None else cfg.adv_train_eps

    def transform(model: TrainedModel, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        state["step"] += 1
        attack = build_attack(cfg, eps=eps, name="pgd", steps=cfg.adv_train_steps, loss_fn=model.loss_fn(),
                              seed=int(cfg.train.seed) * 1_000_003 + state["step"])
        if cfg.space == "pixel":
            idx = (xb.to(x_train_unit.dtype) @ x_train_unit.T).argmax(dim=1)
            adv = attack(_model_fn(model, "pixel"), pixels_train[idx], yb)
            return (adv / adv.norm(dim=1, keepdim=True).clamp_min(1e-12)).to(xb.dtype)
        return attack(_model_fn(model, "feature"), xb, yb).to(xb.dtype)

    return transform


# --------------------------------------------------------------------------------------------
# one cell


def _unit(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _train(cfg: FlipRateConfig, train_cfg: TrainConfig, x_unit: torch.Tensor, pixels: torch.Tensor, y: torch.Tensor,
           num_classes: int, C):
    transform = adversarial_batch_transform(cfg, pixels, x_unit) if cfg.adv_train else None
    return train_model(cfg.model, x_unit, y, num_classes, train_cfg, C=C, batch_transform=transform, width=int(cfg.width))


def _accuracy(model: TrainedModel, x_unit: torch.Tensor, y: np.ndarray) -> float | None:
    if len(y) == 0:
        return None
    return float((model.predict(x_unit).cpu().numpy() == y).mean())


def run_flip_rate_cell(cfg: FlipRateConfig) -> dict:
    """Run one cell (see the module docstring); returns a JSON-ready row."""
    require(isinstance(cfg, FlipRateConfig), "run_flip_rate_cell takes a FlipRateConfig")
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    device = resolve_device(cfg.train.device)
    train_cfg = dataclasses.replace(cfg.train, device=device)
    dtype = getattr(torch, train_cfg.dtype)
    ds = load_dataset(cfg.data)
    n = ds.pixels_train.shape[0]
    require(n >= 2, f"need at least 2 training points for leave-one-out influence, got {n}")
    require(ds.pixels_test.shape[0] >= 1, "need at least 1 test point (n_test >= 1) to measure influence on the test loss")
    require(cfg.space == "feature" or (ds.pixels_train.min() >= 0 and ds.pixels_train.max() <= 1),
            "space='pixel' needs pixels in [0, 1]; this data set is not, use --space feature")

    # Training rows in float64 for attacks and kernels; the trainer casts to its own dtype.
    pixels = torch.as_tensor(ds.pixels_train, dtype=torch.float64, device=device)
    x_unit = torch.as_tensor(ds.x_train, dtype=torch.float64, device=device)
    x_test = torch.as_tensor(ds.x_test, dtype=torch.float64, device=device)
    y = torch.as_tensor(ds.y_train, dtype=torch.int64, device=device)
    y_np, y_test_np = ds.y_train, ds.y_test

    t = time.perf_counter()
    model0 = _train(cfg, train_cfg, x_unit.to(dtype), pixels.to(dtype), y, ds.num_classes, None)
    timing["train_before"] = time.perf_counter() - t
    num_outputs = int(model0.net.num_outputs)

    def influence(model: TrainedModel, C, x_rows, labels):
        W = model.net.W if cfg.ntk_at == "trained" else model.W0
        return network_influence(cfg.model, W, C, x_rows, labels, x_test, y_test_np, num_outputs, cfg.lam, cfg.krr_targets)

    t = time.perf_counter()
    before = influence(model0, model0.C, x_unit, y_np)
    timing["influence_before"] = time.perf_counter() - t
    top = top_tau_indices(np.abs(before.total), cfg.tau)

    # ---- intervention ------------------------------------------------------------------
    t = time.perf_counter()
    attack = build_attack(cfg, loss_fn=model0.loss_fn())
    zero_rows_after = 0
    if cfg.intervention == "curated":
        keep = np.setdiff1d(np.arange(n), top)
        require(keep.size >= 2, f"curated removes {top.size} of {n} points and leaves fewer than 2; lower tau")
        keep_t = torch.as_tensor(keep, device=device)
        x_new, y_new, px_new = x_unit[keep_t], y[keep_t], pixels[keep_t]
        attacked = np.array([], dtype=np.int64)
    else:
        keep = np.arange(n)
        attacked = top if cfg.intervention == "transformed" else np.arange(n)
        att_t = torch.as_tensor(attacked, device=device)
        source = pixels if cfg.space == "pixel" else x_unit
        adv = attack_rows(model0, attack, source[att_t], y[att_t], cfg.space)
        new_source = source.clone()
        new_source[att_t] = adv
        if cfg.space == "pixel":
            zero_rows_after = int((new_source.abs().sum(dim=1) == 0).sum())
            px_new, x_new = new_source, _unit(new_source)
        else:
            px_new, x_new = pixels, _unit(new_source)
        y_new = y
    timing["attack"] = time.perf_counter() - t

    # ---- recompute influence -----------------------------------------------------------
    t = time.perf_counter()
    if cfg.model == "mlp-attn":
        C_new = attention_matrix(x_new.to(dtype)) if cfg.attention_c == "recompute" else model0.C
    else:
        C_new = None
    if cfg.recompute == "retrain":
        model1 = _train(cfg, train_cfg, x_new.to(dtype), px_new.to(dtype), y_new, ds.num_classes,
                        None if cfg.attention_c == "recompute" else model0.C)
    else:
        model1 = dataclasses.replace(model0, C=C_new)
    timing["retrain" if cfg.recompute == "retrain" else "rekernel"] = time.perf_counter() - t
    t = time.perf_counter()
    after = influence(model1, model1.C, x_new, y_new.cpu().numpy())
    timing["influence_after"] = time.perf_counter() - t

    # ---- metrics on common points ------------------------------------------------------
    before_common = before.total[keep]
    after_common = after.total
    if cfg.intervention == "curated":
        if cfg.curated_flip_set == "next":
            flip_pos = top_tau_indices(np.abs(before_common), min(1.0, top.size / keep.size))[: top.size]
        else:
            flip_pos = np.arange(keep.size)
        flip_reading = f"curated-{cfg.curated_flip_set}"
    else:
        flip_pos = top
        flip_reading = "top-tau"
    k = int(cfg.topk) if cfg.topk is not None else int(top.size)
    rho, rho_reason = spearman(before_common, after_common)
    fr = flip_rate(before_common[flip_pos], after_common[flip_pos])
    timing["total"] = time.perf_counter() - t_start

    return {
        "model": cfg.model,
        "dataset": ds.name,
        "classes": list(cfg.data.classes) if cfg.data.classes is not None else None,
        "num_classes": int(ds.num_classes),
        "attack": cfg.attack,
        "eps": float(cfg.eps),
        "seed": int(cfg.train.seed),
        "data_seed": int(cfg.data.seed),
        "intervention": cfg.intervention,
        "adv_train": bool(cfg.adv_train),
        "flip_rate": fr,
        "spearman": rho,
        "spearman_reason": rho_reason,
        "topk_overlap": topk_overlap(before_common, after_common, k),
        "topk": k,
        "tau": float(cfg.tau),
        "n_flip_set": int(flip_pos.size),
        "n_attacked": int(attacked.size),
        "n_train": int(n),
        "n_train_after": int(keep.size),
        "n_test": int(ds.pixels_test.shape[0]),
        "flip_set_reading": flip_reading,
        "zero_rows_after_attack": zero_rows_after,
        "influence": {
            "mean_abs_before": float(np.abs(before.total).mean()),
            "mean_abs_after": float(np.abs(after.total).mean()),
            "frac_positive_before": float(np.mean(before.total > 0)),
            "frac_positive_after": float(np.mean(after.total > 0)),
            "krr_test_loss_before": float(before.test_loss.mean()),
            "krr_test_loss_after": float(after.test_loss.mean()),
        },
        "accuracy": {
            "test_before": _accuracy(model0, x_test, y_test_np),
            "test_after": _accuracy(model1, x_test, y_test_np),
            "train_loss_final_before": model0.history[-1] if model0.history else None,
            "train_loss_final_after": model1.history[-1] if (cfg.recompute == "retrain" and model1.history) else None,
        },
        "readings": {
            "recompute": cfg.recompute,
            "space": cfg.space,
            "ntk_at": cfg.ntk_at,
            "attention_c": cfg.attention_c if cfg.model == "mlp-attn" else None,
            "krr_targets": cfg.krr_targets if num_outputs > 1 else "pm1 (binary)",
            "training_loss": model0.loss,
            "sign_convention": SIGN_CONVENTION,
            "influence_test_loss": TEST_LOSS,
            "aggregation": "sum over the test set",
            "multi_output_kernel": MULTI_OUTPUT_READING,
            "flip": "strict sign change: before * after < 0",
            "ranking": "|influence| summed over the test set, top ceil(tau n)",
            "data_notes": ds.notes,
        },
        "attack_params": attack.params(),
        "adv_train_params": (
            {"attack": "pgd", "steps": int(cfg.adv_train_steps),
             "eps": float(cfg.eps if cfg.adv_train_eps is None else cfg.adv_train_eps), "space": cfg.space}
            if cfg.adv_train else None
        ),
        "lam": float(cfg.lam),
        "width": int(cfg.width),
        "dtype": {"training": train_cfg.dtype, "influence": "float64"},
        "train": train_cfg.resolved(),
        "config": cfg.to_json(),
        "timing_s": {k2: round(v, 4) for k2, v in timing.items()},
        "provenance": provenance(device),
    }


# --------------------------------------------------------------------------------------------
# summary over seeds


def _t_interval(values: np.ndarray) -> list[float] | None:
    import scipy.stats

    if values.size < 2:
        return None
    half = float(scipy.stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    m = float(values.mean())
    return [m - half, m + half]


def _stats(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else None,
        "ci95": _t_interval(v),
    }


def ratio_with_interval(num_by_seed: dict, den_by_seed: dict, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """mean(num) / mean(den) over the seeds both have, with a paired percentile bootstrap 95% interval."""
    seeds = sorted(set(num_by_seed) & set(den_by_seed))
    out = {"n_seeds": len(seeds), "ratio": None, "ci95": None, "reason": None, "method": "paired bootstrap over seeds, percentile, 2000 resamples, seed 0"}
    if not seeds:
        out["reason"] = "no seed has both models"
        return out
    a = np.array([num_by_seed[s] for s in seeds], dtype=np.float64)
    b = np.array([den_by_seed[s] for s in seeds], dtype=np.float64)
    if b.mean() == 0:
        out["reason"] = "ReLU mean flip rate is 0: ratio undefined"
        return out
    out["ratio"] = float(a.mean() / b.mean())
    if len(seeds) < 2:
        out["reason"] = "one seed: no interval"
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    num, den = a[idx].mean(axis=1), b[idx].mean(axis=1)
    ok = den > 0
    ratios = num[ok] / den[ok]
    out["bootstrap_dropped"] = int((~ok).sum())
    if ratios.size:
        out["ci95"] = [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]
    return out


def _group_key(row: dict) -> tuple:
    """Rows under different model-independent readings (space, recompute, ntk_at) are never pooled."""
    cls = row.get("classes")
    r = row.get("readings") or {}
    readings = f"space={r.get('space', 'pixel')};recompute={r.get('recompute', 'retrain')};ntk_at={r.get('ntk_at', 'trained')}"
    return (row["dataset"], ",".join(map(str, cls)) if cls else "all", row["attack"], float(row["eps"]),
            row.get("intervention", "transformed"), bool(row.get("adv_train", False)), readings)


def excess_over_noise(by_group: dict, entry: dict) -> dict | None:
    """How far an attack's flip rate sits above the noise control's in the same group.

    Same data set, classes, eps, intervention, adv_train, readings and model, attack 'noise'.
    ``excess`` = mean flip rate (attack) - mean flip rate (noise), each over its own seeds;
    ``paired`` = mean/std/t-interval of the per-seed differences over the seeds both have.
    None for the noise cells themselves and where the group has no noise rows.
    """
    if entry["attack"] == "noise":
        return None
    noise_key = (entry["dataset"], entry["classes"], "noise", entry["eps"], entry["intervention"],
                 entry["adv_train"], entry["readings"])
    noise = by_group.get(noise_key, {}).get(entry["model"])
    own = by_group.get(noise_key[:2] + (entry["attack"],) + noise_key[3:], {}).get(entry["model"])
    if not noise or not own:
        return None
    noise_mean = float(np.mean(list(noise.values())))
    shared = sorted(set(noise) & set(own))
    return {
        "excess": float(np.mean(list(own.values()))) - noise_mean,
        "noise_mean": noise_mean,
        "noise_seeds": sorted(noise),
        "paired": _stats([own[s] - noise[s] for s in shared]),
        "definition": "mean flip rate (attack) - mean flip rate (noise control), same group and model",
    }


def summarise_flip_rates(rows: list[dict]) -> dict:
    """Per (dataset, classes, attack, eps, intervention, adv_train, readings, model): mean/std/t-interval of
    flip rate, Spearman rho and top-k overlap over seeds, and, where the group also has rows of the
    ``noise`` control, ``excess_over_noise`` (:func:`excess_over_noise`); per group the MLP-Attn / ReLU
    ratio of mean flip rates (paired bootstrap over seeds); and the adversarial-training ablation where
    rows with and without ``adv_train`` are both present."""
    cells: dict = {}
    for row in rows:
        cells.setdefault(_group_key(row) + (row["model"],), []).append(row)
    summary_cells = []
    by_group: dict = {}
    for key, group in sorted(cells.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        dataset, classes, attack, eps, intervention, adv, readings, model = key
        entry = {
            "dataset": dataset, "classes": classes, "attack": attack, "eps": eps, "intervention": intervention,
            "adv_train": adv, "readings": readings, "model": model, "seeds": sorted(int(r["seed"]) for r in group),
            "flip_rate": _stats([r["flip_rate"] for r in group]),
            "spearman": _stats([r["spearman"] for r in group]),
            "spearman_undefined": sum(r["spearman"] is None for r in group),
            "topk_overlap": _stats([r["topk_overlap"] for r in group]),
        }
        summary_cells.append(entry)
        by_group.setdefault(key[:-1], {})[model] = {int(r["seed"]): float(r["flip_rate"]) for r in group}
    for entry in summary_cells:
        entry["excess_over_noise"] = excess_over_noise(by_group, entry)
    ratios = []
    for gkey, models in sorted(by_group.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        if "mlp-attn" in models and "relu" in models:
            dataset, classes, attack, eps, intervention, adv, readings = gkey
            ratios.append({"dataset": dataset, "classes": classes, "attack": attack, "eps": eps,
                           "intervention": intervention, "adv_train": adv, "readings": readings,
                           **ratio_with_interval(models["mlp-attn"], models["relu"])})
    ablation = []
    for gkey, models in sorted(by_group.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        if gkey[5]:
            continue
        adv_key = gkey[:5] + (True,) + gkey[6:]
        if adv_key in by_group:
            for model in sorted(set(models) & set(by_group[adv_key])):
                std_vals = np.array(list(models[model].values()))
                adv_vals = np.array(list(by_group[adv_key][model].values()))
                ablation.append({"dataset": gkey[0], "classes": gkey[1], "attack": gkey[2], "eps": gkey[3],
                                 "intervention": gkey[4], "readings": gkey[6], "model": model,
                                 "standard": _stats(std_vals), "adversarial_training": _stats(adv_vals)})
    return {
        "cells": summary_cells,
        "ratios": ratios,
        "ablation": ablation,
        "interval": "95% Student-t interval over seeds (None with fewer than 2 seeds)",
    }
