"""What every command module shares: how a user error ends a command."""

from __future__ import annotations

import typer


def fail(message: str) -> None:
    """`error: <message>` on stderr and exit code 1: for what the user can fix, instead of a traceback."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)
