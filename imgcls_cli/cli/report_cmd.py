"""`imgcls report RUN_DIR...`: a results table read from run directories, grouped over seeds."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, handle_errors
from .common import out as stdout


def report_command(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with config.yaml and metrics.jsonl),"
                                                " or folders of them (a sweep's --out)."),
    fmt: str = typer.Option("md", "--format", help="md|csv|json|rich."),
    output: Path = typer.Option(None, "--out", help="Write the table to this file too."),
    group_by: str = typer.Option(None, "--group-by", help="Group by these config keys only, e.g."
                                 " model.attn,loss.name. [default: runs that differ only in the seed]"),
    baseline: str = typer.Option(None, "--baseline", help="The group to compare with, e.g. attn=none,loss=ce:"
                                 " each group's difference in top-1 with a 95% CI (paired by seed, else Welch)."),
    plot: Path = typer.Option(None, "--plot", help="Draw the groups with ± std error bars into this PNG."),
    per_run: bool = typer.Option(False, "--per-run", help="One row per run, even where runs share a recipe."),
) -> None:
    """Results table: one row per recipe (mean ± std over seeds, n), or per run where every recipe ran once."""
    from ..errors import ImgclsError
    from ..report_groups import FORMATS, make_report
    from .train_cmd import OPTION_PATHS

    if fmt not in FORMATS:
        raise ImgclsError(f"--format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    if plot is not None and per_run:
        raise ImgclsError("--plot draws the groups; leave out --per-run")
    rep = make_report(runs, group_by, baseline, per_run, aliases=OPTION_PATHS)  # --baseline attn=none: CLI names
    for g in rep.groups if rep.grouped else []:
        if g.pooled:
            console.print(f"note: group {g.name()} pools runs that differ in {', '.join(g.pooled)}",
                          highlight=False, soft_wrap=True)
    if fmt == "rich":
        stdout.print(rep.rich())
        text = rep.text("md")
    else:
        text = rep.text(fmt)
        stdout.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    if output is not None:
        try:
            output.write_text(text)
        except OSError as e:
            raise ImgclsError(f"--out {output}: cannot write the table ({e.strerror})") from None
    if plot is not None:
        try:
            rep.plot(plot)
        except OSError as e:
            raise ImgclsError(f"--plot {plot}: cannot write the figure ({e.strerror})") from None
        console.print(f"plot: {plot}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(handle_errors(report_command))
