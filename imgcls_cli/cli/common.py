"""Shared CLI plumbing: one-line errors with exit status 2, stop signals with 128 + N, the console."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ImgclsError

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> None:
    # escaped: a message's brackets are text (`pip install 'imgcls[onnx]'`), not Rich markup
    console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one line on stderr and exit status 2 (never a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..engine.signals import Interrupted, StopSignals

        try:
            with StopSignals():  # SIGTERM / SIGINT / SIGUSR1 stop any command at once (train saves first)
                return fn(*args, **kwargs)
        except Interrupted as e:
            console.print(str(e), highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except ImgclsError as e:
            from ..engine.launch import record_rank_error

            if record_rank_error(str(e)):  # a rank of `--devices N`: the launcher prints it, once
                raise typer.Exit(getattr(e, "exit_code", 2)) from None
            fail(str(e), getattr(e, "exit_code", 2))
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            sys.exit(0)

    return wrapper


def overrides_from(mapping: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """CLI option values (None = not given) -> dotted config overrides."""
    return {mapping[k]: v for k, v in values.items() if k in mapping and v is not None}
