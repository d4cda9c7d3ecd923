"""CLI ``flip-rate``: a thin client of :mod:`malleability.empirics.experiments.flip_rate`.

    malleability flip-rate --dataset D --n N --attack fgsm|pgd|mim|noise[,...] --eps E[,...] --seeds S
        [--intervention transformed|curated|adversarial] [--adv-train] [--ablation] [--classes A,B]
        [--adv-train-schedule constant|ramp|constant,ramp] [--adv-train-ramp-epochs R]
        [--epochs E] [--n-test T] [--width M] [--tau T] [--lam L] [--space pixel|feature]
        [--recompute retrain|kernel] [--models mlp-attn,relu] [--baseline relu]
        [--attention-input raw|center|standardize] [--protocol paper|lazy] [--null-eps 1e-6]
        [--<attack>-<option> V ...] [--data-root DIR] [--device auto|cpu|cuda] [--dtype float32|float64] [--json]
        [--workers N] [--cache-dir DIR] [--fresh]

Seeds: seed s draws data subset s, the initialisation, the batch order and the attacks (the
same grid as the audit's, :func:`flip_rate.sweep`). JSON: ``{"rows": [...], "summary": ...,
"provenance": ...}``; every row carries ``accuracy`` with ``train``, ``test``, ``krr_test``,
``chance`` and ``learned``.

Each (attack, eps, model, seed, training) is an audit cell (:mod:`malleability.reports.audit.sweep`):
cached as it finishes, so a rerun of an interrupted command resumes, and ``--workers`` processes
share the cells.
"""

from __future__ import annotations

import click
from click.core import ParameterSource

from malleability.errors import require
from malleability.reports.cli_common import (
    attack_option_flags,
    attack_options,
    cell_run_flags,
    data_config,
    dump,
    fmt,
    interval,
    model_option_flags,
    model_options,
    parse_attacks,
    parse_eps,
    parse_list,
    parse_models,
    parse_seeds,
    run_cells_of,
)

DEFAULT_N = 1000
DEFAULT_N_TEST = 200
DEFAULT_WIDTH = 256
DEFAULT_EPOCHS = 200


def parse_schedules(text: str) -> tuple[str, ...]:
    """``constant``, ``ramp`` or a comma list of them, in a fixed order."""
    from malleability.empirics.experiments.flip_rate.config import ADV_TRAIN_SCHEDULES

    require(str(text).strip(), "--adv-train-schedule is empty: give constant, ramp or constant,ramp")
    names = parse_list(text, "--adv-train-schedule")
    unknown = [t for t in names if t not in ADV_TRAIN_SCHEDULES]
    require(not unknown, f"unknown --adv-train-schedule {', '.join(unknown)}: choose from {', '.join(ADV_TRAIN_SCHEDULES)}")
    return tuple(s for s in ADV_TRAIN_SCHEDULES if s in names)


def _adv_label(adv: bool, schedule: str | None, *, paren: bool = False) -> str:
    if not adv:
        return ""
    text = "adv-train" + (", ramp" if schedule == "ramp" else "")
    return f" ({text})" if paren else f" {text.replace(', ', ' ')}"


def _adv_column(cell: dict) -> str:
    """'no', 'yes' (adversarial training at the full budget) or 'ramp' (with the warm-up)."""
    if not cell["adv_train"]:
        return "no"
    return "ramp" if cell.get("adv_schedule") == "ramp" else "yes"


