"""`imgcls stats` (being written)."""

from __future__ import annotations

import typer

from .common import fail


def stats_command(args: list[str] = typer.Argument(None)) -> None:
    """Not available in this build yet."""
    fail("imgcls stats is not available in this build yet")


def register(app: typer.Typer) -> None:
    app.command("stats", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(stats_command)
