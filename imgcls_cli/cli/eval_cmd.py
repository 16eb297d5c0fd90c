"""`imgcls eval CKPT`: top-1/top-5, per-class accuracy, macro P/R/F1, ECE, confusion matrix (CSV + PNG), the
reliability diagram, the most-confused pairs, a gallery of the most confident mistakes, JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from .common import console, handle_errors, out


def eval_folder(checkpoint: Path, summary: dict[str, Any], own_data: str, tau_norm: str | None,
                classifier: str) -> Path:
    """The folder of one evaluation's files beside the checkpoint, named by what was evaluated, so that evaluating
    other data, another split or another classifier never replaces the run's own results: eval_val,
    eval_val_tau-auto, eval_val_ncm, eval_<other data>_test, ..."""
    from ..engine.eval_api import _same_data

    parts = ["eval"]
    if not _same_data(summary["data"], own_data):
        p = Path(summary["data"])
        parts.append(p.stem if p.suffix.lower() in (".h5", ".hdf5") else p.name or str(p))
    parts.append(str(summary["split"]))
    if tau_norm is not None:
        parts.append(f"tau-{tau_norm}")
    if classifier != "default":
        parts.append(classifier)
    return checkpoint.parent / "_".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", p) for p in parts)


def eval_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) or run directory (uses best.pt)."),
    data: str = typer.Option(None, help="Data to evaluate on [default: the checkpoint's]."),
    split: str = typer.Option(None, help="Split folder: val|test [default: the checkpoint's; with --data,"
                              " that data's val/, else test/]."),
    json_path: Path = typer.Option(None, "--json", help="Write the metrics as JSON here."),
    out_dir: Path = typer.Option(None, "--out", help="Folder for confusion.csv/png [default: beside the checkpoint,"
                                 " eval_<split> or eval_<data>_<split>_<classifier>, one per kind of evaluation]."),
    batch_size: int = typer.Option(None, help="Evaluation batch size."),
    workers: int = typer.Option(None, help="DataLoader workers."),
    device: str = typer.Option("auto", help="auto|cpu|cuda."),
    tau_norm: str = typer.Option(None, "--tau-norm", help="tau-normalise the classifier: TAU or auto (picked on val)."),
    classifier: str = typer.Option("default", "--classifier", help="default|ncm (nearest class mean)."),
) -> None:
    """Evaluate a checkpoint: top-1, top-5, per-class accuracy and the confusion matrix."""
    from ..engine.checkpoint import checkpoint_file
    from ..engine.eval_api import evaluate_checkpoint
    from ..errors import ImgclsError
    from ..viz.plots import confusion_csv, confusion_png, per_class_vs_frequency_png

    checkpoint = checkpoint_file(checkpoint)
    transform, extra = None, {}
    if tau_norm is not None or classifier != "default":
        try:
            from ..methods.decoupling import eval_variant
        except ModuleNotFoundError:
            raise ImgclsError("--tau-norm/--classifier: decoupling methods are not installed in this build") from None
        transform, extra = eval_variant(checkpoint, tau_norm, classifier, data=data, split=split, device=device,
                                        console=console)
    res = evaluate_checkpoint(checkpoint, data, split, batch_size, workers, device, logits_transform=transform)
    s = res.summary
    s.update(extra)
    names = res.ckpt.class_names
    table = Table(title=f"{checkpoint} on {s['data']} [{s['split']}] ({s['n']} images)")
    for col in ("top-1", "top-5", "mean class acc", "macro F1", "ECE"):
        table.add_column(col, justify="right")
    row = [f"{s['top1']:.2f}%", f"{s['top5']:.2f}%", f"{s['mean_class_acc']:.2f}%", f"{s['macro_f1']:.2f}%",
           f"{s['ece']:.2f}%"]
    if res.ckpt.class_counts is not None:
        for k in ("many", "medium", "few"):
            table.add_column(k, justify="right")
            row.append("-" if s.get(k) is None else f"{s[k]:.2f}%")
    table.add_row(*row)
    out.print(table)
    if len(names) <= 40:
        pc = Table(title="per-class accuracy")
        pc.add_column("class")
        pc.add_column("accuracy", justify="right")
        if res.ckpt.class_counts is not None:
            pc.add_column("train images", justify="right")
        for i, n in enumerate(names):
            extra_col = [str(res.ckpt.class_counts[i])] if res.ckpt.class_counts is not None else []
            pc.add_row(n, f"{s['per_class'][n]:.2f}%", *extra_col)
        out.print(pc)
    folder = out_dir or eval_folder(checkpoint, s, res.ckpt.config.data.path, tau_norm, classifier)
    folder.mkdir(parents=True, exist_ok=True)
    confusion_csv(res.result.confusion, names, folder / "confusion.csv")
    confusion_png(res.result.confusion, names, folder / "confusion.png")
    if res.ckpt.class_counts is not None:
        per_class_vs_frequency_png(res.result.per_class, res.ckpt.class_counts, names,
                                   folder / "per_class_vs_frequency.png")
    s["confusion_csv"] = str(folder / "confusion.csv")
    _write_diagnostics(res, folder)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(s, indent=2))
    for line in s.get("skipped", []):
        console.print(f"[yellow]skipped unreadable image[/yellow] {line}")
    metrics = f"; metrics: {json_path}" if json_path else ""
    console.print(f"confusion matrix: {folder / 'confusion.csv'} and .png; reliability.png, confused_pairs.csv,"
                  f" mistakes.png in {folder}{metrics}")


def _write_diagnostics(res, folder: Path) -> None:
    """reliability.png, confused_pairs.csv/.json and mistakes.png (the most confident wrong predictions)."""
    from ..viz.eval_plots import confused_pairs_files, mistakes_gallery_png, reliability_png

    s, names = res.summary, res.ckpt.class_names
    reliability_png(s["reliability"], s["ece"], folder / "reliability.png")
    confused_pairs_files(s["confused_pairs"], folder / "confused_pairs.csv", folder / "confused_pairs.json")
    s.update(reliability_png=str(folder / "reliability.png"), confused_pairs_csv=str(folder / "confused_pairs.csv"))
    if res.source is None:
        return
    s["mistakes"] = [{**m, "file": res.source.describe(m["index"]), "true": names[m["true"]],
                      "pred": names[m["pred"]]} for m in res.result.mistakes]
    if mistakes_gallery_png(res.result.mistakes, res.source, names,
                                                       folder / "mistakes.png"):
        s["mistakes_png"] = str(folder / "mistakes.png")


def register(app: typer.Typer) -> None:
    app.command("eval")(handle_errors(eval_command))
