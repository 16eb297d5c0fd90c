"""`imgcls report RUN_DIR...`: a results table read from run directories."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import handle_errors
from .common import out as stdout


def report_command(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with config.yaml and metrics.jsonl)."),
    fmt: str = typer.Option("md", "--format", help="md|csv."),
    output: Path = typer.Option(None, "--out", help="Write the table to this file too."),
    group: bool = typer.Option(False, "--group-seeds", help="One row per recipe: runs whose config.yaml differ only"
                               " in train.seed (and out/name/resume/init_from/workers) as mean ± std."),
) -> None:
    """Results table (backbone, attention, loss, augmentation, method, data, epochs, top-1/5, shots)."""
    from ..errors import ImgclsError
    from ..report import group_seeds, read_rows, table

    if fmt not in ("md", "csv"):
        raise ImgclsError(f"--format {fmt!r}: valid formats are md, csv")
    dirs: list[Path] = []
    seen: set[Path] = set()
    for r in runs:  # a folder of runs is expanded; runs/latest (a link to a run listed anyway) is left out
        found = [r] if (r / "metrics.jsonl").exists() else sorted(p.parent for p in r.glob("*/metrics.jsonl"))
        for d in found:
            if d.resolve() not in seen:
                seen.add(d.resolve())
                dirs.append(d)
    if not dirs:
        raise ImgclsError(f"report: no run directories found in {', '.join(map(str, runs))}")
    rows = [row for d in dirs for row in read_rows(d)]
    text = table(group_seeds(rows) if group else rows, fmt)
    stdout.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    if output is not None:
        try:
            output.write_text(text)
        except OSError as e:
            raise ImgclsError(f"--out {output}: cannot write the table ({e.strerror})") from None


def register(app: typer.Typer) -> None:
    app.command("report")(handle_errors(report_command))
