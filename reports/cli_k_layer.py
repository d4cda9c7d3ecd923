"""CLI ``k-layer``: a thin client of :mod:`malleability.empirics.experiments.k_layer`.

    malleability k-layer [--datasets mnist,cifar10] [--n 50,100,200] [--codes iic,ccc,...] [--ks 1,2,3,4]
        [--measure-max-n 50] [--dps-margin 30] [--seed 0] [--data-root DIR] [--json]
        [--workers N] [--cache-dir DIR] [--fresh]

Per data set and n, the unit rows of a seeded subset feed k stacked linearised-attention
layers under each recursion code; the exponent p with κ(Gram_k) = κ(G)^p is compared with the
laws 2k+1 (the paper), 2^(k+1)−1 and 3^k. JSON: ``{"config", "rows", "summary", "provenance"}``,
the rows and summary exactly as the audit's k-layer cells give them.
"""

from __future__ import annotations

import dataclasses

import click

from malleability.errors import MalleabilityError, require
from malleability.reports.cli_common import (
    MAX_SEED,
    cell_run_flags,
    dump,
    fmt,
    parse_list,
    refuse_npz_seed,
    refuse_repeats,
    run_cells_of,
)


def parse_ints(spec, flag: str, *, minimum: int, maximum: int | None = None) -> tuple[int, ...]:
    """'50,100' -> (50, 100): integers in ``minimum..maximum``, each once, order kept."""
    values = []
    for p in parse_list(spec, flag):
        try:
            values.append(int(p))
        except ValueError:
            raise MalleabilityError(f"{flag} must be a comma list of integers, got {p!r}") from None
    require(all(v >= minimum for v in values), f"{flag} values must be >= {minimum}, got {spec}")
    require(maximum is None or all(v <= maximum for v in values), f"{flag} values must be <= {maximum}, got {spec}")
    return tuple(refuse_repeats(values, flag, spec))  # '50,050' names one size twice


def parse_codes(spec) -> tuple[str, ...]:
    """'all' -> every plain recursion code; else a comma list of codes, each checked."""
    from malleability.theory import layers

    if str(spec).strip().lower() == "all":
        return layers.CODES
    codes = tuple(parse_list(spec, "--codes"))
    for code in codes:
        layers.parse_recursion(code)
    return codes


def check_data(cfg) -> None:
    """Load every data set at the largest n before any work: a missing folder or too few rows fail at once."""
    from malleability.empirics.data import DataConfig, load_dataset

    for dataset in cfg.datasets:
        load_dataset(DataConfig(dataset=dataset, n=max(cfg.n), n_test=0, seed=cfg.seed, data_root=cfg.data_root))


def _span(cell: dict) -> str:
    if cell["min"] is None:
        return "-"
    lo, hi = fmt(cell["min"]), fmt(cell["max"])
    return lo if lo == hi else f"{lo}-{hi}"


def _exact(value) -> str:
    if value is None:
        return "-"
    return str(value) if value < 10 ** 7 else fmt(float(value))  # 3^60 does not fit the column


def print_summary(cfg, summary: dict) -> None:
    click.echo(f"k stacked linearised-attention layers on {','.join(cfg.datasets)}, n={','.join(map(str, cfg.n))}: "
               f"p with kappa(Gram_k) = kappa(G)^p (mpmath-measured for n <= {cfg.measure_max_n}, else the Gram "
               f"polynomial); a law fits within {summary['tolerance']:g} (relative)")
    click.echo(f"{'code':<9}{'k':>3}{'exponent':>18}{'exact':>10}  laws that fit")
    for c in summary["cells"]:
        click.echo(f"{c['code']:<9}{c['k']:>3}{_span(c):>18}{_exact(c['exact_exponent']):>10}  "
                   f"{', '.join(c['fits']) or 'none'}")
    for code, laws in summary["follows"].items():
        click.echo(f"{code} follows {' and '.join(laws) or 'no law of the three'}")
    skipped = summary.get("over_digit_cap") or {}
    if skipped:
        which = "; ".join(f"{code} k={','.join(map(str, ks))}" for code, ks in skipped.items())
        click.echo(f"not measured (a Gram needs more than {summary['max_measure_digits']} mpmath digits), so the "
                   f"exponent is the Gram polynomial's: {which}")


