"""CLI ``bench`` commands: each fast implementation against its reference, in one process.

Every benchmark prints a ratio against a reference timed in the same process, never an
absolute time judged against a threshold.
"""

from __future__ import annotations

import json
import math
import os

import click

from malleability.empirics.experiments.memory import require_bytes
from malleability.errors import MalleabilityError, require


def _dump(obj) -> str:
    return json.dumps(obj, indent=1, allow_nan=False, default=str)


def _check_threads(threads: int | None) -> None:
    """More BLAS threads than a few per CPU only oversubscribes (and torch crashes on absurd counts)."""
    cap = 4 * (os.cpu_count() or 1)
    require(threads is None or 1 <= threads <= cap,
            f"--threads must be in 1..{cap} (4 per CPU of this machine), got {threads}")


def register(main: click.Group, bench: click.Group) -> None:
    """Add the benchmark commands to the `bench` group."""

    @bench.command("ntk")
    @click.option("--model", default="relu", show_default=True,
                  help="relu | mlp-attn: the closed form of parameter-free features; qkv-attn: the NTK over all "
                       "parameters (factored and torch.func) against plain Jacobian contraction")
    @click.option("--d-k", "d_k", default=64, type=int, show_default=True, help="qkv-attn: projection width")
    @click.option("--n", "n", default=1024, type=int, show_default=True)
    @click.option("--d", "d", default=784, type=int, show_default=True)
    @click.option("--m", "m", default=1024, type=int, show_default=True)
    @click.option("--dtype", default="float64", type=click.Choice(["float32", "float64"]), show_default=True)
    @click.option("--repeats", default=3, type=int, show_default=True)
    @click.option("--threads", default=None, type=int, help="torch threads (default: torch's own setting)")
    @click.option("--reference-budget", default=60.0, type=float, show_default=True,
                  help="seconds: above this predicted time the reference is timed on 128 rows and scaled")
    @click.option("--neural-tangents/--no-neural-tangents", "with_nt", default=True, show_default=True,
                  help="also time neural-tangents' structured-derivatives NTK where jax and it are importable")
    @click.option("--json", "as_json", is_flag=True)
    def bench_ntk(model, d_k, n, d, m, dtype, repeats, threads, reference_budget, with_nt, as_json):
        """Closed-form NTK vs the torch.func reference, its matmul floor and neural-tangents (one process)."""
        import torch

        from malleability.empirics.ntk_bench import benchmark_ntk
        from malleability.provenance import provenance

        require(min(n, d, m) >= 1, "--n, --d and --m must be >= 1")
        require(repeats >= 1, "--repeats must be >= 1")
        _check_threads(threads)
        require(math.isfinite(reference_budget) and reference_budget > 0,
                f"--reference-budget must be a finite number of seconds > 0, got {reference_budget}")
        require(model in ("relu", "mlp-attn", "qkv-attn"), f"--model must be relu, mlp-attn or qkv-attn, got {model!r}")
        require(d_k >= 1, "--d-k must be >= 1")
        # options one path does not read are refused, not ignored (the run would silently be another one)
        source = click.get_current_context().get_parameter_source
        given = [name for name in ("dtype", "repeats", "reference_budget", "with_nt", "d_k")
                 if source(name) != click.core.ParameterSource.DEFAULT]
        unread = [g for g in given if (g == "d_k") != (model == "qkv-attn")]
        flags = {"dtype": "--dtype", "repeats": "--repeats", "reference_budget": "--reference-budget",
                 "with_nt": "--neural-tangents/--no-neural-tangents", "d_k": "--d-k"}
        if unread:
            path = "qkv-attn" if unread[0] == "d_k" else "relu and mlp-attn"
            raise MalleabilityError(f"{', '.join(flags[u] for u in unread)} applies to --model {path}, "
                                    f"not --model {model}")
        # the closed form's (n, n) kernels and (n, m) features, and the reference's weights and gradients
        qkv = model == "qkv-attn"
        require_bytes(8 * (4 * n * n + 3 * n * m + 4 * m * max(d, d_k)),
                      f"bench ntk at n = {n}, d = {d}, m = {m}" + (f", d_k = {d_k}" if qkv else ""),
                      "lower --n, --d, --m or --d-k" if qkv else "lower --n, --d or --m")
        if threads is not None:
            torch.set_num_threads(threads)
        if model == "qkv-attn":
            from malleability.empirics.ntk_params import benchmark_qkv_ntk

            res = benchmark_qkv_ntk(n, d, m, d_k)
            res.update(model=model, provenance=provenance())
            click.echo(_dump(res) if as_json else
                       f"qkv-attn n={n} d={d} m={m} d_k={d_k}: factored {res['factored_s']:.3f} s, torch.func "
                       f"{res['jacobian_s']:.3f} s, plain Jacobian {res['reference_s']:.3f} s; speedup "
                       f"{res['speedup']:.1f}x (torch.func {res['jacobian_speedup']:.1f}x); memory "
                       f"{res['factored_bytes'] / 2**20:.0f} / {res['jacobian_bytes'] / 2**20:.0f} / "
                       f"{res['reference_bytes'] / 2**20:.0f} MiB")
            return
        res = benchmark_ntk(n, d, m, dtype, repeats=repeats, reference_budget_s=reference_budget,
                            neural_tangents=with_nt)
        res["provenance"] = provenance()
        if as_json:
            click.echo(_dump(res))
            return
        scaled = (f" (scaled from {res['reference_scaled_from_rows']} rows)" if res["reference_scaled_from_rows"] else "")
        click.echo(f"n={n} d={d} m={m} {dtype}, {res['threads']} threads")
        click.echo(f"closed form {res['closed_form_s']:.4f} s; reference {res['reference_s']:.2f} s{scaled}; "
                   f"speedup_vs_reference {res['speedup_vs_reference']:.1f}x; max_rel_diff {res['max_rel_diff']:.2e}")
        backends = ", ".join(f"{k}: {v}" for k, v in res["floor_backends"].items())
        click.echo(f"matmul floor {res['matmul_floor_s']:.4f} s ({backends}); ratio_to_floor {res['ratio_to_floor']:.2f}")
        click.echo(f"against an extended-precision oracle ({res['oracle_rows']} rows): max_rel_error "
                   f"{res['max_rel_error']:.2e} (closed form), {res['reference_max_rel_error']:.2e} (torch.func)")
        if res["speedup_vs_neural_tangents"] is None:
            click.echo(f"speedup_vs_neural_tangents: n/a ({res['neural_tangents_reason']})")
        else:
            click.echo(f"neural-tangents {res['neural_tangents_s']:.4f} s ({res['neural_tangents_threads']} threads); "
                       f"speedup_vs_neural_tangents {res['speedup_vs_neural_tangents']:.2f}x; "
                       f"max_rel_diff {res['neural_tangents_max_rel_diff']:.2e}")

    @bench.command("influence")
    @click.option("--n", "n", type=int, default=500, show_default=True, help="training points")
    @click.option("--n-test", type=int, default=100, show_default=True, help="test points")
    @click.option("--outputs", type=int, default=10, show_default=True, help="KRR outputs (classes)")
    @click.option("--repeats", type=int, default=5, show_default=True, help="closed-form timing: best of R")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    def bench_influence(n, n_test, outputs, repeats, as_json):
        """Closed-form leave-one-out influence against brute-force refits (targets at n=500: >= 100x, <= 1e-8)."""
        from malleability.empirics.influence import benchmark_loo

        for flag, value in (("--n", n), ("--n-test", n_test), ("--outputs", outputs), ("--repeats", repeats)):
            require(value >= 1, f"{flag} must be >= 1, got {value}")
        require(n >= 2, f"--n must be >= 2 (leave-one-out needs two points), got {n}")
        require(n <= 5000, f"--n {n} is too large for n brute-force refits; use n <= 5000")
        require(outputs <= 10_000, f"--outputs must be at most 10000 (KRR outputs are classes), got {outputs}")
        require_bytes(8 * (4 * n * n + 3 * (n + n_test) * (outputs + n)), f"bench influence at n = {n}, "
                      f"n-test = {n_test}, outputs = {outputs}", "lower --n, --n-test or --outputs")
        click.echo(f"timing the closed form and {n} refits ...", err=True)
        res = benchmark_loo(n, n_test, outputs, repeats=repeats)
        if as_json:
            click.echo(_dump(res))
            return
        click.echo(f"n={res['n']} n_test={res['n_test']} outputs={res['outputs']}: closed form "
                   f"{res['closed_form_s'] * 1e3:.1f} ms, refits {res['bruteforce_s']:.2f} s, "
                   f"speedup {res['speedup']:.0f}x, max_rel_diff {res['max_rel_diff']:.2e}")

    register_training(bench)


