"""How big an audit is: a :class:`Scale` of nested sub-configs, one per part of the audit.

Every field has help text and is recorded in results.json. Any field can be changed with the
hidden CLI option ``--override part.field=value`` (repeatable; tuples as comma lists); the
flat names of earlier versions (``ntk_widths``, ``flip_seeds``, ...) are still accepted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from malleability.errors import MalleabilityError, require
from malleability.validation import MAX_SEED_COUNT, refuse_repeats, split_entries

# Task name -> (dataset, classes as spec). Binary tasks follow the paper's Table 3.
TASKS = {
    "mnist": ("mnist", None),
    "cifar10": ("cifar10", None),
    "fashion-mnist": ("fashion-mnist", None),
    "mnist-3v8": ("mnist", "3,8"),
    "cifar10-cars-planes": ("cifar10", "automobile,airplane"),
}


def _h(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class TheoryScale:
    profile: str = field(default="quick", metadata=_h("profile of theory.check_claims: quick | thorough"))
    claims: tuple[str, ...] | None = field(default=None, metadata=_h("claim ids checked (one cell each); None: every registered claim"))


@dataclass(frozen=True)
class WidthsScale:
    tasks: tuple[str, ...] = field(default=("mnist", "fashion-mnist", "cifar10"), metadata=_h("data sets whose κ is measured"))
    n: tuple[int, ...] = field(default=(50, 100, 200, 500, 1000, 2000), metadata=_h("training-set sizes n at which κ is measured"))
    eps: float = field(default=0.1, metadata=_h("ε in the predicted width m = Ω(κ⁶/ε²) and of the measured widths"))


@dataclass(frozen=True)
class NTKScale:
    tasks: tuple[str, ...] = field(default=("mnist", "cifar10"), metadata=_h("data sets of the NTK-distance sweep"))
    n: int = field(default=256, metadata=_h("training samples"))
    n_test: int = field(default=128, metadata=_h("test samples"))
    widths: tuple[int, ...] = field(default=(16, 64, 256, 1024), metadata=_h("widths m"))
    seeds: int = field(default=2, metadata=_h("seeds per (model, data set, width); seed s draws data subset s and init s"))
    epochs: int = field(default=20, metadata=_h("training epochs (paper: 500)"))
    protocols: tuple[str, ...] = field(default=("paper",), metadata=_h("'paper' (Adam) and/or 'lazy' (full-batch GD, NTK init)"))


@dataclass(frozen=True)
class FlipScale:
    tasks_10class: tuple[str, ...] = field(default=("mnist", "cifar10"), metadata=_h("Table 2 data sets"))
    tasks_binary: tuple[str, ...] = field(default=("mnist-3v8", "cifar10-cars-planes"), metadata=_h("Table 3 tasks"))
    attacks: tuple[str, ...] = field(default=("fgsm", "pgd", "mim", "noise"), metadata=_h(
        "attacks of Tables 2 and 3; 'noise' is our control (random signs of the same ℓ∞ budget, no model), never part of a verdict"))
    eps: float = field(default=0.3, metadata=_h("ℓ∞ budget ε (paper: 0.3)"))
    n: int = field(default=500, metadata=_h("training samples"))
    n_test: int = field(default=100, metadata=_h("test samples"))
    width: int = field(default=256, metadata=_h("network width m"))
    epochs: int = field(default=10, metadata=_h("training epochs (paper: 500)"))
    seeds: int = field(default=3, metadata=_h("seeds per cell"))
    adv_training: bool = field(default=True, metadata=_h("run Table 4 (PGD adversarial training vs standard)"))
    adv_training_tasks: tuple[str, ...] | None = field(default=None, metadata=_h(
        "Table 4 data sets; None: every Table 2 data set"))
    adv_train_steps: int = field(default=10, metadata=_h("PGD iterations per batch in adversarial training"))
    adv_train_schedules: tuple[str, ...] = field(default=("constant", "ramp"), metadata=_h(
        "Table 4 budget schedules, each a reading: 'constant' (the full ε from the first step, the plain reading) "
        "and 'ramp' (linear warm-up over the first adv_train_ramp_epochs)"))
    adv_train_ramp_epochs: int | None = field(default=None, metadata=_h(
        "warm-up length of the 'ramp' schedule in epochs; None: a fifth of the epochs"))
    protocols: tuple[str, ...] = field(default=("paper",), metadata=_h("training protocols of the Table 2 cells ('lazy' is the causal control)"))
    null_eps: float | None = field(default=1e-6, metadata=_h("size of the null perturbation that measures the numerical floor; None: not measured"))
    dtype: str | None = field(default=None, metadata=_h(
        "training precision of the flip cells (float32 rounding alone moves single flip cells); None: the scale's dtype"))
    eps_sweep: tuple[float, ...] = field(default=(0.1, 0.2, 0.3, 0.5), metadata=_h(
        "ℓ∞ budgets of the ε sweep (the paper lists them, reports no numbers); information only; empty: no sweep"))
    eps_sweep_tasks: tuple[str, ...] = field(default=("mnist",), metadata=_h("data sets of the ε sweep"))
    eps_sweep_attacks: tuple[str, ...] = field(default=("pgd", "noise"), metadata=_h("attacks of the ε sweep"))


@dataclass(frozen=True)
class KLayerScale:
    datasets: tuple[str, ...] = field(default=("mnist", "cifar10"), metadata=_h(
        "data sets whose unit rows feed k stacked attention layers; empty: no k-layer cells"))
    n: tuple[int, ...] = field(default=(20, 50, 100, 200), metadata=_h("training-set sizes n (one cell each)"))
    ks: tuple[int, ...] = field(default=(1, 2, 3, 4), metadata=_h("numbers of layers k"))
    measure_max_n: int = field(default=50, metadata=_h(
        "largest n whose k-layer Gram is computed by the mpmath recursion (about a minute at n = 50); larger n: "
        "the Gram polynomial from the singular values"))


@dataclass(frozen=True)
class Scale:
    """How big an audit is. Every field is recorded in results.json."""

    name: str = field(metadata=_h("scale name"))
    description: str = field(default="", metadata=_h("what this scale is for"))
    models: tuple[str, ...] = field(default=("relu", "mlp-attn"), metadata=_h("registered models run in every experiment"))
    baseline: str = field(default="relu", metadata=_h("the model the others are compared against (flip-rate ratios)"))
    attention_inputs: tuple[str, ...] = field(default=("raw", "center"), metadata=_h(
        "attention-input readings of the attention models ('raw' is the paper's text)"))
    limitation_models: tuple[str, ...] = field(default=("softmax-attn", "patch-attn", "qkv-attn", "truncated-attn"),
                                               metadata=_h("models beyond the paper (its named limitations), run in "
                                                           "Table 1 and Table 2 beside the paper's; empty: none"))
    limitation_tasks: tuple[str, ...] | None = field(default=None, metadata=_h(
        "data sets on which the models beyond the paper run (Table 1 and Table 2); None: all of them"))
    truncation_ranks: tuple[int | None, ...] = field(default=(1, 2, 5, 10, 50, 100, None), metadata=_h(
        "ranks r of truncated-attn (none: full rank)"))
    dtype: str = field(default="float32", metadata=_h("training precision"))
    theory: TheoryScale = field(default_factory=TheoryScale, metadata=_h("theory claims"))
    widths: WidthsScale = field(default_factory=WidthsScale, metadata=_h("κ of the data and the widths"))
    ntk: NTKScale = field(default_factory=NTKScale, metadata=_h("NTK distance vs width (Table 1)"))
    flip: FlipScale = field(default_factory=FlipScale, metadata=_h("flip rates (Tables 2-4, ε sweep)"))
    k_layer: KLayerScale = field(default_factory=KLayerScale, metadata=_h("k stacked attention layers on real rows"))


def _r(scale: Scale, **parts) -> Scale:
    """``scale`` with sub-config fields replaced: _r(s, ntk={"n": 10}, name="x")."""
    changes = {}
    for key, value in parts.items():
        if isinstance(value, dict):
            changes[key] = dataclasses.replace(getattr(scale, key), **value)
        else:
            changes[key] = value
    return dataclasses.replace(scale, **changes)


_BASE = Scale(name="base")
SCALES: dict[str, Scale] = {
    "quick": _r(_BASE, name="quick",
                description="CI-sized: every table and every limitation at a small size on 2 cores; trends only",
                truncation_ranks=(1, None),
                widths={"n": (50, 100, 200, 500)},
                k_layer={"n": (20, 100, 200), "measure_max_n": 20},
                ntk={"n": 200, "n_test": 100, "widths": (16, 64, 256, 1024), "seeds": 2, "epochs": 20},
                flip={"n": 200, "n_test": 60, "width": 128, "epochs": 20, "seeds": 3,
                      "eps_sweep": (), "adv_train_steps": 3}),
    # At the paper's 500 epochs, flip cells in float64 (float32 rounding alone moved single flip cells by 0.05-0.12
    # between machines). Measured 98.2 min on 2 cores before training's per-step overhead was cut and MLP-Attn's
    # cells stopped being repeated as truncated-attn at full rank; the report header gives each run's measured time.
    "default": _r(_BASE, name="default",
                  description="the CPU reference run on 2 cores: the paper's 500 epochs at sizes meant to fit 90 minutes",
                  limitation_tasks=("mnist",),
                  ntk={"n": 200, "n_test": 100, "widths": (16, 64, 256, 1024), "seeds": 2, "epochs": 500,
                       "protocols": ("paper", "lazy")},
                  # n = 600: the flip set (top τ = 10%) holds 60 points; n + n_test <= 762: the CIFAR-10
                  # cars-vs-planes images of the offline 4000-image subset. Table 4 on MNIST only: adversarial
                  # training of MLP-Attn on CIFAR-10 (a 3072² product per PGD step) alone would take 3 h.
                  flip={"n": 600, "n_test": 100, "width": 128, "epochs": 500, "seeds": 2, "adv_train_steps": 3,
                        "adv_training_tasks": ("mnist",), "eps_sweep": (0.1, 0.3, 0.5), "protocols": ("paper", "lazy"),
                        "dtype": "float64"}),
    "paper": _r(_BASE, name="paper",
                description="the paper's widths (4..4096) and protocol (500 epochs); meant for a GPU and the full data sets",
                theory={"profile": "thorough"},
                ntk={"n": 1000, "n_test": 500, "widths": (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
                     "seeds": 5, "epochs": 500, "protocols": ("paper", "lazy")},
                flip={"tasks_10class": ("mnist", "cifar10", "fashion-mnist"), "n": 1000, "n_test": 200,
                      "width": 1024, "epochs": 500, "seeds": 5, "eps_sweep_tasks": ("mnist", "cifar10"),
                      "protocols": ("paper", "lazy")}),
    # Hidden (not in --help): the smallest audit that still runs every kind of cell, for tests.
    "tiny": _r(_BASE, name="tiny",
               description="tests only: every kind of cell at a toy size; numbers mean nothing",
               attention_inputs=("raw",),
               limitation_models=(),
               theory={"claims": ("thm4.1",)},
               widths={"tasks": ("mnist",), "n": (20, 40)},
               k_layer={"datasets": ("mnist",), "n": (8, 30), "ks": (1, 2), "measure_max_n": 8},
               ntk={"tasks": ("mnist",), "n": 24, "n_test": 8, "widths": (8, 32), "seeds": 1, "epochs": 1},
               flip={"tasks_10class": ("mnist",), "tasks_binary": (), "attacks": ("fgsm", "noise"), "n": 30,
                     "n_test": 6, "width": 16, "epochs": 1, "seeds": 1, "adv_training": False, "null_eps": None,
                     "eps_sweep": (0.1, 0.3), "eps_sweep_attacks": ("noise",)}),
}
PUBLIC_SCALES = ("quick", "default", "paper")
_PARTS = ("theory", "widths", "ntk", "flip", "k_layer")
# flat field names of earlier versions -> part.field
_LEGACY = {"theory_profile": "theory.profile", "theory_claims": "theory.claims", "kappa_tasks": "widths.tasks",
           "kappa_n": "widths.n", "width_eps": "widths.eps", "ntk_protocol": "ntk.protocols",
           "flip_tasks_10class": "flip.tasks_10class", "flip_tasks_binary": "flip.tasks_binary",
           "flip_adv_training": "flip.adv_training"}


def scale_help() -> dict[str, dict[str, str]]:
    """Each field of a Scale (``part.field`` for sub-configs) with its help text and type."""
    out = {}
    for f in dataclasses.fields(Scale):
        if f.name in _PARTS:
            for sub in dataclasses.fields(type(getattr(_BASE, f.name))):
                out[f"{f.name}.{sub.name}"] = {"help": sub.metadata.get("help", ""), "type": str(sub.type)}
        else:
            out[f.name] = {"help": f.metadata.get("help", ""), "type": str(f.type)}
    return out


_NULLABLE = ("null_eps", "claims", "flip.dtype", "adv_training_tasks", "limitation_tasks", "adv_train_ramp_epochs")  # fields that may be None


def _coerce(value: str, current: Any, name: str) -> Any:
    try:
        if isinstance(current, bool):
            low = value.strip().lower()
            require(low in ("1", "0", "true", "false", "yes", "no"), f"--override {name}: expected true/false, got {value!r}")
            return low in ("1", "true", "yes")
        if value.strip().lower() in ("none", "null") and (current is None or name.endswith(_NULLABLE)):
            return None
        if name.endswith("dtype"):
            return value.strip()
        if isinstance(current, int) or name.endswith("adv_train_ramp_epochs"):
            return int(value)
        if isinstance(current, float) or name.endswith("null_eps"):
            return float(value)
        if isinstance(current, tuple) or current is None:
            # an empty value is an empty tuple (e.g. no tasks); a blank entry inside a list is a typo
            items = split_entries(value, f"--override {name}") if value.strip() else []
            if name.endswith(("eps_sweep",)):
                values = [float(v) for v in items]
            elif name.endswith("truncation_ranks"):
                values = [None if v.lower() in ("none", "full") else int(v) for v in items]
            elif name.endswith((".n", ".widths", ".ks")):
                values = [int(v) for v in items]
            else:
                values = items
            # a repeated width, model or task would run the same cells twice and count them twice
            return tuple(refuse_repeats(values, f"--override {name}", value))
        return value
    except MalleabilityError:
        raise
    except ValueError:
        raise MalleabilityError(f"--override {name}={value}: cannot parse as {type(current).__name__}") from None


def _resolve_name(key: str) -> tuple[str | None, str]:
    key = key.strip().replace("-", "_")
    if key in _LEGACY:
        key = _LEGACY[key]
    if "." in key:
        part, sub = key.split(".", 1)
        return part, sub
    for part in ("ntk", "flip"):
        if key.startswith(part + "_"):
            return part, key[len(part) + 1:]
    return None, key


def get_scale(name: str, overrides: tuple[str, ...] | list[str] = ()) -> Scale:
    """The named scale with ``part.field=value`` overrides applied and validated."""
    require(name in SCALES, f"unknown scale {name!r}: choose one of {', '.join(PUBLIC_SCALES)}")
    scale = SCALES[name]
    for item in overrides:
        require("=" in item, f"--override expects field=value, got {item!r}")
        key, value = item.split("=", 1)
        part, sub = _resolve_name(key)
        if part is None:
            top = {f.name for f in dataclasses.fields(Scale)} - set(_PARTS) - {"name"}
            require(sub in top, f"--override: unknown scale field {key!r}")
            scale = dataclasses.replace(scale, **{sub: _coerce(value, getattr(scale, sub), sub)})
        else:
            require(part in _PARTS, f"--override: unknown scale part {part!r}")
            cfg = getattr(scale, part)
            require(sub in {f.name for f in dataclasses.fields(cfg)}, f"--override: unknown scale field {key!r}")
            new = dataclasses.replace(cfg, **{sub: _coerce(value, getattr(cfg, sub), f"{part}.{sub}")})
            scale = dataclasses.replace(scale, **{part: new})
    validate_scale(scale)
    return scale


def scale_shape_problem(record) -> str | None:
    """Where a results.json ``scale`` record lacks the shape of a :class:`Scale` (every field, each part an
    object of its fields), else None. Only the shape: a scale of the user's own, under any name, is read."""
    if not isinstance(record, dict):
        return "scale is not an object"
    name = record.get("name")
    if not isinstance(name, str) or not name.strip():
        return f"scale.name is {name!r}, not a name"
    for f in dataclasses.fields(Scale):
        if f.name not in record:
            return f"scale has no {f.name!r} field"
        if f.name in _PARTS:
            part = record[f.name]
            if not isinstance(part, dict):
                return f"scale.{f.name} is not an object"
            for sub in dataclasses.fields(type(getattr(SCALES["tiny"], f.name))):  # the part's dataclass
                if sub.name not in part:
                    return f"scale.{f.name} has no {sub.name!r} field"
    return None


