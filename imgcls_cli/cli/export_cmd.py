"""`imgcls export CKPT --format onnx|torchscript`: export, then verify against the eager model."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import handle_errors, out


def export_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) or run directory (uses best.pt)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx|torchscript."),
    out_file: Path = typer.Option(None, "--out", help="Output file [default: the checkpoint with .onnx / .ts]."),
    opset: int = typer.Option(None, help="ONNX opset version, 7..20 [default: 17]."),
) -> None:
    """Export a checkpoint's model (normalised float input, dynamic batch) and check it at batch 1, 2, 7."""
    from ..engine.checkpoint import checkpoint_file
    from ..export import export_checkpoint

    checkpoint = checkpoint_file(checkpoint)
    rep = export_checkpoint(checkpoint, fmt, out_file, opset)
    errs = ", ".join(f"batch {b}: {e:.2e}" for b, e in rep.max_abs_err.items())
    out.print(f"exported {checkpoint} -> {rep.out} ({rep.format}, input images (B, 3, {rep.metadata['img_size']},"
              f" {rep.metadata['img_size']}) normalised)", highlight=False, soft_wrap=True)
    out.print(f"verified against the eager model, max abs error {errs}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("export")(handle_errors(export_command))