def register(main: click.Group, bench: click.Group) -> None:
    """Add this module's command to the root group."""

    @main.command("k-layer")
    @click.option("--datasets", default="mnist,cifar10", show_default=True,
                  help="comma list: mnist | fashion-mnist | cifar10 | PATH.npz")
    @click.option("--n", "n", default="50,100,200", show_default=True,
                  help="training-set sizes (comma list, each >= 2)")
    @click.option("--codes", default="all", show_default=True,
                  help="recursion codes: Q, K, V each i (the input) or c (the current layer), e.g. iic,ccc; "
                       "'+res' adds a residual; all: the 8 plain codes")
    @click.option("--ks", default="1,2,3,4", show_default=True, help="numbers of layers k (comma list, each 1..60)")
    @click.option("--measure-max-n", default=50, type=int, show_default=True,
                  help="largest n whose Gram the mpmath recursion computes (about a minute at n = 50); larger n: "
                       "the Gram polynomial from X's singular values")
    @click.option("--dps-margin", default=30, type=int, show_default=True,
                  help="mpmath digits beyond log10 kappa of the measurement (10..200: more only slows the "
                       "recursion, which is already exact to far beyond float64)")
    @click.option("--seed", default=0, type=int, show_default=True, help="seed of the subset draw")
    @click.option("--data-root", default=None, help="data folder (default $MALLEABILITY_DATA, then the user cache)")
    @click.option("--json", "as_json", is_flag=True, help="print the JSON document instead of the table")
    @cell_run_flags
    def k_layer_cmd(datasets, n, codes, ks, measure_max_n, dps_margin, seed, data_root, as_json, **run_flags):
        """kappa of k stacked linearised-attention layers on real rows: which law the exponent follows."""
        from malleability.empirics.experiments import k_layer as experiment
        from malleability.provenance import provenance
        from malleability.theory import layers

        require(measure_max_n >= 0, f"--measure-max-n must be >= 0, got {measure_max_n}")
        require(10 <= dps_margin <= experiment.MAX_DPS_MARGIN,
                f"--dps-margin must be in 10..{experiment.MAX_DPS_MARGIN}, got {dps_margin}")
        require(0 <= seed <= MAX_SEED, f"--seed must be in 0..{MAX_SEED}, got {seed}")
        for dataset in parse_list(datasets, "--datasets"):
            refuse_npz_seed(dataset, seed, "--seed")
        cfg = experiment.KLayerConfig(datasets=tuple(parse_list(datasets, "--datasets")),
                                      n=parse_ints(n, "--n", minimum=2), codes=parse_codes(codes),
                                      ks=parse_ints(ks, "--ks", minimum=1, maximum=layers.MAX_LAYERS),
                                      seed=seed, data_root=data_root,
                                      measure_max_n=measure_max_n, dps_margin=dps_margin)
        check_data(cfg)
        # one audit cell per (data set, n), as the audit plans them: cached, resumable, shared with the audit
        cells = [dataclasses.replace(cfg, datasets=(dataset,), n=(size,)) for dataset in cfg.datasets for size in cfg.n]
        labels = [f"k-layer {c.datasets[0]} n={c.n[0]} "
                  f"({'mpmath recursion' if c.n[0] <= cfg.measure_max_n else 'Gram polynomial'})" for c in cells]
        rows = [row for result in run_cells_of("k-layer", cells, labels, run_flags, "cpu") for row in result["rows"]]
        summary = experiment.summarise(rows)
        if as_json:
            click.echo(dump({"config": cfg.to_dict(), "rows": rows, "summary": summary, "provenance": provenance()}))
            return
        print_summary(cfg, summary)
