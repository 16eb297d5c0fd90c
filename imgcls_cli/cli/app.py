"""`imgcls` — the Typer application; each subcommand lives in its own module."""

from __future__ import annotations

import typer

from .. import __version__

app = typer.Typer(
    name="imgcls",
    help="Image-classification research toolkit: train, evaluate, explain (CAM), export and inspect models.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imgcls {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Image-classification research toolkit."""


# One module per subcommand; each has `register(app)`.  A new subcommand is one line here.
COMMAND_MODULES = ["train_cmd", "eval_cmd", "cam_cmd", "export_cmd", "stats_cmd", "report_cmd", "pack_cmd", "sweep_cmd",
                   "predict_cmd"]


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"imgcls_cli.cli.{name}").register(app)


_register()


def run() -> None:
    app()
