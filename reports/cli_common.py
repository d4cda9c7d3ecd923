"""What the experiment commands share: list parsing, data options, model and attack options, strict JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import click

from malleability.errors import MalleabilityError, require
from malleability.validation import MAX_SEED_COUNT, refuse_repeats, split_entries


_CLASS_PREFIX = re.compile(r"(?<![\w.])(?:[A-Za-z_][\w.]*\.)?_*[A-Z]\w*(?:Error|Exception): ")


def one_line(message: str) -> str:
    """A message on one line, without Python exception class names."""
    return " ".join(_CLASS_PREFIX.sub("", str(message)).split()) or "(no message)"


def dump(obj) -> str:
    """Strict JSON (no NaN or inf tokens)."""
    return json.dumps(obj, indent=1, default=str, allow_nan=False)


# Largest seed: numpy's legacy and torch's generators both take it, and data-seed + seed stays in int64.
MAX_SEED = 2**32 - 1


def parse_list(spec, what: str) -> list[str]:
    """'a, b' -> ['a', 'b']: non-empty, no blank entry, each item once."""
    return refuse_repeats(split_entries(spec, what), what, spec)


def parse_seeds(spec) -> list[int]:
    """'3' -> [0, 1, 2]; '0,4,7' -> [0, 4, 7]."""
    text = str(spec).strip()
    try:
        seeds = [int(p) for p in split_entries(text, "--seeds")] if "," in text else None
        count = int(text) if seeds is None else None
    except ValueError:
        raise MalleabilityError(f"--seeds must be a count or a comma list of integers, got {spec!r}") from None
    if seeds is None:
        require(1 <= count <= MAX_SEED_COUNT, f"--seeds must be >= 1 and a count at most {MAX_SEED_COUNT}, got {count}")
        seeds = list(range(count))
    require(seeds and all(0 <= s <= MAX_SEED for s in seeds), f"seeds must be in 0..{MAX_SEED}, got {spec!r}")
    return refuse_repeats(seeds, "--seeds", spec)


def parse_numbers(spec, what: str, *, positive: bool = False) -> list[float]:
    """'0.1,0.2' -> [0.1, 0.2]: each finite and >= 0 (> 0 with ``positive``), each number once."""
    values = []
    for p in parse_list(spec, what):
        try:
            v = float(p) + 0.0  # '-0' is 0: one cell, one cache key, printed as 0
        except ValueError:
            raise MalleabilityError(f"{what} must be a number or a comma list of numbers, got {p!r}") from None
        require(math.isfinite(v) and (v > 0 if positive else v >= 0),
                f"{what} values must be finite and {'> 0' if positive else '>= 0'}, got {p!r}")
        values.append(v)
    return refuse_repeats(values, what, spec)  # '0.1,0.10' names one number twice


def parse_eps(spec) -> list[float]:
    return parse_numbers(spec, "--eps")


def parse_models(spec) -> list[str]:
    from malleability.empirics.models import check_model

    return [check_model(m) for m in parse_list(spec, "--models")]


def parse_attacks(spec) -> list[str]:
    from malleability.empirics.attacks import ATTACKS

    attacks = refuse_repeats([a.lower() for a in parse_list(spec, "--attack")], "--attack", spec)
    for a in attacks:
        require(a in ATTACKS, f"unknown attack {a!r}: choose one of {', '.join(ATTACKS)}")
    return attacks


def _model_fields() -> dict[str, list]:
    """Option name -> the dataclass fields of the registered models that have it."""
    from malleability.empirics.models import MODELS

    out: dict[str, list] = {}
    for cls in MODELS.values():
        for fld in dataclasses.fields(cls):
            out.setdefault(fld.name, []).append((cls, fld))
    return out


def _parse_option(text: str, fld, flag: str):
    kind = str(fld.type)
    if text.strip().lower() in ("none", "full") and "None" in kind:
        return None
    try:
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            value = float(text)
            require(math.isfinite(value), f"{flag} must be finite, got {text!r}")
            return value
        if kind.startswith("tuple"):
            inner = text.strip()
            if inner.startswith("(") and inner.endswith(")"):  # the documented form '(H, W, C)' and plain 'H,W,C'
                inner = inner[1:-1]
            return tuple(int(p) for p in split_entries(inner, flag))
    except ValueError:
        shown = "a comma list of integers, e.g. 28,28,1 or (28, 28, 1)" if kind.startswith("tuple") else kind.split(" ")[0]
        raise MalleabilityError(f"{flag} must be {shown}, got {text!r}") from None
    return text


def model_option_flags(f):
    """One ``--<option>`` flag per option of the registered models (from their dataclasses); each applies to
    every selected model that has that option."""
    for name, owners in sorted(_model_fields().items(), reverse=True):
        flag = f"--{name.replace('_', '-')}"
        models = ", ".join(sorted(cls.name for cls, _ in owners))
        helptext = owners[0][1].metadata.get("help", name)
        f = click.option(flag, f"model__{name}", default=None, type=str,
                         help=f"model option ({models}): {helptext} (default {owners[0][1].default})")(f)
    return f


def model_options(models, kwargs: dict) -> dict[str, dict]:
    """{model: options} from the ``--<option>`` flags given (popped from ``kwargs``), for the models that have them."""
    from malleability.empirics.models import MODELS, get_model

    given = {k.split("__", 1)[1]: kwargs.pop(k) for k in [k for k in kwargs if k.startswith("model__")]}
    given = {k: v for k, v in given.items() if v is not None}
    out = {}
    for m in models:
        fields = {f.name: f for f in dataclasses.fields(MODELS[m])}
        out[m] = {k: _parse_option(v, fields[k], f"--{k.replace('_', '-')}") for k, v in given.items() if k in fields}
        if "attention_input" in fields:  # the reading is always named, as the audit names it (same cells, same cache keys)
            out[m].setdefault("attention_input", fields["attention_input"].default)
        get_model(m, out[m])  # a bad value is a one-line error before any work
    unused = sorted(k for k in given if not any(k in {f.name for f in dataclasses.fields(MODELS[m])} for m in models))
    require(not unused, f"--{unused[0].replace('_', '-') if unused else ''} applies to none of the models "
            f"{', '.join(models)}")
    return out


def refuse_npz_seed(dataset: str, seed: int, flag: str) -> None:
    """An .npz is read in order (its first n rows), so a seed of the subset draw would be silently ignored."""
    require(not (str(dataset).endswith(".npz") and seed != 0),
            f"{flag} {seed} has no effect on {dataset}: an .npz is read in order (its first n rows, every seed the "
            f"same rows); leave {flag} out or shuffle the file")


def data_config(dataset, n, n_test, classes, data_seed, data_root, *, min_test: int = 0):
    """``min_test``: 1 where the command needs test points (a test accuracy, the test loss's influence)."""
    from malleability.empirics.data import DataConfig, parse_classes

    require(n >= 1, f"--n must be >= 1, got {n}")
    require(0 <= data_seed <= MAX_SEED, f"--data-seed must be in 0..{MAX_SEED}, got {data_seed}")
    refuse_npz_seed(dataset, data_seed, "--data-seed")
    require(n_test >= min_test, f"--n-test must be >= {min_test}, got {n_test}"
            + ("" if min_test == 0 else ": without test points no model can be judged learned"))
    return DataConfig(dataset=dataset, n=n, n_test=n_test, classes=parse_classes(classes, dataset), seed=data_seed,
                      data_root=data_root)


def attack_option_flags(f):
    """One ``--<attack>-<option>`` flag per option of every registered attack (from its dataclass)."""
    from malleability.empirics.attacks import ATTACKS, option_fields

    for name in sorted(ATTACKS, reverse=True):
        for fld in reversed(option_fields(name)):
            default = fld.default
            kind = bool if isinstance(default, bool) else int if isinstance(default, int) else float
            flag = f"--{name}-{fld.name.replace('_', '-')}"
            helptext = f"{name.upper()}: {fld.metadata.get('help', fld.name)}"
            if kind is bool:
                f = click.option(f"{flag}/--no-{name}-{fld.name.replace('_', '-')}",
                                 f"{name}__{fld.name}", default=None, help=f"{helptext} (default {default})")(f)
            else:
                f = click.option(flag, f"{name}__{fld.name}", default=None, type=str,
                                 help=f"{helptext} (default {default})")(f)
    return f


def attack_options(kwargs: dict) -> dict[str, dict]:
    """{attack: {option: value}} from the ``--<attack>-<option>`` flags given (popped from ``kwargs``)."""
    from malleability.empirics.attacks import check_options, option_fields

    out: dict[str, dict] = {}
    for key in [k for k in kwargs if "__" in k and not k.startswith("model__")]:
        value = kwargs.pop(key)
        if value is None:
            continue
        name, opt = key.split("__", 1)
        fld = next(f for f in option_fields(name) if f.name == opt)
        flag = f"--{name}-{opt.replace('_', '-')}"
        if isinstance(value, bool):
            out.setdefault(name, {})[opt] = value
            continue
        whole = isinstance(fld.default, int) and not isinstance(fld.default, bool)
        try:
            parsed = int(value) if whole else float(value)
        except ValueError:
            raise MalleabilityError(f"{flag} must be {'an integer' if whole else 'a number'}, got {value!r}") from None
        out.setdefault(name, {})[opt] = parsed
    for name, opts in out.items():
        for opt, parsed in opts.items():
            try:
                check_options(name, {opt: parsed})
            except MalleabilityError as err:
                raise MalleabilityError(f"--{name}-{opt.replace('_', '-')}: {err}") from None
    return out


def cell_run_flags(f):
    """--workers, --cache-dir and --fresh: a sweep runs as audit cells (cached, resumable, shared with the audit)."""
    f = click.option("--fresh", is_flag=True,
                     help="recompute every cell, ignoring (and replacing) what the cell cache holds")(f)
    f = click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
                     help="cell cache, shared with `malleability audit` (default: $MALLEABILITY_CACHE_DIR or "
                          "~/.cache/malleability/audit-cells); a rerun after Ctrl-C computes only what had not "
                          "finished")(f)
    f = click.option("--workers", type=int, default=1, show_default=True,
                     help="local worker processes, one thread each (the numbers do not depend on it)")(f)
    return f


def run_cells_of(kind: str, configs: list, labels: list[str], kw: dict, device: str, on_done=None) -> list[dict]:
    """The rows of a command's cells (see :mod:`malleability.reports.audit.sweep`), progress on stderr."""
    from malleability.reports.audit.sweep import run_sweep_cells

    return run_sweep_cells(kind, configs, labels=labels, workers=kw["workers"], cache_dir=kw["cache_dir"],
                           fresh=kw["fresh"], device=device, progress=lambda line: click.echo(line, err=True),
                           on_done=on_done)


def fmt(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.4g}"


def interval(ci, pct: bool = False) -> str:
    return "-" if ci is None else f"[{fmt(ci[0], pct)}, {fmt(ci[1], pct)}]"
