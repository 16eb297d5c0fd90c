"""`imgcls export` (being written)."""

from __future__ import annotations

import typer

from .common import fail


def export_command(args: list[str] = typer.Argument(None)) -> None:
    """Not available in this build yet."""
    fail("imgcls export is not available in this build yet")


def register(app: typer.Typer) -> None:
    app.command("export", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(export_command)