def validate_scale(scale: Scale) -> None:
    from malleability.empirics.attacks import ATTACKS
    from malleability.empirics.models import MODELS, get_model
    from malleability.empirics.models.mlp_attn import ATTENTION_INPUTS
    from malleability.theory import CLAIM_IDS

    for claim in scale.theory.claims or ():
        require(claim in CLAIM_IDS, f"unknown claim id {claim!r}: choose from {', '.join(CLAIM_IDS)}")
    f, k, w = scale.flip, scale.ntk, scale.widths
    for task in (*w.tasks, *k.tasks, *f.tasks_10class, *f.tasks_binary, *f.eps_sweep_tasks, *(f.adv_training_tasks or ())):
        require(task in TASKS, f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    for model in (*scale.models, scale.baseline):
        require(model in MODELS, f"unknown model {model!r}: choose from {', '.join(MODELS)}")
    for reading in scale.attention_inputs:
        require(reading in ATTENTION_INPUTS, f"unknown attention input {reading!r}: choose from {', '.join(ATTENTION_INPUTS)}")
    require(scale.attention_inputs, "attention_inputs must not be empty")
    for task in scale.limitation_tasks or ():
        require(task in TASKS, f"unknown task {task!r} in limitation_tasks: choose from {', '.join(TASKS)}")
    for model in scale.limitation_models:
        require(model in MODELS, f"unknown model {model!r} in limitation_models: choose from {', '.join(MODELS)}")
        get_model(model)
    if "truncated-attn" in scale.limitation_models:
        for rank in scale.truncation_ranks:
            get_model("truncated-attn", {"rank": rank})
    for attack in (*f.attacks, *f.eps_sweep_attacks):
        require(attack in ATTACKS, f"unknown attack {attack!r}: choose from {', '.join(ATTACKS)}")
    for name, value in (("ntk.n", k.n), ("ntk.seeds", k.seeds), ("ntk.epochs", k.epochs), ("flip.n", f.n),
                        ("flip.width", f.width), ("flip.epochs", f.epochs), ("flip.seeds", f.seeds),
                        ("flip.adv_train_steps", f.adv_train_steps)):
        require(value >= 1, f"{name} must be >= 1, got {value}")
    for name, value in (("ntk.seeds", k.seeds), ("flip.seeds", f.seeds)):
        require(value <= MAX_SEED_COUNT, f"{name} must be at most {MAX_SEED_COUNT}, got {value}")
    require(all(m >= 1 for m in k.widths), "widths must be >= 1")
    # as the cells themselves require, checked here so that a bad override fails before any cell runs:
    # leave-one-out influence needs two training points, and the accuracy gate and test loss a test point
    require(f.n >= 2, f"flip.n must be >= 2 (leave-one-out influence needs two training points), got {f.n}")
    for name, value in (("ntk.n_test", k.n_test), ("flip.n_test", f.n_test)):
        require(value >= 1, f"{name} must be >= 1 (the accuracy gate needs a test point), got {value}")
    require(all(n >= 2 for n in w.n), "widths.n values must be >= 2")
    for eps in (f.eps, *f.eps_sweep):
        require(math.isfinite(eps) and eps >= 0, f"flip ε must be finite and >= 0, got {eps}")
    require(len(set(f.eps_sweep)) == len(f.eps_sweep), f"repeated ε in flip.eps_sweep {f.eps_sweep}")
    from malleability.empirics.experiments.flip_rate.config import ADV_TRAIN_SCHEDULES

    require(f.adv_train_schedules, "flip.adv_train_schedules must not be empty")
    for schedule in f.adv_train_schedules:
        require(schedule in ADV_TRAIN_SCHEDULES,
                f"unknown flip.adv_train_schedules entry {schedule!r}: choose from {', '.join(ADV_TRAIN_SCHEDULES)}")
    require(len(set(f.adv_train_schedules)) == len(f.adv_train_schedules), "repeated flip.adv_train_schedules entry")
    require(f.adv_train_ramp_epochs is None or f.adv_train_ramp_epochs >= 1, "flip.adv_train_ramp_epochs must be >= 1 or none")
    require(f.adv_train_ramp_epochs is None or (f.adv_training and "ramp" in f.adv_train_schedules),
            "flip.adv_train_ramp_epochs applies to the ramp schedule of Table 4: set flip.adv_training and include "
            "ramp in flip.adv_train_schedules, or leave it none")
    require(f.null_eps is None or (math.isfinite(f.null_eps) and f.null_eps > 0), "flip.null_eps must be > 0 or none")
    require(math.isfinite(w.eps) and w.eps > 0, f"widths.eps must be > 0, got {w.eps}")
    require(scale.theory.profile in ("quick", "thorough"), f"theory.profile must be quick or thorough, got {scale.theory.profile!r}")
    for protocol in (*k.protocols, *f.protocols):
        require(protocol in ("paper", "lazy"), f"protocol must be paper or lazy, got {protocol!r}")
    require(k.protocols and f.protocols, "protocols must not be empty")
    kl = scale.k_layer
    for dataset in kl.datasets:
        require(dataset in ("mnist", "cifar10", "fashion-mnist"), f"unknown k_layer data set {dataset!r}: choose from "
                "mnist, cifar10, fashion-mnist")
    require(all(n >= 2 for n in kl.n), "k_layer.n values must be >= 2")
    require(kl.ks and all(k >= 1 for k in kl.ks), "k_layer.ks must be integers >= 1")
    require(kl.measure_max_n >= 0, f"k_layer.measure_max_n must be >= 0, got {kl.measure_max_n}")
    require(scale.dtype in ("float32", "float64"), f"dtype must be float32 or float64, got {scale.dtype!r}")
    require(scale.flip.dtype in (None, "float32", "float64"),
            f"flip.dtype must be float32, float64 or none, got {scale.flip.dtype!r}")
