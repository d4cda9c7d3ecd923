"""CLI ``ntk-distance`` and ``widths``: thin clients of :mod:`malleability.empirics.experiments`.

Seeds of ``ntk-distance``: seed s draws data subset ``--data-seed + s`` and init s (the audit's
grid, :func:`ntk_distance.sweep`). JSON of ``ntk-distance``: ``{"rows", "summary": {"cells",
"slopes"}, "slopes", "provenance"}`` (+ ``measured_widths`` with ``--eps``); every row carries
``accuracy`` (train, test, krr_test, chance, learned), ``weight_change`` and
``pattern_flip_share``. JSON of ``widths``: the width report, with ``kappa_G``,
``pseudo_kappa_G`` and ``kappa_d`` of the first n at the top level beside ``per_n``.
"""

from __future__ import annotations

import json
import math
import os

import click

from malleability.errors import MalleabilityError, require
from malleability.reports.cli_common import (
    MAX_SEED,
    cell_run_flags,
    data_config,
    dump,
    fmt,
    interval,
    model_option_flags,
    model_options,
    parse_list,
    parse_models,
    parse_seeds,
    refuse_repeats,
    run_cells_of,
)

# no network of more units was ever trained: a larger width in a rows file is an edit
MAX_ROW_WIDTH = 2**31


def _short(v) -> str:
    """``repr(v)``, cut to a line (an edited row may hold a 400-digit integer)."""
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


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
    f = click.option("--data-seed", default=0, type=int, show_default=True, help="seed of the subset draw (seed s draws data-seed + s)")(f)
    f = click.option("--n-test", default=500, type=int, show_default=True, help="test samples")(f)
    f = click.option("--dataset", required=True, help="mnist | fashion-mnist | cifar10 | PATH.npz")(f)
    return f


def _parse_ns(spec: str) -> tuple[int, ...]:
    out = []
    for p in parse_list(spec, "--n"):
        try:
            out.append(int(p))
        except ValueError:
            raise MalleabilityError(f"bad --n {spec!r}: {p!r} is not an integer") from None
    require(all(v >= 1 for v in out), f"--n must be >= 1, got {spec}")
    return tuple(refuse_repeats(out, "--n", spec))  # '20,020' would run one size twice


def _positive_eps(eps):
    import math

    require(eps is None or (math.isfinite(eps) and eps > 0), f"--eps must be finite and > 0, got {eps}")


