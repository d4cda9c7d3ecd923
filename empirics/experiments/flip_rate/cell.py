"""Influence malleability: how much NTK influence rankings move under adversarial interventions.

One *cell* (:func:`run_flip_rate_cell`) = one model x one seed x one attack x one eps x one
intervention, a pure function of its frozen :class:`FlipRateConfig` (same config -> the same
numbers on the CPU). Steps:

1. Load the data (:func:`load_dataset`) and train the model (:func:`train_model`;
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
   A transductive model (MLP-Attn) refits its state on the *perturbed* training set (its C =
   XᵀX), so every training and test embedding moves (``attention_c='recompute'``, default);
   ``attention_c='fixed'`` keeps the clean state (the attack then acts only through the rows).
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
(None -> the cell's eps), same space, on the schedule ``adv_train_schedule``: ``constant`` (the
full budget from the first step) or ``ramp`` (a linear warm-up over the first
``adv_train_ramp_epochs``, default a fifth of the epochs: the full budget from the first step
stalls some networks at chance, with every logit at 0 and the loss at ln K).

Control: ``attack='noise'`` (not in the paper) replaces the same rows by random-sign noise of the
same budget (each coordinate +-eps, then the same clipping; seeded by the train seed; the model
is never consulted). With ``recompute='retrain'`` any change of the data moves influences, so the
noise flip rate is the floor an attack must clear; the summary reports each attack's
``excess_over_noise`` (mean flip rate of the attack minus that of noise, same group).

Numerical floor (``null_eps``): the same flip set perturbed by random signs of size
``null_eps`` (e.g. 1e-6), then the same retrain; its flip rate is what rounding alone moves.

Model quality: every row carries ``accuracy`` (train, test, the kernel-regression surrogate's
test accuracy ``krr_test``, ``chance`` = the majority-class share of the test set, and
``learned``: a one-sided binomial test at the 1% level that test accuracy exceeds chance).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from malleability.empirics.attacks import make_attack
from malleability.empirics.data import load_dataset
from malleability.empirics.experiments.flip_rate.config import FlipRateConfig, adv_train_budget
from malleability.empirics.experiments.flip_rate.metrics import (
    flip_rate,
    flip_set_edge,
    network_influence,
    spearman,
    top_tau_indices,
    topk_overlap,
)
from malleability.empirics.experiments.quality import model_quality, pattern_flip_share, weight_change
from malleability.empirics.influence import MULTI_OUTPUT_READING, SIGN_CONVENTION, TEST_LOSS
from malleability.empirics.models import get_model, unit
from malleability.empirics.training import TrainConfig, TrainedModel, resolve_device, train_model
from malleability.errors import MalleabilityError, require




def build_attack(cfg: FlipRateConfig, *, eps: float | None = None, name: str | None = None, options: dict | None = None,
                 loss_fn=None, seed: int | None = None):
    """The cell's attack (or ``name`` with ``options``), in the cell's space, seeded by the train seed."""
    name = name or cfg.attack
    kwargs = {"space": cfg.space, "loss_fn": loss_fn, "seed": int(cfg.train.seed if seed is None else seed)}
    if cfg.space == "feature":
        kwargs["renormalize"] = bool(cfg.feature_renormalize)
    kwargs.update(cfg.attack_options if options is None else options)
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
    """``batch_transform`` for ``train_model``: PGD adversarial training (Madry et al. 2018).

    ``train_model`` hands over unit rows; in pixel space we recover each row's image as the
    training row with the largest cosine (the row itself; identical directions are identical
    images up to scale), attack the image, and return its unit row. Each step uses a fresh,
    deterministic random start (seed = train seed * 1_000_003 + step). The budget follows
    ``cfg.adv_train_schedule`` (:func:`adv_train_budget`), by the epoch the step falls in.
    """
    state = {"step": 0}
    eps = cfg.eps if cfg.adv_train_eps is None else cfg.adv_train_eps
    n = int(x_train_unit.shape[0])
    bs = cfg.train.resolved()["batch_size"]
    steps_per_epoch = max(1, math.ceil(n / min(int(bs), n))) if bs is not None else 1
    ramp = cfg.ramp_epochs()

    def transform(model: TrainedModel, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        epoch = state["step"] // steps_per_epoch
        state["step"] += 1
        budget = adv_train_budget(eps, epoch, cfg.adv_train_schedule, ramp)
        attack = build_attack(cfg, eps=budget, name="pgd", options={"steps": int(cfg.adv_train_steps)},
                              loss_fn=model.loss_fn(), seed=int(cfg.train.seed) * 1_000_003 + state["step"])
        if cfg.space == "pixel":
            idx = (xb.to(x_train_unit.dtype) @ x_train_unit.T).argmax(dim=1)
            adv = attack(_model_fn(model, "pixel"), pixels_train[idx], yb)
            return (adv / adv.norm(dim=1, keepdim=True).clamp_min(1e-12)).to(xb.dtype)
        return attack(_model_fn(model, "feature"), xb, yb).to(xb.dtype)

    return transform



def _train(cfg: FlipRateConfig, train_cfg: TrainConfig, x_unit: torch.Tensor, pixels: torch.Tensor, y: torch.Tensor,
           num_classes: int, state):
    transform = adversarial_batch_transform(cfg, pixels, x_unit) if cfg.adv_train else None
    return train_model(get_model(cfg.model, cfg.model_options), x_unit, y, num_classes, train_cfg, state=state,
                       batch_transform=transform, width=int(cfg.width))


def _perturbed(cfg, model0, attack, rows_idx, pixels, x_unit, y):
    """(pixels', unit rows', zero rows) after replacing the rows ``rows_idx`` by the attack's versions."""
    att_t = torch.as_tensor(rows_idx, device=pixels.device)
    source = pixels if cfg.space == "pixel" else x_unit
    adv = attack_rows(model0, attack, source[att_t], y[att_t], cfg.space)
    new_source = source.clone()
    new_source[att_t] = adv
    if cfg.space == "pixel":
        return new_source, unit(new_source), int((new_source.abs().sum(dim=1) == 0).sum())
    return pixels, unit(new_source), 0