def register(main: click.Group, bench: click.Group) -> None:
    """Add this module's commands to the root group."""

    @main.command("flip-rate")
    @click.option("--dataset", required=True, help="mnist | fashion-mnist | cifar10 | path to an .npz")
    @click.option("--n", "n", type=int, default=DEFAULT_N, show_default=True, help="training samples")
    @click.option("--n-test", type=int, default=DEFAULT_N_TEST, show_default=True, help="test samples")
    @click.option("--attack", required=True,
                  help="fgsm | pgd | mim | noise (control: random signs, same budget), or a comma list (pgd,noise)")
    @click.option("--eps", default="0.3", show_default=True,
                  help="l-infinity budget (finite, >= 0), or a comma list for a sweep (0.1,0.2,0.3,0.5)")
    @click.option("--seeds", default="3", show_default=True, help="count (0..S-1) or comma list of seeds")
    @click.option("--data-seed", type=int, default=0, show_default=True, help="seed s draws data subset data-seed + s")
    @click.option("--intervention", default="transformed", show_default=True, help="transformed | curated | adversarial")
    @click.option("--adv-train", is_flag=True, help="PGD adversarial training (instead of standard training)")
    @click.option("--ablation", is_flag=True, help="run both standard and adversarial training (the ablation)")
    @click.option("--classes", default=None, help="e.g. 3,8 or automobile,airplane (default: all)")
    @click.option("--epochs", type=int, default=DEFAULT_EPOCHS, show_default=True, help="training epochs (paper: 500)")
    @click.option("--protocol", default="paper", show_default=True, help="paper (Adam) | lazy (full-batch GD, NTK init)")
    @click.option("--width", type=int, default=DEFAULT_WIDTH, show_default=True, help="hidden width m")
    @click.option("--tau", type=float, default=0.1, show_default=True, help="top fraction, in (0, 1]")
    @click.option("--lam", type=float, default=1e-3, show_default=True, help="KRR ridge")
    @click.option("--space", default="pixel", show_default=True, help="pixel | feature: where eps applies")
    @click.option("--recompute", default="retrain", show_default=True, help="retrain | kernel")
    @click.option("--ntk-at", default="trained", show_default=True, help="trained | init")
    @click.option("--attention-c", default="recompute", show_default=True,
                  help="recompute | fixed (a transductive model's fitted state, e.g. MLP-Attn's C, after the intervention)")
    @click.option("--adv-train-steps", type=int, default=10, show_default=True, help="PGD iterations per batch in adversarial training")
    @click.option("--adv-train-schedule", default="constant", show_default=True,
                  help="adversarial-training budget over the epochs: constant | ramp (linear warm-up), or constant,ramp "
                       "for both")
    @click.option("--adv-train-ramp-epochs", type=int, default=None,
                  help="ramp: warm-up length in epochs (default: a fifth of --epochs, at least 1)")
    @click.option("--null-eps", type=float, default=None,
                  help="also measure the numerical floor: flip rate under a null perturbation of this size (e.g. 1e-6)")
    @click.option("--models", default="mlp-attn,relu", show_default=True, help="comma list of registered models")
    @click.option("--baseline", default="relu", show_default=True, help="the model the others' ratios are against")
    @model_option_flags
    @attack_option_flags
    @click.option("--data-root", default=None, help="data folder (default $MALLEABILITY_DATA, then the user cache)")
    @click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
    @click.option("--dtype", default="float32", show_default=True, help="training dtype: float32 | float64")
    @click.option("--json", "as_json", is_flag=True, help="print the JSON document instead of the table")
    @cell_run_flags
    def flip_rate(**kw):
        """Influence flip rate, Spearman rho and top-k overlap under an adversarial intervention."""
        from malleability.empirics.data import load_dataset
        from malleability.empirics.experiments import flip_rate as experiment
        from malleability.empirics.models import check_model
        from malleability.empirics.training import TrainConfig, resolve_device
        from malleability.provenance import provenance

        attacks_opts = attack_options(kw)
        seeds = parse_seeds(kw["seeds"])
        attacks = parse_attacks(kw["attack"])
        for name, opts in attacks_opts.items():  # as for model options: a flag nothing reads is refused, not ignored
            require(name in attacks, f"--{name}-{next(iter(opts)).replace('_', '-')} applies to the {name} attack, "
                                     f"which is not among --attack {','.join(attacks)}")
        eps_list = parse_eps(kw["eps"])
        models = parse_models(kw["models"])
        baseline = check_model(kw["baseline"])
        explicit = click.get_current_context().get_parameter_source("baseline") != ParameterSource.DEFAULT
        require(baseline in models or not explicit,
                f"--baseline {baseline} is not among --models {','.join(models)}: no ratio could be formed")
        require(kw["epochs"] >= 0, f"--epochs must be >= 0, got {kw['epochs']}")
        require(kw["null_eps"] is None or kw["null_eps"] > 0, "--null-eps must be > 0")
        schedules = parse_schedules(kw["adv_train_schedule"])
        require(kw["adv_train"] or kw["ablation"] or schedules == ("constant",),
                "--adv-train-schedule applies to adversarial training: add --adv-train or --ablation")
        require(kw["adv_train_ramp_epochs"] is None or kw["adv_train_ramp_epochs"] >= 1,
                f"--adv-train-ramp-epochs must be >= 1, got {kw['adv_train_ramp_epochs']}")
        # a flag that nothing in this run reads is refused, not ignored: the run would be the same cached cell
        adversarial = kw["adv_train"] or kw["ablation"]
        require(kw["adv_train_ramp_epochs"] is None or (adversarial and "ramp" in schedules),
                "--adv-train-ramp-epochs applies to the ramp schedule of adversarial training: add --adv-train "
                "(or --ablation) and --adv-train-schedule ramp")
        source = click.get_current_context().get_parameter_source
        require(adversarial or source("adv_train_steps") == ParameterSource.DEFAULT,
                "--adv-train-steps applies to adversarial training: add --adv-train or --ablation")
        if kw["attention_c"] != "recompute":
            from malleability.empirics.models import get_model

            require(any(get_model(m).transductive for m in models),
                    f"--attention-c {kw['attention_c']} applies to a transductive model (its fitted state, e.g. "
                    f"MLP-Attn's C); none of --models {','.join(models)} is one")
        dev = resolve_device(kw["device"])
        data = data_config(kw["dataset"], kw["n"], kw["n_test"], kw["classes"], kw["data_seed"], kw["data_root"],
                           min_test=1)
        configs = experiment.sweep(
            data, TrainConfig(protocol=kw["protocol"], epochs=kw["epochs"], device=dev, dtype=kw["dtype"]),
            models=models, attacks=attacks, eps_list=eps_list, seeds=seeds,
            adv_modes=[False, True] if kw["ablation"] else [bool(kw["adv_train"])], adv_schedules=schedules,
            model_options=model_options(models, kw), attack_options=attacks_opts,
            intervention=kw["intervention"], tau=kw["tau"], recompute=kw["recompute"], space=kw["space"],
            lam=kw["lam"], width=kw["width"], ntk_at=kw["ntk_at"], attention_c=kw["attention_c"],
            adv_train_steps=kw["adv_train_steps"], adv_train_ramp_epochs=kw["adv_train_ramp_epochs"],
            null_eps=kw["null_eps"])
        ds = load_dataset(configs[0].data)  # bad data fails before any training
        experiment.check_pixel_space(ds.pixels_train, kw["space"], kw["dtype"])

        def label(cfg) -> str:
            return (f"flip-rate {cfg.data.dataset} {cfg.attack} eps={cfg.eps:g} {cfg.model} seed={cfg.train.seed}"
                    f"{_adv_label(cfg.adv_train, cfg.adv_train_schedule)}")

        def done(cfg, row):
            rho = "-" if row["spearman"] is None else f"{row['spearman']:.3f}"
            click.echo(f"  {experiment.model_key(row)}: flip_rate={row['flip_rate']:.3f} spearman={rho} "
                       f"topk={row['topk_overlap']:.3f} test acc={fmt(row['accuracy']['test'])}", err=True)

        rows = run_cells_of("flip-rate", configs, [label(c) for c in configs], kw, dev, on_done=done)
        summary = experiment.summarise(rows, baseline=baseline)
        if kw["as_json"]:
            click.echo(dump({"rows": rows, "summary": summary, "provenance": provenance(dev)}))
            return
        click.echo(f"{kw['dataset']} {','.join(attacks)} eps={','.join(f'{e:g}' for e in eps_list)} "
                   f"intervention={kw['intervention']} space={kw['space']} recompute={kw['recompute']}")
        click.echo(f"{'attack':<7}{'eps':>6} {'model':<34}{'adv':<5}{'seeds':>6}{'flip rate':>10}{'95% (Wilson)':>18}"
                   f"{'spearman':>10}{'top-k':>8}{'- noise':>10}{'test acc':>10}  learned")
        for c in summary["cells"]:
            ex = c.get("excess_over_noise")
            ex_txt = "-" if ex is None or ex["mean"] is None else f"{100 * ex['mean']:+.1f} pt"
            acc = c["accuracy"]
            click.echo(f"{c['attack']:<7}{float(c['eps']):>6g} {c['model']:<34}{_adv_column(c):<5}"
                       f"{c['flip_rate']['n']:>6}{fmt(c['flip_rate']['mean'], True):>10}"
                       f"{interval(c['flip_rate']['ci95'], True):>18}{fmt(c['spearman']['mean']):>10}"
                       f"{fmt(c['topk_overlap']['mean']):>8}{ex_txt:>10}{fmt(acc['test']['mean']):>10}  "
                       f"{acc['learned_seeds']}/{acc['seeds']}")
        for r in summary["ratios"]:
            ci_txt = "" if r["ci95"] is None else f" 95% (paired bootstrap) {interval(r['ci95'])}"
            ratio = "undefined" if r["ratio"] is None else f"{r['ratio']:.2f}"
            reason = f" ({r['reason']})" if r["reason"] else ""
            click.echo(f"{r['model']} / {r['baseline']} {r['attack']} eps={float(r['eps']):g}"
                       f"{_adv_label(r['adv_train'], r.get('adv_schedule'), paren=True)}: {ratio}{ci_txt}{reason}")
