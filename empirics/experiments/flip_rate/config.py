"""The flip-rate experiment's typed configuration (one cell) and its readings."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from malleability.empirics.attacks import ATTACKS, SPACES, check_options
from malleability.empirics.data import DataConfig
from malleability.empirics.models import get_model
from malleability.empirics.training import TrainConfig
from malleability.errors import require

INTERVENTIONS = ("transformed", "curated", "adversarial")
RECOMPUTE = ("retrain", "kernel")
NTK_AT = ("trained", "init")
ATTENTION_C = ("recompute", "fixed")
CURATED_FLIP_SETS = ("next", "remaining")
KRR_TARGETS = ("onehot", "pm1")
# How the adversarial-training budget is reached (the paper names none): the full budget from the first
# step, or a linear warm-up over the first epochs (common practice where the full budget stalls training).
ADV_TRAIN_SCHEDULES = ("constant", "ramp")
RAMP_FRACTION = 0.2  # default warm-up: the first fifth of the epochs
MAX_LAM = 1e6  # KRR ridge: a million times the O(1) kernel diagonal


def _help(text: str) -> dict:
    return {"help": text}


def finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def check_eps(eps, name: str) -> None:
    require(finite(eps) and float(eps) >= 0, f"{name} must be a finite number >= 0, got {eps}")


def adv_train_budget(eps: float, epoch: int, schedule: str, ramp_epochs: int | None) -> float:
    """The adversarial-training budget at ``epoch`` (0-based): ``eps`` ('constant'), or ``eps·min(1, (epoch+1)/R)`` ('ramp')."""
    require(schedule in ADV_TRAIN_SCHEDULES, f"unknown adv_train_schedule {schedule!r}")
    require(int(epoch) >= 0, f"epoch must be >= 0, got {epoch}")
    if schedule == "constant":
        return float(eps)
    require(ramp_epochs is not None and int(ramp_epochs) >= 1, "the 'ramp' schedule needs ramp_epochs >= 1")
    return float(eps) * min(1.0, (int(epoch) + 1) / int(ramp_epochs))


@dataclass(frozen=True)
class FlipRateConfig:
    """One flip-rate cell; JSON-serialisable with ``dataclasses.asdict``."""

    data: DataConfig = field(metadata=_help("data set, n, n_test, classes, subset seed"))
    train: TrainConfig = field(default_factory=TrainConfig, metadata=_help("training protocol; its seed seeds init, batches and attacks"))
    model: str = field(default="mlp-attn", metadata=_help("a registered model (see malleability.empirics.models)"))
    model_options: dict = field(default_factory=dict, metadata=_help("the model's options, e.g. {'attention_input': 'center'}"))
    attack: str = field(default="pgd", metadata=_help("a registered attack; 'noise' is the control (random signs, same budget)"))
    attack_options: dict = field(default_factory=dict, metadata=_help("the attack's own options, e.g. {'steps': 40}"))
    eps: float = field(default=0.3, metadata=_help("l-infinity budget (>= 0) in the attack space"))
    intervention: str = field(default="transformed", metadata=_help("'transformed' | 'curated' | 'adversarial'"))
    tau: float = field(default=0.1, metadata=_help("fraction of most influential training points, in (0, 1]"))
    adv_train: bool = field(default=False, metadata=_help("PGD adversarial training of the model"))
    recompute: str = field(default="retrain", metadata=_help("'retrain' (same seed) | 'kernel' (same W, new data)"))
    space: str = field(default="pixel", metadata=_help("'pixel' ([0,1] image) | 'feature' (unit rows)"))
    lam: float = field(default=1e-3, metadata=_help("KRR ridge lambda > 0"))
    width: int = field(default=256, metadata=_help("hidden width m"))
    ntk_at: str = field(default="trained", metadata=_help("empirical NTK at the 'trained' W or at 'init' (W0)"))
    attention_c: str = field(default="recompute", metadata=_help(
        "a transductive model's fitted state (MLP-Attn's C) after an intervention: 'recompute' | 'fixed'"))
    curated_flip_set: str = field(default="next", metadata=_help("curated: flip rate on the 'next' top-tau or all 'remaining'"))
    krr_targets: str = field(default="onehot", metadata=_help("multi-class KRR targets: 'onehot' (0/1) | 'pm1' (+-1); binary: +-1"))
    feature_renormalize: bool = field(default=True, metadata=_help("space='feature': back to the unit sphere each step"))
    adv_train_steps: int = field(default=10, metadata=_help("PGD iterations per batch in adversarial training"))
    adv_train_eps: float | None = field(default=None, metadata=_help("adversarial-training budget; None -> eps"))
    adv_train_schedule: str = field(default="constant", metadata=_help(
        "adversarial-training budget over the epochs: 'constant' (the full budget from the first step) | "
        "'ramp' (linear warm-up: epoch e of R trains at budget (e + 1) / R of the full one, then the full one)"))
    adv_train_ramp_epochs: int | None = field(default=None, metadata=_help(
        "'ramp': the warm-up length R in epochs; None -> a fifth of the training epochs (at least 1)"))
    topk: int | None = field(default=None, metadata=_help("k of the top-k overlap; None -> the flip-set size"))
    null_eps: float | None = field(default=None, metadata=_help(
        "also measure the numerical floor: the flip rate under a null perturbation of this size (e.g. 1e-6); None: not measured"))

    def __post_init__(self):
        if isinstance(self.data, dict):
            object.__setattr__(self, "data", DataConfig(**self.data))
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        require(isinstance(self.data, DataConfig), "data must be a DataConfig")
        require(isinstance(self.train, TrainConfig), "train must be a TrainConfig")
        get_model(self.model, self.model_options)
        require(self.attack in ATTACKS, f"unknown attack {self.attack!r}: choose one of {', '.join(ATTACKS)}")
        check_options(self.attack, self.attack_options)
        check_eps(self.eps, "eps")
        if self.adv_train_eps is not None:
            check_eps(self.adv_train_eps, "adv_train_eps")
        if self.null_eps is not None:
            require(finite(self.null_eps) and float(self.null_eps) > 0, f"null_eps must be > 0, got {self.null_eps}")
            # a floor is measured below the perturbation it is the floor of; at or above it, it is another attack
            require(float(self.null_eps) < (float(self.eps) if float(self.eps) > 0 else 1.0),
                    f"null_eps must be below eps = {self.eps} (and below 1): a null perturbation measures rounding, "
                    f"e.g. 1e-6; got {self.null_eps}")
        require(self.intervention in INTERVENTIONS, f"unknown intervention {self.intervention!r}: choose one of {', '.join(INTERVENTIONS)}")
        require(finite(self.tau) and 0 < float(self.tau) <= 1, f"tau must lie in (0, 1], got {self.tau}")
        require(self.recompute in RECOMPUTE, f"unknown recompute {self.recompute!r}: choose one of {', '.join(RECOMPUTE)}")
        require(self.space in SPACES, f"unknown space {self.space!r}: choose one of {', '.join(SPACES)}")
        # the kernels are O(1) on unit rows: a ridge past MAX_LAM swamps them, and the influences (~1/lam)
        # fall to float64's subnormals, where rounding, not the data, orders the flip set
        require(finite(self.lam) and 0 < float(self.lam) <= MAX_LAM,
                f"lam must be a number in (0, {MAX_LAM:g}], got {self.lam}")
        require(int(self.width) >= 1, f"width must be >= 1, got {self.width}")
        require(self.ntk_at in NTK_AT, f"unknown ntk_at {self.ntk_at!r}: choose one of {', '.join(NTK_AT)}")
        require(self.attention_c in ATTENTION_C, f"unknown attention_c {self.attention_c!r}: choose one of {', '.join(ATTENTION_C)}")
        require(self.curated_flip_set in CURATED_FLIP_SETS, f"unknown curated_flip_set {self.curated_flip_set!r}")
        require(self.krr_targets in KRR_TARGETS, f"unknown krr_targets {self.krr_targets!r}: choose one of {', '.join(KRR_TARGETS)}")
        require(int(self.adv_train_steps) >= 1, "adv_train_steps must be >= 1")
        require(self.adv_train_schedule in ADV_TRAIN_SCHEDULES,
                f"unknown adv_train_schedule {self.adv_train_schedule!r}: choose one of {', '.join(ADV_TRAIN_SCHEDULES)}")
        require(self.adv_train or self.adv_train_schedule == "constant",
                "adv_train_schedule 'ramp' applies to adversarial training only (set adv_train)")
        require(self.adv_train_ramp_epochs is None or int(self.adv_train_ramp_epochs) >= 1,
                f"adv_train_ramp_epochs must be >= 1, got {self.adv_train_ramp_epochs}")
        require(self.topk is None or int(self.topk) >= 1, f"topk must be >= 1, got {self.topk}")

    def ramp_epochs(self) -> int | None:
        """The warm-up length R of the 'ramp' schedule (None under 'constant')."""
        if self.adv_train_schedule != "ramp":
            return None
        if self.adv_train_ramp_epochs is not None:
            return int(self.adv_train_ramp_epochs)
        return max(1, round(RAMP_FRACTION * int(self.train.resolved()["epochs"])))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "FlipRateConfig":
        return cls(**d)
