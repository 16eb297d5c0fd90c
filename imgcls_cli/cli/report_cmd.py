"""`imgcls report RUN_DIR...`: a results table read from run directories."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import handle_errors
from .common import out as stdout


def _runs_in(folder: Path) -> list[Path]:
    """The run directories in a folder of runs, by name; a link (runs/latest) stands for the run it points at,
    under that run's own name, and a run listed twice (itself and through a link) once."""
    real = [p.parent for p in folder.glob("*/metrics.jsonl") if not p.parent.is_symlink()]
    linked = [p.parent.resolve() for p in folder.glob("*/metrics.jsonl") if p.parent.is_symlink()]
    return sorted(real, key=lambda p: p.name) + sorted(linked, key=lambda p: p.name)


def report_command(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with config.yaml and metrics.jsonl)."),
    fmt: str = typer.Option("md", "--format", help="md|csv."),
    output: Path = typer.Option(None, "--out", help="Write the table to this file too."),
) -> None:
    """Results table (backbone, attention, loss, augmentation, method, data, epochs, top-1/5, shots)."""
    from ..errors import ImgclsError
    from ..report import read_run, table

    if fmt not in ("md", "csv"):
        raise ImgclsError(f"--format {fmt!r}: valid formats are md, csv")
    dirs: list[Path] = []
    seen: set[Path] = set()
    for r in runs:
        if not r.is_dir():
            raise ImgclsError(f"report: {r}: no such folder" if not r.exists() else
                              f"report: {r}: not a folder (give run directories or a folder of runs)")
        found = [r] if (r / "metrics.jsonl").exists() else _runs_in(r)
        for d in found:
            if d.resolve() not in seen:
                seen.add(d.resolve())
                dirs.append(d)
    if not dirs:
        raise ImgclsError(f"report: no run directories found in {', '.join(map(str, runs))}")
    text = table([read_run(d) for d in dirs], fmt)
    stdout.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    if output is not None:
        try:
            output.write_text(text)
        except OSError as e:
            raise ImgclsError(f"--out {output}: cannot write the table ({e.strerror})") from None


def register(app: typer.Typer) -> None:
    app.command("report")(handle_errors(report_command))
