"""`imgcls cam` (being written)."""

from __future__ import annotations

import typer

from .common import fail


def cam_command(args: list[str] = typer.Argument(None)) -> None:
    """Not available in this build yet."""
    fail("imgcls cam is not available in this build yet")


def register(app: typer.Typer) -> None:
    app.command("cam", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(cam_command)
