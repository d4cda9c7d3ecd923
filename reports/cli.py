"""The ``malleability`` command line.

Each family of commands lives in its own module and registers itself here:

* ``reports.cli_theory``    ``theory check | inspect | sensitivity``
* ``reports.cli_ntk``       ``ntk-distance``, ``widths``
* ``reports.cli_bench``     ``bench ntk``, ``bench influence``
* ``reports.cli_flip_rate`` ``flip-rate``
* ``reports.cli_k_layer``   ``k-layer``
* ``reports.cli_audit``     ``audit``, ``report``, ``compare``

Bad input raises :class:`malleability.errors.MalleabilityError`; this module turns it,
and every click usage error (bad value, missing or unknown option), into one line
``error: ...`` on stderr and exit status 2; any other exception is ``internal error: ...``
and exit 1. Heavy imports (torch) happen inside the commands so that ``--help`` and the
theory commands stay fast.

Every command but ``bench`` (which measures and reports its own threads) computes with one
torch/BLAS thread, as the audit's worker processes do: results must not depend on the core
count of the machine.
"""

from __future__ import annotations

import os
import sys

import click

from malleability import __version__
from malleability.errors import MalleabilityError
from malleability.reports.cli_common import one_line

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
# click >= 8.2 raises this (a UsageError) for a group called without a command.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# "ValueError: " and the like inside a bad-input message: the user needs the reason, not the class.


def use_one_thread() -> None:
    """One torch thread here, and one BLAS/OpenMP thread in any process started from here."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_num_threads(1)


class AuditGroup(click.Group):
    """Root group: maps our exceptions and click's usage errors to one-line messages and exit codes."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # a bare group name: its help is the answer, not an error
            exc.show()
            code = exc.exit_code
        except click.UsageError as exc:  # BadParameter, MissingParameter, NoSuchOption, ...
            command = exc.ctx.command_path if exc.ctx is not None else (prog_name or "malleability")
            click.echo(f"error: {one_line(exc.format_message())} (see '{command} --help')", err=True)
            code = EXIT_BAD_INPUT
        except click.ClickException as exc:
            click.echo(f"error: {one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            code = EXIT_INTERRUPTED
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MalleabilityError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt as exc:
            # commands that cache their cells raise Interrupted, which says what was kept; the others keep nothing
            click.echo(getattr(exc, "summary", None) or "interrupted: this command keeps no partial result", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except MemoryError:  # the sizes given, not a fault of the code: bad input, as an option out of range is
            click.echo(f"error: out of memory: the sizes given need more memory than this machine has; lower them "
                       f"(see '{' '.join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))} --help')", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except Exception as exc:  # never a bare traceback for the user
            if os.environ.get("MALLEABILITY_DEBUG"):
                raise
            msg = " ".join(str(exc).split()) or "(no message)"
            click.echo(
                f"internal error: {type(exc).__name__}: {msg} (set MALLEABILITY_DEBUG=1 for the traceback)",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=AuditGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="malleability")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Audit the claims of 'Influence Malleability in Linearized Attention' (arXiv 2603.13085)."""
    if ctx.invoked_subcommand != "bench":
        use_one_thread()


@main.group()
def bench() -> None:
    """Benchmarks: fast implementations against their references, in one process."""


def _register_all() -> None:
    from malleability.reports import cli_audit, cli_bench, cli_flip_rate, cli_k_layer, cli_ntk, cli_theory

    for module in (cli_theory, cli_ntk, cli_flip_rate, cli_k_layer, cli_audit, cli_bench):
        module.register(main, bench)


_register_all()


def console_main() -> None:
    """The ``malleability`` command: :func:`main`, then, after Ctrl-C, an exit that cannot hang.

    By the time an interrupted command returns its exit code every finished result is on disk
    (fsynced) and the one-line summary is printed. What is left is the interpreter's teardown:
    joining a process pool's manager thread and collecting torch's objects. On a loaded CI
    machine that once took over 30 s (not reproduced locally, where it takes 1-5 s), so the
    process ends here instead.
    In-process callers (click's test runner, a notebook) use :func:`main` and keep the normal exit.
    """
    code = main(standalone_mode=False)
    code = code if isinstance(code, int) else 0
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    console_main()
