"""Commands of the ``medsr`` CLI kept in their own modules (registered in :mod:`medsr.cli`)."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    """End a command on a user mistake: one ``error:`` line on stderr, exit code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
