"""CLI commands for the NTK part: ``ntk-distance``, ``widths``, ``bench ntk``.

Registered into the root group by reports.cli. Heavy imports (torch) happen inside the
commands. Bad input raises MalleabilityError (one line, exit 2).
"""

from __future__ import annotations

import json
import os

import click

from malleability.errors import MalleabilityError, require

_SHORT = {
    "after_vs_init_absolute": "T-0 abs",
    "after_vs_init_relative": "T-0 rel",
    "init_vs_infinite_relative": "0-inf rel",
    "after_vs_infinite_relative": "T-inf rel",
    "function_space_relative": "f rel",
}


def _data_options(f):
    f = click.option("--data-root", default=None, help="data folder (default: $MALLEABILITY_DATA, then the user cache)")(f)
    f = click.option("--classes", default=None, help="e.g. 3,8 or automobile,airplane (CIFAR-10); default all")(f)
    f = click.option("--data-seed", default=0, type=int, show_default=True, help="seed of the subset draw")(f)
    f = click.option("--n-test", default=500, type=int, show_default=True, help="test samples")(f)
    f = click.option("--dataset", required=True, help="mnist | fashion-mnist | cifar10 | PATH.npz")(f)
    return f


def _data_config(dataset, n, n_test, classes, data_seed, data_root):
    from malleability.empirics.data import DataConfig, parse_classes

    require(n >= 1, f"--n must be >= 1, got {n}")
    require(n_test >= 0, f"--n-test must be >= 0, got {n_test}")
    return DataConfig(dataset=dataset, n=n, n_test=n_test, classes=parse_classes(classes, dataset), seed=data_seed,
                      data_root=data_root)


def _parse_models(spec: str) -> tuple[str, ...]:
    from malleability.empirics.models import check_kind

    models = tuple(p.strip() for p in spec.split(",") if p.strip())
    require(models, f"empty --models list {spec!r}")
    for m in models:
        check_kind(m)
    return models


