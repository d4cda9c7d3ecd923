"""CLI commands for the theory part (registered into the root group by reports.cli)."""

from __future__ import annotations

import click


def register(main: click.Group, bench: click.Group) -> None:
    """Add this module's commands to the root group and the `bench` group."""