def register_training(bench: click.Group) -> None:
    """``bench training``: the training step against its matmul floor, and batched over seeds against a loop."""

    @bench.command("training")
    @click.option("--widths", default="16,256,4096", show_default=True, help="comma list of widths m")
    @click.option("--n", "n", default=600, type=int, show_default=True, help="training points")
    @click.option("--d", "d", default=784, type=int, show_default=True, help="input dimension")
    @click.option("--classes", default=10, type=int, show_default=True, help="outputs (cross-entropy)")
    @click.option("--batch-size", default=128, type=int, show_default=True)
    @click.option("--seeds", default=5, type=int, show_default=True, help="seeds trained per width")
    @click.option("--epochs", default=10, type=int, show_default=True,
                  help="epochs per timed training (fewer leave a few ms per timing at m = 16, within host jitter)")
    @click.option("--repeats", default=3, type=int, show_default=True,
                  help="rounds, each timing every path and the floor; medians over rounds")
    @click.option("--threads", default=1, type=int, show_default=True, help="torch threads")
    @click.option("--dtype", default="float32", type=click.Choice(["float32", "float64"]), show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    def bench_training(widths, n, d, classes, batch_size, seeds, epochs, repeats, threads, dtype, as_json):
        """Paper-protocol training step (Adam, batch 128) vs its matmul floor; batched seeds vs a per-seed loop."""
        import torch

        from malleability.empirics.experiments.ntk_distance import parse_widths
        from malleability.empirics.training_batched import benchmark_training

        ws = parse_widths(widths)
        for flag, value in (("--n", n), ("--d", d), ("--batch-size", batch_size), ("--seeds", seeds),
                            ("--epochs", epochs), ("--repeats", repeats), ("--threads", threads)):
            require(value >= 1, f"{flag} must be >= 1, got {value}")
        _check_threads(threads)
        require(classes >= 2, f"--classes must be >= 2, got {classes}")
        # a batch larger than the data set is the full batch: the benchmark would time another setting than it names
        require(batch_size <= n, f"--batch-size {batch_size} exceeds --n {n}: give a batch of at most n rows")
        # the data (float64 draw, its cast, the features, targets and per-seed batch orders), every seed's
        # weights with gradients and Adam moments, and each batch's gathered rows and activations, at the widest width
        m, item, bs = max(ws), 8 if dtype == "float64" else 4, min(batch_size, n)
        require_bytes(8 * n * d + item * (2 * n * d + n * classes) + 8 * seeds * n
                      + item * seeds * (5 * m * (d + classes) + 4 * bs * (m + d + classes)),
                      f"bench training at n = {n}, d = {d}, width {m}, {seeds} seeds",
                      "lower --n, --d, --widths or --seeds")
        torch.set_num_threads(threads)
        click.echo(f"timing {len(ws)} widths x {seeds} seeds ...", err=True)
        res = benchmark_training(ws, n=n, d=d, num_classes=classes, batch_size=batch_size, seeds=seeds,
                                 epochs=epochs, repeats=repeats, dtype=dtype)
        from malleability.provenance import provenance

        res["provenance"] = provenance()
        if as_json:
            click.echo(_dump(res))
            return
        click.echo(f"n={n} d={d} K={classes} batch={batch_size} seeds={seeds} {dtype}, {res['threads']} thread(s)")
        for r in res["widths"]:
            click.echo(f"m={r['width']}: step {r['step_s'] * 1e3:.3f} ms (train_model {r['reference_step_s'] * 1e3:.3f}), "
                       f"floor {r['floor_s'] * 1e3:.3f} ms, ratio_to_floor {r['ratio_to_floor']:.2f}; "
                       f"batched {r['batched_step_s'] * 1e3:.3f} ms/seed-step, speedup_batched "
                       + (f"{r['speedup_batched']:.2f}x" if r["speedup_batched"] is not None else "unresolved"))