def register(main: click.Group, bench: click.Group) -> None:
    """Add this module's commands to the root group."""

    @main.command("ntk-distance")
    @_data_options
    @click.option("--n", "n", default=1000, type=int, show_default=True, help="training samples")
    @click.option("--widths", default="default", show_default=True, help="comma list of widths; 'default' = 4..4096 (powers of 2)")
    @click.option("--seeds", default="1", show_default=True, help="count (0..S-1) or comma list of seeds")
    @click.option("--models", default="relu,mlp-attn", show_default=True, help="comma list of registered models")
    @model_option_flags
    @click.option("--epochs", default=None, type=int, help="override the protocol's epochs (scaled-down runs)")
    @click.option("--protocol", default="paper", type=click.Choice(["paper", "lazy"]), show_default=True)
    @click.option("--loss", default="auto", type=click.Choice(["auto", "ce", "mse-ovr", "mse"]), show_default=True)
    @click.option("--device", default="cpu", show_default=True, help="auto | cpu | cuda")
    @click.option("--dtype", default="float32", type=click.Choice(["float32", "float64"]), show_default=True)
    @click.option("--kernel-points", default=None, type=int, help="kernels on the first k training rows (default all)")
    @click.option("--function-kernel", default="infinite", type=click.Choice(["infinite", "init"]), show_default=True)
    @click.option("--eps", default=None, type=float, help="also report the width where each fitted distance reaches eps")
    @click.option("--json", "as_json", is_flag=True, help="print JSON {rows, summary, slopes, ...}")
    @cell_run_flags
    def ntk_distance(dataset, n, n_test, classes, data_seed, data_root, widths, seeds, models, epochs,
                     protocol, loss, device, dtype, kernel_points, function_kernel, eps, as_json, workers, cache_dir,
                     fresh, **model_flags):
        """NTK distance vs width (all named distances, log-log slopes with 95% intervals)."""
        from malleability.empirics.data import load_dataset
        from malleability.empirics.experiments import ntk_distance as experiment
        from malleability.empirics.experiments.widths import measured_widths
        from malleability.empirics.training import TrainConfig, resolve_device
        from malleability.provenance import provenance

        _positive_eps(eps)
        model_list = parse_models(models)
        data = data_config(dataset, n, n_test, classes, data_seed, data_root, min_test=1)
        train = TrainConfig(protocol=protocol, epochs=epochs, loss=loss, device=resolve_device(device), dtype=dtype)
        configs = experiment.sweep(data, train, model_list, experiment.parse_widths(widths), parse_seeds(seeds),
                                   model_options=model_options(model_list, model_flags),
                                   kernel_points=kernel_points, function_kernel=function_kernel)
        load_dataset(configs[0].data)  # fail fast on bad data before any training

        labels = [f"ntk-distance {c.data.dataset} {c.model} width={c.width} seed={c.train.seed}" for c in configs]
        rows = run_cells_of("ntk-distance", configs, labels,
                            {"workers": workers, "cache_dir": cache_dir, "fresh": fresh}, train.device)
        summary = experiment.summarise(rows)
        out = {"rows": rows, "summary": summary, "slopes": summary["slopes"],
               "provenance": provenance(train.device)}
        if eps is not None:
            out["measured_widths"] = measured_widths(summary, eps)
            out["eps"] = eps
        if as_json:
            click.echo(dump(out))
            return
        names = list(_SHORT)
        click.echo(f"{'model':34} {'width':>6}  " + "  ".join(f"{_SHORT[k]:>11}" for k in names) + "  test acc  learned")
        table: dict = {}
        for c in summary["cells"]:
            table.setdefault((c["model"], c["width"]), {})[c["distance"]] = c
        for (model, width), by in table.items():
            first = next(iter(by.values()))
            click.echo(f"{model:34} {width:>6}  " + "  ".join(f"{fmt(by[k]['mean']) if k in by else '-':>11}" for k in names)
                       + f"  {fmt(first['accuracy_test']):>8}  {first['learned_seeds']}/{first['seeds']}")
        for s in summary["slopes"]:
            click.echo(f"slope of ln d vs ln m ({s['dataset']}, {s['model']}, {_SHORT.get(s['distance'], s['distance'])}): "
                       f"{fmt(s['slope'])} 95% {interval(s['ci95'])} -> {s['class'] or '- (' + s.get('reason', 'no fit') + ')'}"
                       "   (NTK theory: -0.5)")
        for e in out.get("measured_widths", []):
            width = "-" if e["log10_width"] is None else f"10^{e['log10_width']:.2f}"
            click.echo(f"width where d = {eps} ({e['dataset']}, {e['model']}, {_SHORT.get(e['distance'])}): "
                       f"{width} [{e['label']}]")

    @main.command("widths")
    @_data_options
    @click.option("--n", "n", default="1000", show_default=True,
                  help="training samples; a comma list for several n (a single N >= 20 also reports N // 10; below "
                       "20 that companion would have fewer than 2 rows, and only N is reported)")
    @click.option("--eps", default=0.1, type=float, show_default=True, help="target distance ε")
    @click.option("--models", default="relu,mlp-attn", show_default=True, help="views: comma list of registered models")
    @click.option("--rows", "rows_path", default=None, help="JSON from `ntk-distance --json` (or JSONL rows) for measured widths")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @model_option_flags
    def widths_cmd(dataset, n, n_test, classes, data_seed, data_root, eps, models, rows_path, as_json, **model_flags):
        """κ(G), pseudo-κ, κ_d of the data as each model sees it; predicted vs measured widths."""
        from malleability.empirics.experiments.widths import width_report

        model_list = tuple(parse_models(models))
        options = model_options(model_list, model_flags)
        ns = _parse_ns(n)
        if len(ns) == 1 and ns[0] >= 20:
            ns = (ns[0] // 10, ns[0])
        _positive_eps(eps)
        from click.core import ParameterSource

        given = click.get_current_context().get_parameter_source("n_test") != ParameterSource.DEFAULT
        require(not given, "--n-test has no effect on widths: κ and the predicted widths read the training rows only")
        data = data_config(dataset, max(ns), 0, classes, data_seed, data_root)  # no test rows to load
        from malleability.empirics.experiments.memory import data_dimension
        from malleability.empirics.models import check_models

        # the largest n must hold a truncation's rank; an n // 10 companion below it shows the full C (its rank says so)
        check_models(model_list, options, data_dimension(data.dataset), max(ns))
        rows = _read_rows(rows_path) if rows_path else None
        report = width_report(data, eps, rows=rows, ns=ns, models=model_list, model_options=options)
        if len(ns) == 1 and not as_json:  # after the data loaded: a refusal stays one line
            click.echo(f"n = {ns[0]} < 20: no n // 10 companion (it would have fewer than 2 rows)", err=True)
        if as_json:
            click.echo(dump(report))
            return
        for entry in report["per_n"]:
            for kind, view in entry["views"].items():
                c = view["conditioning"]
                col = view.get("collinearity") or {}
                click.echo(
                    f"{report['dataset']} n={entry['n']} {kind:8}: rank {c['rank']}, log10 kappa_G {fmt(c['log10_kappa_G'])}, "
                    f"pseudo {fmt(c['log10_pseudo_kappa_G'])}, kappa_d {fmt(c['log10_kappa_d'])}, "
                    f"G^3 {fmt(c['log10_kappa_G3'])} ({c.get('precision')}); top-eigenvalue share "
                    f"{fmt(col.get('top_eigenvalue_share'))}, mean cosine {fmt(col.get('mean_cosine'))}")
                for reading, pred in view["predicted"].items():
                    click.echo(f"    predicted log10 width from {reading}: v1 {fmt(pred['v1']['log10_width'])}, "
                               f"v2 {fmt(pred['v2']['log10_width'])}")
        for e in report.get("measured") or []:
            click.echo(f"measured ({e['dataset']}, {e['model']}) {e['distance']}: log10 width {fmt(e['log10_width'])}"
                       f"  [{e['label']}]")


def _read_rows(path: str) -> list[dict]:
    require(os.path.isfile(path), f"rows file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError):
        raise MalleabilityError(f"cannot read rows from {path}: not a UTF-8 JSON or JSONL file") from None
    try:
        try:
            obj = json.loads(text)
            rows = obj["rows"] if isinstance(obj, dict) else obj
        except (json.JSONDecodeError, KeyError, TypeError):
            try:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as exc:
                raise MalleabilityError(f"cannot read rows from {path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise MalleabilityError(f"cannot read rows from {path}: nested too deeply to be NTK-distance rows") from None
    require(isinstance(rows, list) and rows and all(isinstance(r, dict) and "distance" in r for r in rows),
            f"{path} holds no NTK-distance rows")
    seen: dict = {}
    for i, r in enumerate(rows):
        _check_row(r, f"{path}: row {i}")
        # the same (data set, model, protocol, width, seed) twice would count one run twice in the fit,
        # narrowing its interval for nothing
        from malleability.empirics.experiments.ntk_distance import fit_group

        key = (*fit_group(r), r["width"], r["seed"])
        require(key not in seen, f"{path}: row {i}: repeats row {seen.get(key)} (same data set, model, protocol, width "
                                 f"and seed): give each run once")
        seen[key] = i
    return rows


def _is_number(v, low: float = 0.0, high: float = math.inf) -> bool:
    """A JSON number (not a bool) within [low, high]; an integer beyond float64's range is not one."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        f = float(v)
    except OverflowError:
        return False
    return math.isfinite(f) and low <= f <= high


def _check_row(r: dict, where: str) -> None:
    """The fields the width fit reads, of the types `ntk-distance --json` writes: an edited row is one line."""
    w = r.get("width")
    require(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_ROW_WIDTH,
            f"{where}: width must be an integer in 1..{MAX_ROW_WIDTH}, got {_short(w)}")
    s = r.get("seed")
    require(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED,
            f"{where}: seed must be an integer in 0..{MAX_SEED}, got {_short(s)}")
    for key in ("dataset", "model"):
        require(isinstance(r.get(key), str) and r[key], f"{where}: {key} must be a non-empty string, got {r.get(key)!r}")
    require(isinstance(r.get("model_options", {}), dict), f"{where}: model_options must be an object")
    readings = r.get("readings")
    require(readings is None or (isinstance(readings, dict) and isinstance(readings.get("protocol", "paper"), str)),
            f"{where}: readings must be an object with a string protocol")
    dist = r["distance"]
    require(isinstance(dist, dict) and dist, f"{where}: distance must be an object of named distances")
    for name, v in dist.items():
        require(v is None or _is_number(v), f"{where}: distance {name} must be a finite number >= 0 or null, got {_short(v)}")
    acc = r.get("accuracy")
    require(acc is None or isinstance(acc, dict), f"{where}: accuracy must be an object")
    for key in ("train", "test"):
        v = (acc or {}).get(key)
        require(v is None or _is_number(v, 0.0, 1.0), f"{where}: accuracy {key} must be a number in [0, 1] or null, "
                                                          f"got {_short(v)}")