def _parse_ns(spec: str) -> tuple[int, ...]:
    out = []
    for p in str(spec).split(","):
        try:
            out.append(int(p.strip()))
        except ValueError:
            raise MalleabilityError(f"bad --n {spec!r}: {p!r} is not an integer") from None
    require(all(v >= 1 for v in out), f"--n must be >= 1, got {spec}")
    return tuple(out)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def register(main: click.Group, bench: click.Group) -> None:
    """Add this module's commands to the root group and the `bench` group."""

    @main.command("ntk-distance")
    @_data_options
    @click.option("--n", "n", default=1000, type=int, show_default=True, help="training samples")
    @click.option("--widths", default="default", show_default=True, help="comma list of widths; 'default' = 4..4096 (powers of 2)")
    @click.option("--seeds", default=1, type=int, show_default=True, help="training seeds 0..S-1 per width")
    @click.option("--models", default="relu,mlp-attn", show_default=True, help="relu, mlp-attn")
    @click.option("--epochs", default=None, type=int, help="override the protocol's epochs (scaled-down runs)")
    @click.option("--protocol", default="paper", type=click.Choice(["paper", "lazy"]), show_default=True)
    @click.option("--loss", default="auto", type=click.Choice(["auto", "ce", "mse-ovr", "mse"]), show_default=True)
    @click.option("--device", default="cpu", show_default=True, help="auto | cpu | cuda")
    @click.option("--dtype", default="float32", type=click.Choice(["float32", "float64"]), show_default=True)
    @click.option("--kernel-points", default=None, type=int, help="kernels on the first k training rows (default all)")
    @click.option("--function-kernel", default="infinite", type=click.Choice(["infinite", "init"]), show_default=True)
    @click.option("--eps", default=None, type=float, help="also report the measured width where each distance reaches eps")
    @click.option("--json", "as_json", is_flag=True, help="print JSON {rows, slopes, summary, ...}")
    def ntk_distance(dataset, n, n_test, classes, data_seed, data_root, widths, seeds, models, epochs, protocol, loss,
                     device, dtype, kernel_points, function_kernel, eps, as_json):
        """NTK distance vs width for both models (all named distances, slopes of log d vs log m)."""
        from malleability.empirics.ntk_distance import fit_slopes, parse_widths, run_sweep, summarise, sweep_configs
        from malleability.empirics.training import TrainConfig, resolve_device
        from malleability.provenance import provenance

        require(seeds >= 1, f"--seeds must be >= 1, got {seeds}")
        require(eps is None or eps > 0, f"--eps must be > 0, got {eps}")
        data = _data_config(dataset, n, n_test, classes, data_seed, data_root)
        from malleability.empirics.data import load_dataset

        load_dataset(data)  # fail fast on bad data before any training
        train = TrainConfig(protocol=protocol, epochs=epochs, loss=loss, device=resolve_device(device), dtype=dtype)
        configs = sweep_configs(data, train, _parse_models(models), parse_widths(widths), seeds,
                                kernel_points=kernel_points, function_kernel=function_kernel)

        def progress(i, total, cfg):
            click.echo(f"[{i + 1}/{total}] {cfg.model} width={cfg.width} seed={cfg.train.seed}", err=True)

        rows = run_sweep(configs, progress=progress)
        out = {"rows": rows, "slopes": fit_slopes(rows), "summary": summarise(rows), "provenance": provenance()}
        if eps is not None:
            from malleability.empirics.widths import measured_widths

            out["measured_widths"] = measured_widths(out["slopes"], eps)
            out["eps"] = eps
        if as_json:
            click.echo(json.dumps(out, indent=1))
            return
        names = list(_SHORT)
        click.echo(f"{'model':9} {'width':>6}  " + "  ".join(f"{_SHORT[k]:>17}" for k in names))
        table: dict = {}
        for s in out["summary"]:
            table.setdefault((s["model"], s["width"]), {})[s["distance"]] = s
        for (model, width), by in table.items():
            cells = [f"{_fmt(by[k]['mean']) if k in by else '-'}±{_fmt(by[k]['std']) if k in by else '-'}" for k in names]
            click.echo(f"{model:9} {width:>6}  " + "  ".join(f"{c:>17}" for c in cells))
        for ds_name, by_model in out["slopes"].items():
            for model, fits in by_model.items():
                parts = ", ".join(f"{_SHORT[k]} {_fmt(v['slope'])}" for k, v in fits.items())
                click.echo(f"slope of ln d vs ln m ({ds_name}, {model}): {parts}   (NTK theory: -0.5)")
        for ds_name, by_model in out.get("measured_widths", {}).items():
            for model, by_name in by_model.items():
                parts = ", ".join(f"{_SHORT[k]} {_fmt(e['log10_width'])}" for k, e in by_name.items())
                click.echo(f"log10 width where d = {eps} ({ds_name}, {model}, from the fit): {parts}")

    @main.command("widths")
    @_data_options
    @click.option("--n", "n", default="1000", show_default=True,
                  help="training samples; a comma list for several n (a single N also reports N // 10)")
    @click.option("--eps", default=0.1, type=float, show_default=True, help="target distance ε")
    @click.option("--rows", "rows_path", default=None, help="JSON from `ntk-distance --json` (or JSONL rows) for measured widths")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    def widths_cmd(dataset, n, n_test, classes, data_seed, data_root, eps, rows_path, as_json):
        """κ(G), pseudo-κ, κ_d of the data as each model sees it; predicted vs measured widths."""
        from malleability.empirics.widths import width_report

        ns = _parse_ns(n)
        if len(ns) == 1 and ns[0] >= 20:
            ns = (ns[0] // 10, ns[0])
        require(eps > 0, f"--eps must be > 0, got {eps}")
        data = _data_config(dataset, max(ns), n_test, classes, data_seed, data_root)
        rows = _read_rows(rows_path) if rows_path else None
        report = width_report(data, eps, rows=rows, ns=ns)
        if as_json:
            click.echo(json.dumps(report, indent=1, default=str))
            return
        for entry in report["per_n"]:
            for kind, view in entry["views"].items():
                c = view["conditioning"]
                click.echo(
                    f"{report['dataset']} n={entry['n']} {kind:8}: rank {c['rank']}, log10 kappa_G {_fmt(c['log10_kappa_G'])}, "
                    f"pseudo {_fmt(c['log10_pseudo_kappa_G'])}, kappa_d {_fmt(c['log10_kappa_d'])}, "
                    f"G^3 {_fmt(c['log10_kappa_G3'])}"
                )
                for reading, pred in view["predicted"].items():
                    click.echo(f"    predicted log10 width from {reading}: v1 {_fmt(pred['v1']['log10_width'])}, "
                               f"v2 {_fmt(pred['v2']['log10_width'])}")
        if report.get("measured"):
            for ds_name, by_model in report["measured"].items():
                for model, by_name in by_model.items():
                    for name, e in by_name.items():
                        click.echo(f"measured ({ds_name}, {model}) {name}: log10 width {_fmt(e['log10_width'])}"
                                   + (f"  [{e['note']}]" if e["note"] else ""))


def _read_rows(path: str) -> list[dict]:
    require(os.path.isfile(path), f"rows file not found: {path}")
    with open(path) as fh:
        text = fh.read()
    try:
        obj = json.loads(text)
        rows = obj["rows"] if isinstance(obj, dict) else obj
    except (json.JSONDecodeError, KeyError, TypeError):
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise MalleabilityError(f"cannot read rows from {path}: {exc}") from None
    require(isinstance(rows, list) and all(isinstance(r, dict) and "distance" in r for r in rows),
            f"{path} holds no NTK-distance rows")
    return rows
