"""`imgcls pack DATA OUT.h5`: one HDF5 file holding a data set (encoded bytes or resized arrays)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, handle_errors, out


def pack_command(
    data: str = typer.Argument(..., help="Image-folder root (train/<class>/, val/ or test/) or digits."),
    out_file: Path = typer.Argument(..., metavar="OUT.h5", help="The pack to write (.h5 or .hdf5)."),
    mode: str = typer.Option("encoded", help="encoded: original file bytes (bit-exact); raw: resized uint8 arrays."),
    size: int = typer.Option(None, help="Side of the square uint8 arrays with --mode raw (shorter side, centre crop)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT.h5 if it exists."),
) -> None:
    """Pack a data set into one HDF5 file; train from it with `imgcls train --data OUT.h5`."""
    from ..data.hdf5 import pack_folder
    from ..errors import data_argument

    with data_argument("DATA"):
        rep = pack_folder(data, out_file, mode=mode, size=size, overwrite=overwrite)
    counts = ", ".join(f"{k} {v}" for k, v in rep["counts"].items())
    out.print(f"packed {data} -> {rep['out']} ({rep['mode']}, {rep['classes']} classes; {counts} images;"
              f" {rep['bytes'] / 1e6:.1f} MB)", highlight=False)
    for line in rep["skipped"]:
        console.print(f"[yellow]skipped unreadable image[/yellow] {line}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("pack")(handle_errors(pack_command))
