"""The ``malleability`` command line.

Each family of commands lives in its own module and registers itself here:

* ``reports.cli_theory``    ``theory check | inspect | sensitivity``
* ``reports.cli_ntk``       ``ntk-distance``, ``widths``
* ``reports.cli_bench``     ``bench ntk``, ``bench influence``
* ``reports.cli_flip_rate`` ``flip-rate``
* ``reports.cli_audit``     ``audit``, ``report``

Bad input raises :class:`malleability.errors.MalleabilityError`; this module turns it
into one line on stderr and exit status 2. Heavy imports (torch) happen inside the
commands so that ``--help`` and the theory commands stay fast.
"""

from __future__ import annotations

import os
import sys

import click

from malleability import __version__
from malleability.errors import MalleabilityError

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


class AuditGroup(click.Group):
    """Root group: maps our exceptions to one-line messages and exit codes."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MalleabilityError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted: finished results are kept; rerun the same command to resume", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except MemoryError:
            click.echo("error: out of memory; try a smaller --n or width", err=True)
            ctx.exit(EXIT_INTERNAL)
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
def main() -> None:
    """Audit the claims of 'Influence Malleability in Linearized Attention' (arXiv 2603.13085)."""


@main.group()
def bench() -> None:
    """Benchmarks: fast implementations against their references, in one process."""


def _register_all() -> None:
    from malleability.reports import cli_audit, cli_bench, cli_flip_rate, cli_ntk, cli_theory

    for module in (cli_theory, cli_ntk, cli_flip_rate, cli_audit, cli_bench):
        module.register(main, bench)


_register_all()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