def check_pixel_space(pixels: np.ndarray, space: str, dtype: str) -> None:
    """Refuse training pixels a pixel-space attack cannot act on: outside [0, 1] (the attacks clip to it),
    or rows below ``dtype``'s normal range, which cast to (nearly) zero so that the step changes nothing
    and "no flips" would be reported."""
    if space != "pixel":
        return
    require(pixels.min() >= 0 and pixels.max() <= 1,
            "space='pixel' needs pixels in [0, 1]; this data set is not, use --space feature")
    tiny = float(torch.finfo(getattr(torch, dtype)).tiny)
    row_max = np.abs(pixels).max(axis=1)
    low = np.flatnonzero(row_max < tiny)
    if low.size:
        raise MalleabilityError(
            f"space='pixel' in {dtype}: {low.size} training row(s) (first at row {int(low[0])}, max "
            f"pixel {float(row_max[low[0]]):.1e}) underflow {dtype} (smallest normal {tiny:.1e}): "
            "rescale the pixels to [0, 1], or use --dtype float64 or --space feature")


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
    check_pixel_space(ds.pixels_train, cfg.space, train_cfg.dtype)
    feature_model = get_model(cfg.model, cfg.model_options)

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

    def influence(model: TrainedModel, x_rows, labels):
        if cfg.ntk_at == "trained":
            W, state = model.net.W, model.state
        else:  # the kernel at initialisation: W0 with the feature parameters at their initial values too
            W, state = model.W0, {**model.state, **(getattr(model, "params0", None) or {})}
        return network_influence(feature_model, W, state, x_rows, labels, x_test, y_test_np, num_outputs,
                                 cfg.lam, cfg.krr_targets)

    def retrained_state(x_new):
        # a transductive model refits its state on the new rows unless the reading keeps it fixed
        return None if (feature_model.transductive and cfg.attention_c == "recompute") else model0.state

    def after_change(x_new, px_new, y_new):
        """The model and influence after the training data changed (same seed: same init and batches)."""
        if cfg.recompute == "retrain":
            model1 = _train(cfg, train_cfg, x_new.to(dtype), px_new.to(dtype), y_new, ds.num_classes,
                            retrained_state(x_new))
        else:
            state = feature_model.fit(x_new.to(dtype)) if retrained_state(x_new) is None else model0.state
            model1 = dataclasses.replace(model0, state=state)
        return model1, influence(model1, x_new, y_new.cpu().numpy())

    t = time.perf_counter()
    before = influence(model0, x_unit, y_np)
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
        px_new, x_new, zero_rows_after = _perturbed(cfg, model0, attack, attacked, pixels, x_unit, y)
        y_new = y
    timing["attack"] = time.perf_counter() - t

    # ---- recompute influence -----------------------------------------------------------
    t = time.perf_counter()
    model1, after = after_change(x_new, px_new, y_new)
    timing["recompute"] = time.perf_counter() - t

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

    floor = None
    if cfg.null_eps is not None:
        t = time.perf_counter()
        null = make_attack("noise", float(cfg.null_eps), space=cfg.space, seed=int(cfg.train.seed) + 7919)
        rows_idx = top if cfg.intervention != "adversarial" else np.arange(n)
        px_null, x_null, _ = _perturbed(cfg, model0, null, rows_idx, pixels, x_unit, y)
        _, after_null = after_change(x_null, px_null, y)
        floor = {"null_eps": float(cfg.null_eps), "flip_rate": flip_rate(before.total[top], after_null.total[top]),
                 "n_flip_set": int(top.size),
                 "reading": "the flip set moved by random signs of size null_eps, then the same retrain"}
        timing["numerical_floor"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t_start

    z_train = model0.features(x_unit.to(dtype))
    accuracy = model_quality(model0, ds.x_train, y_np, ds.x_test, y_test_np, krr_predictions=before.predictions)
    accuracy_after = model_quality(model1, x_new.cpu().numpy(), y_new.cpu().numpy(), ds.x_test, y_test_np,
                                   krr_predictions=after.predictions)
    # the keys of earlier versions, kept beside the gate's
    accuracy.update(test_before=accuracy["test"], test_after=accuracy_after["test"],
                    train_loss_final_before=accuracy["final_loss"],
                    train_loss_final_after=accuracy_after["final_loss"] if cfg.recompute == "retrain" else None)
    return {
        "model": cfg.model,
        "model_label": feature_model.label,
        "model_options": feature_model.options(),
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
        "numerical_floor": floor,
        "flip_set_edge": flip_set_edge(np.abs(before.total), int(top.size)),
        "influence": {
            "mean_abs_before": float(np.abs(before.total).mean()),
            "mean_abs_after": float(np.abs(after.total).mean()),
            "frac_positive_before": float(np.mean(before.total > 0)),
            "frac_positive_after": float(np.mean(after.total > 0)),
            "krr_test_loss_before": float(before.test_loss.mean()),
            "krr_test_loss_after": float(after.test_loss.mean()),
        },
        "accuracy": accuracy,
        "accuracy_after": accuracy_after,
        "weight_change": weight_change(model0.W0, model0.net.W),
        "pattern_flip_share": pattern_flip_share(z_train, model0.W0, model0.net.W),
        "readings": {
            "recompute": cfg.recompute,
            "space": cfg.space,
            "ntk_at": cfg.ntk_at,
            "attention_c": cfg.attention_c if feature_model.transductive else None,
            "krr_targets": cfg.krr_targets if num_outputs > 1 else "pm1 (binary)",
            "training_loss": model0.loss,
            "protocol": train_cfg.protocol,
            "adv_train_schedule": cfg.adv_train_schedule if cfg.adv_train else None,
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
             "eps": float(cfg.eps if cfg.adv_train_eps is None else cfg.adv_train_eps), "space": cfg.space,
             "schedule": cfg.adv_train_schedule, "ramp_epochs": cfg.ramp_epochs()}
            if cfg.adv_train else None
        ),
        "lam": float(cfg.lam),
        "width": int(cfg.width),
        "dtype": {"training": train_cfg.dtype, "influence": "float64"},
        "train": train_cfg.resolved(),
        "timing_s": {k2: round(v, 4) for k2, v in timing.items()},
        "threads": torch.get_num_threads(),
    }
