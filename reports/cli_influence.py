"""CLI commands for the influence part (registered into the root group by reports.cli).

    malleability flip-rate --dataset D --n N --attack fgsm|pgd|mim|noise[,...] --eps E[,...] --seeds S
        [--intervention transformed|curated|adversarial] [--adv-train] [--ablation]
        [--classes A,B] [--epochs E] [--n-test T] [--width M] [--tau T] [--lam L]
        [--space pixel|feature] [--recompute retrain|kernel] [--models mlp-attn,relu]
        [--data-root DIR] [--device auto|cpu|cuda] [--dtype float32|float64] [--json]
    malleability bench influence --n N [--n-test T] [--outputs K] [--json]

``--seeds S``: a count (seeds 0..S-1) or a comma list (``0,3,7``); seed s seeds the data
subset, the initialisation, the batch order and the attacks. ``--attack`` takes one name or a
comma list (``pgd,noise``); ``noise`` is the control (random signs of the same budget, no model):
with it beside an attack, each summary cell of that attack carries ``excess_over_noise`` (mean flip
rate of the attack minus that of noise; see summarise_flip_rates). ``--eps`` takes one budget or a comma list
(``0.1,0.2,0.3,0.5``, the paper's sweep); every row carries its ``eps`` and the summary groups by it (cells,
ratios and the noise excess are per ε). JSON of ``flip-rate``:
``{"rows": [...one row per attack x model x seed, see run_flip_rate_cell...], "summary": ...}``.
Bad input raises MalleabilityError (exit 2, one line, from the root group). Progress on stderr.
"""

from __future__ import annotations

import itertools
import json

import click

from malleability.errors import MalleabilityError, require

# Default CPU-scaled size: the full table for one data set (3 attacks x 2 models x 3 seeds)
# took about 1 minute at 50 epochs and about 4-5 minutes at 200 epochs on one busy core;
# adversarial training costs ~(adv_train_steps + 1)x the training time (about 75 s per cell at
# 50 epochs): lower --epochs / --adv-train-steps for the ablation on a CPU. Pass the paper's
# scale (e.g. --epochs 500 --width 1024) on a GPU.
DEFAULT_N = 1000
DEFAULT_N_TEST = 200
DEFAULT_WIDTH = 256
DEFAULT_EPOCHS = 200


def _dump(obj) -> str:
    return json.dumps(obj, indent=2, default=str, allow_nan=False)


def parse_seeds(spec: str) -> list[int]:
    """'3' -> [0, 1, 2]; '0,4,7' -> [0, 4, 7]."""
    text = str(spec).strip()
    try:
        if "," in text:
            seeds = [int(p) for p in text.split(",") if p.strip()]
        else:
            count = int(text)
            require(count >= 1, f"--seeds must be >= 1, got {count}")
            seeds = list(range(count))
    except ValueError:
        raise MalleabilityError(f"--seeds must be a count or a comma list of integers, got {spec!r}") from None
    require(seeds and all(s >= 0 for s in seeds), f"seeds must be >= 0, got {spec!r}")
    require(len(set(seeds)) == len(seeds), f"repeated seed in {spec!r}")
    return seeds


def parse_attacks(spec: str) -> list[str]:
    """'pgd' -> ['pgd']; 'pgd,noise' -> ['pgd', 'noise'] (order kept, repeats dropped)."""
    from malleability.empirics.attacks import ATTACK_NAMES

    attacks = [a.strip().lower() for a in str(spec).split(",") if a.strip()]
    require(attacks, "--attack is empty")
    for a in attacks:
        require(a in ATTACK_NAMES, f"unknown attack {a!r}: choose one of {', '.join(ATTACK_NAMES)}")
    return list(dict.fromkeys(attacks))


