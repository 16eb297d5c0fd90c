"""`imgcls predict IMAGES|FOLDER`: top-k classes and probabilities of a checkpoint; CSV or JSON."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import console, handle_errors, out


def predict_command(
    images: list[Path] = typer.Argument(..., help="Image files or folders of images (recursively)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c",
                                    help="Checkpoint (.pt) or run directory [default: the latest run's best.pt]."),
    topk: int = typer.Option(None, "--topk", help="Classes per image, 1..number of classes. [default: 5 or fewer]"),
    out_file: Path = typer.Option(None, "--out", help="Write the predictions to preds.csv or preds.json."),
    tta: str = typer.Option(None, "--tta", help="Test-time augmentation: flip (mean of image and mirror softmax)."),
    batch_size: int = typer.Option(None, help="Batch size [default: the checkpoint's evaluation batch size]."),
    workers: int = typer.Option(0, help="DataLoader worker processes."),
    device: str = typer.Option("auto", help="auto|cpu|cuda."),
    show: int = typer.Option(20, help="Rows printed to the terminal (all go to --out)."),
) -> None:
    """Classify images with a trained checkpoint, through its evaluation preprocessing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..errors import ImgclsError
    from ..inference import check_out, predict

    check_out(out_file)
    bar = Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console, transient=True, disable=not console.is_terminal)
    with bar:
        task = bar.add_task("predict", total=None)
        res = predict(images, checkpoint, topk, tta, batch_size, workers, device,
                      progress=lambda done, total: bar.update(task, completed=done, total=total))
    for f, reason in res.unreadable:
        console.print(f"[yellow]unreadable image[/yellow] {f}: {reason}", highlight=False)
    if not res.files:
        raise ImgclsError(f"IMAGES: none of the {len(res.unreadable)} file(s) could be read")
    k = min(5, len(res.class_names)) if topk is None else topk
    rows = res.topk(k)
    bad = f" ({len(res.unreadable)} unreadable)" if res.unreadable else ""
    table = Table(title=f"{res.checkpoint}: top-{k} of {len(res.files)} image(s){bad}" + (" [tta flip]" if tta else ""))
    table.add_column("image")
    table.add_column("prediction")
    table.add_column("prob", justify="right")
    if k > 1:
        table.add_column(f"next {k - 1}")
    for r in rows[:show]:
        first, rest = r["top"][0], r["top"][1:]
        extra = [", ".join(f"{t['class']} {t['prob']:.2f}" for t in rest)] if k > 1 else []
        table.add_row(r["file"], first["class"], f"{first['prob']:.3f}", *extra)
    out.print(table)
    if len(rows) > show:
        console.print(f"... {len(rows) - show} more" + ("" if out_file else " (write them all with --out preds.csv)"))
    if out_file is not None:
        res.write(out_file, k)
        console.print(f"predictions: {out_file}")


def register(app: typer.Typer) -> None:
    app.command("predict")(handle_errors(predict_command))
