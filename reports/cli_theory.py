"""CLI commands for the theory part (registered into the root group by reports.cli).

    malleability theory check [CLAIM...] [--profile quick|thorough] [--json]
    malleability theory inspect FILE.npy [--layers K] [--recursion CODE] [--json]
    malleability theory sensitivity FILE.npy --i I --j J --eps E [--json]

Bad input raises MalleabilityError (exit 2, one line, from the root group).
"""

from __future__ import annotations

import json
import math

import click

from malleability.errors import MalleabilityError, require
from malleability.validation import refuse_repeats


def _dump(obj) -> str:
    """Strict JSON: a non-finite float would be a bug upstream, so it fails loudly here."""
    return json.dumps(obj, indent=2, default=str, allow_nan=False)


def _int_option(value, flag: str) -> int:
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        raise MalleabilityError(f"{flag} must be an integer, got {value!r}") from None


def _float_option(value, flag: str) -> float:
    try:
        v = float(str(value).strip())
    except ValueError:
        raise MalleabilityError(f"{flag} must be a number, got {value!r}") from None
    require(math.isfinite(v) and v > 0, f"{flag} must be a finite number > 0, got {value!r}")
    return v


def _with_bound(v, bound) -> str:
    """κ, and its relative error bound when that exceeds 1e-6."""
    from malleability.theory.inspect import REPORT_BOUND_ABOVE

    text = _fmt(v)
    if v is not None and bound is not None and bound > REPORT_BOUND_ABOVE:
        text += f" (rel. error ≤ {bound:.1e})"
    return text


def _fmt(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def register(main: click.Group, bench: click.Group) -> None:
    """Add this module's commands to the root group and the `bench` group."""

    @main.group()
    def theory() -> None:
        """Audit the paper's theorems: verdicts per claim and reading, condition numbers, sensitivity."""

    @theory.command("check")
    @click.argument("claims", nargs=-1)
    @click.option("--profile", type=click.Choice(["quick", "thorough"]), default="quick", show_default=True,
                  help="search size: quick (default, under 2 minutes) or thorough")
    @click.option("--json", "as_json", is_flag=True, help="print the JSON document instead of the table")
    def check(claims, profile, as_json):
        """Check CLAIM... (default: all of thm4.1 thm4.7 thm4.7-width k-layer prop4.5). Exit 0 whatever the verdicts."""
        from malleability.provenance import provenance
        from malleability.theory import CLAIM_IDS, check_claims

        for cid in claims:
            require(cid in CLAIM_IDS, f"unknown claim id {cid!r}: use one of {', '.join(CLAIM_IDS)}")
        refuse_repeats(claims, "theory check", " ".join(claims))  # a claim named twice would be checked twice
        results = check_claims(list(claims) or None, profile=profile,
                               progress=lambda msg: click.echo(msg, err=True))
        if as_json:
            click.echo(_dump({"profile": profile, "claims": [r.to_dict() for r in results],
                              "provenance": provenance()}))
            return
        from malleability.theory.claims.verdicts import VERDICTS

        click.echo(f"{'claim':<14}{'verdict':<42}reading verdicts")
        for r in results:
            summary = ", ".join(f"{rd.name}={rd.verdict}" + (" (info)" if rd.informational else "")
                                for rd in r.readings)
            click.echo(f"{r.id:<14}{r.verdict + ' (' + VERDICTS[r.verdict][0] + ')':<42}{summary}")
            ce = r.counterexample
            if ce is not None:
                click.echo(f"{'':<14}counterexample ({ce['reading']}): {json.dumps(ce, default=str)[:200]}")

    @theory.command("inspect")
    @click.argument("file", type=click.Path(dir_okay=True))
    @click.option("--layers", "layers", default="3", show_default=True,
                  help="number of layers K (an integer, 1..60)")
    @click.option("--recursion", default=None, help="one recursion code (e.g. ccc, iic, ccc+res); default: all")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    def inspect_cmd(file, layers, recursion, as_json):
        """Condition numbers of G = X Xᵀ, G³, the normalised kernel, the NTK, and k-layer Grams for X in FILE.npy."""
        from malleability.theory import inspect_matrix
        from malleability.theory.inspect import parse_layers
        from malleability.validation import load_npy_matrix

        layers = parse_layers(layers)
        x = load_npy_matrix(file)
        out = inspect_matrix(x, layers=layers, recursion=recursion)
        for row in out["layers"]:
            row.pop("gram_polynomial", None)
        if as_json:
            click.echo(_dump(out))
            return
        bounds = out["rel_error_bounds"]
        for key in ("n", "d", "rank", "kappa_G", "pseudo_kappa_G", "kappa_d", "kappa_G3", "pseudo_kappa_G3",
                    "kappa_K_norm", "pseudo_kappa_K_norm", "kappa_ntk_inf", "precision"):
            click.echo(f"{key:<22}{_with_bound(out[key], bounds.get(key.replace('pseudo_', '')))}")
        click.echo(f"{'k':<4}{'recursion':<10}{'exponent':<12}{'claimed':<9}kappa")
        for row in out["layers"]:
            click.echo(f"{row['k']:<4}{row['recursion']:<10}{_fmt(row['exponent']):<12}"
                       f"{row['claimed_exponent']:<9}{_with_bound(row['kappa'], row.get('rel_error_bound'))}")
        for w in out["warnings"]:
            click.echo(f"warning: {w}", err=True)

    @theory.command("sensitivity")
    @click.argument("file", type=click.Path(dir_okay=True))
    @click.option("--i", "i", required=True, help="row index of the perturbed sample")
    @click.option("--j", "j", required=True, help="row index of the other argument")
    @click.option("--eps", "eps", required=True, help="ℓ∞ radius of δ (> 0)")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    def sensitivity_cmd(file, i, j, eps, as_json):
        """Prop 4.5 on one matrix: largest |ΔK_ij| over ‖δ‖∞ ≤ ε per reading, against each bound.

        Zero rows are allowed: K = G³ needs no normalisation (unlike the normalised kernel of
        'theory inspect', which refuses them). An all-zero X is refused."""
        from malleability.theory import sensitivity
        from malleability.validation import load_npy_matrix

        i, j = _int_option(i, "--i"), _int_option(j, "--j")
        eps = _float_option(eps, "--eps")
        x = load_npy_matrix(file)
        out = sensitivity(x, i, j, eps)
        if as_json:
            click.echo(_dump(out))
            return
        for key in ("max_change_query", "max_change_transductive", "bound_query_exact",
                    "first_order_query", "first_order_transductive"):
            click.echo(f"{key:<26}{_fmt(out[key])}")
        for r in out["readings"]:
            click.echo(f"{r['name']:<28}bound={_fmt(r['bound_value']):<14}holds={_fmt(r['holds'])}")
        for w in out.get("warnings", []):
            click.echo(f"warning: {w}", err=True)