def parse_eps(spec) -> list[float]:
    """'0.3' -> [0.3]; '0.1,0.2,0.3,0.5' -> [0.1, 0.2, 0.3, 0.5] (order kept, repeats dropped); each finite, >= 0."""
    import math

    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    require(parts, f"--eps is empty: give a budget or a comma list (0.1,0.2,0.3,0.5), got {spec!r}")
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise MalleabilityError(f"--eps must be a number or a comma list of numbers, got {p!r} in {spec!r}") from None
        require(math.isfinite(v) and v >= 0, f"--eps values must be finite and >= 0, got {p!r}")
        values.append(v)
    return list(dict.fromkeys(values))


def parse_models(spec: str) -> list[str]:
    from malleability.empirics.models import MODEL_KINDS

    models = [m.strip() for m in str(spec).split(",") if m.strip()]
    require(models, "--models is empty")
    for m in models:
        require(m in MODEL_KINDS, f"unknown model {m!r}: choose from {', '.join(MODEL_KINDS)}")
    return list(dict.fromkeys(models))


def _fmt(v, pct=False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def register(main: click.Group, bench: click.Group) -> None:
    """Add this module's commands to the root group and the `bench` group."""

    @main.command("flip-rate")
    @click.option("--dataset", required=True, help="mnist | fashion-mnist | cifar10 | path to an .npz")
    @click.option("--n", "n", type=int, default=DEFAULT_N, show_default=True, help="training samples")
    @click.option("--n-test", type=int, default=DEFAULT_N_TEST, show_default=True, help="test samples")
    @click.option("--attack", required=True,
                  help="fgsm | pgd | mim | noise (control: random signs, same budget), or a comma list (pgd,noise)")
    @click.option("--eps", default="0.3", show_default=True,
                  help="l-infinity budget (finite, >= 0), or a comma list for a sweep (0.1,0.2,0.3,0.5)")
    @click.option("--seeds", default="3", show_default=True, help="count (0..S-1) or comma list of seeds")
    @click.option("--intervention", default="transformed", show_default=True, help="transformed | curated | adversarial")
    @click.option("--adv-train", is_flag=True, help="PGD adversarial training (instead of standard training)")
    @click.option("--ablation", is_flag=True, help="run both standard and adversarial training (the ablation)")
    @click.option("--classes", default=None, help="e.g. 3,8 or automobile,airplane (default: all)")
    @click.option("--epochs", type=int, default=DEFAULT_EPOCHS, show_default=True, help="training epochs (paper: 500)")
    @click.option("--width", type=int, default=DEFAULT_WIDTH, show_default=True, help="hidden width m")
    @click.option("--tau", type=float, default=0.1, show_default=True, help="top fraction, in (0, 1]")
    @click.option("--lam", type=float, default=1e-3, show_default=True, help="KRR ridge")
    @click.option("--space", default="pixel", show_default=True, help="pixel | feature: where eps applies")
    @click.option("--recompute", default="retrain", show_default=True, help="retrain | kernel")
    @click.option("--ntk-at", default="trained", show_default=True, help="trained | init")
    @click.option("--attention-c", default="recompute", show_default=True, help="recompute | fixed (MLP-Attn C after the intervention)")
    @click.option("--pgd-steps", type=int, default=40, show_default=True, help="PGD iterations of the attack")
    @click.option("--adv-train-steps", type=int, default=10, show_default=True, help="PGD iterations per batch in adversarial training")
    @click.option("--models", default="mlp-attn,relu", show_default=True, help="comma list of mlp-attn, relu")
    @click.option("--data-root", default=None, help="data folder (default $MALLEABILITY_DATA, then the user cache)")
    @click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
    @click.option("--dtype", default="float32", show_default=True, help="training dtype: float32 | float64")
    @click.option("--json", "as_json", is_flag=True, help="print the JSON document instead of the table")
    def flip_rate(dataset, n, n_test, attack, eps, seeds, intervention, adv_train, ablation, classes, epochs, width,
                  tau, lam, space, recompute, ntk_at, attention_c, pgd_steps, adv_train_steps, models, data_root, device, dtype, as_json):
        """Influence flip rate, Spearman rho and top-k overlap under an adversarial intervention."""
        from malleability.empirics.data import DataConfig, parse_classes
        from malleability.empirics.malleability import FlipRateConfig, run_flip_rate_cell, summarise_flip_rates
        from malleability.empirics.training import TrainConfig, resolve_device
        from malleability.provenance import provenance

        seed_list = parse_seeds(seeds)
        attack_list = parse_attacks(attack)
        eps_list = parse_eps(eps)
        model_list = parse_models(models)
        class_tuple = parse_classes(classes, dataset)
        require(epochs >= 0, f"--epochs must be >= 0, got {epochs}")
        dev = resolve_device(device)
        adv_modes = [False, True] if ablation else [bool(adv_train)]
        configs = []
        for adv, e, atk, s, model in itertools.product(adv_modes, eps_list, attack_list, seed_list, model_list):
            configs.append(FlipRateConfig(
                data=DataConfig(dataset=dataset, n=n, n_test=n_test, classes=class_tuple, seed=s,
                                data_root=data_root),
                train=TrainConfig(epochs=epochs, seed=s, device=dev, dtype=dtype),
                model=model, attack=atk, eps=e, intervention=intervention, tau=tau,
                adv_train=adv, recompute=recompute, space=space, lam=lam, width=width, ntk_at=ntk_at,
                attention_c=attention_c, pgd_steps=pgd_steps, adv_train_steps=adv_train_steps))
        rows = []
        for i, cfg in enumerate(configs, 1):
            row = run_flip_rate_cell(cfg)
            rows.append(row)
            rho = "-" if row["spearman"] is None else f"{row['spearman']:.3f}"
            click.echo(f"[{i}/{len(configs)}] {cfg.attack} eps={cfg.eps:g} {cfg.model} seed={cfg.train.seed}"
                       f"{' adv-train' if cfg.adv_train else ''}: flip_rate={row['flip_rate']:.3f} "
                       f"spearman={rho} topk={row['topk_overlap']:.3f} ({row['timing_s']['total']:.1f} s)", err=True)
        summary = summarise_flip_rates(rows)
        if as_json:
            click.echo(_dump({"rows": rows, "summary": summary, "provenance": provenance(dev)}))
            return
        click.echo(f"{dataset} {','.join(attack_list)} eps={','.join(f'{e:g}' for e in eps_list)} "
                   f"intervention={intervention} space={space} recompute={recompute}")
        click.echo(f"{'attack':<7}{'eps':>6} {'model':<10}{'adv':<5}{'seeds':>6}{'flip rate':>12}{'95% CI':>20}"
                   f"{'spearman':>10}{'top-k':>8}{'- noise':>10}")
        for c in summary["cells"]:
            ci = c["flip_rate"]["ci95"]
            ci_txt = "-" if ci is None else f"[{_fmt(ci[0], True)}, {_fmt(ci[1], True)}]"
            ex = c.get("excess_over_noise")
            ex_txt = "-" if ex is None else f"{100 * ex['excess']:+.1f} pt"
            click.echo(f"{c['attack']:<7}{float(c['eps']):>6g} {c['model']:<10}{'yes' if c['adv_train'] else 'no':<5}"
                       f"{c['flip_rate']['n']:>6}"
                       f"{_fmt(c['flip_rate']['mean'], True):>12}{ci_txt:>20}{_fmt(c['spearman']['mean']):>10}"
                       f"{_fmt(c['topk_overlap']['mean']):>8}{ex_txt:>10}")
        for r in summary["ratios"]:
            ci = r["ci95"]
            ci_txt = "" if ci is None else f" 95% CI [{ci[0]:.2f}, {ci[1]:.2f}]"
            ratio = "undefined" if r["ratio"] is None else f"{r['ratio']:.2f}"
            reason = f" ({r['reason']})" if r["reason"] else ""
            click.echo(f"MLP-Attn / ReLU {r['attack']} eps={float(r['eps']):g}{' (adv-train)' if r['adv_train'] else ''}: "
                       f"{ratio}{ci_txt}{reason}")

