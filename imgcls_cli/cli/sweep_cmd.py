"""`imgcls sweep`: an ablation grid × seeds, each one an ordinary run; restarting resumes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .common import console, handle_errors
from .common import out as stdout


def split_values(text: str) -> list[str]:
    """`none,se,[1, 2]` -> ["none", "se", "[1, 2]"]: commas inside brackets or quotes stay."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return parts + [cur]


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    import yaml

    from ..errors import ImgclsError

    grid: dict[str, list[Any]] = {}
    for it in items:
        key, sep, vals = it.partition("=")
        if not sep or not key.strip() or not vals.strip():
            raise ImgclsError(f"--grid {it!r}: expected KEY=V1,V2,... with a dotted config key, e.g."
                              f" --grid model.attn=none,se,cbam")
        try:
            grid[key.strip()] = [yaml.safe_load(v.strip()) for v in split_values(vals)]
        except yaml.YAMLError as e:
            raise ImgclsError(f"--grid {it!r}: a value is not valid YAML ({getattr(e, 'problem', e)})") from None
    return grid


def sweep_command(
    config: Path = typer.Option(None, "--config", "-c", help="Base YAML config; its sweep: section (grid, seeds,"
                                " out, jobs, launcher) is read too."),
    grid: list[str] = typer.Option(None, "--grid", help="KEY=V1,V2,...: one grid axis (repeatable), e.g."
                                   " --grid model.attn=none,se,cbam --grid loss.name=ce,arcface."),
    seeds: str = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 0,1,2. [default: 0]"),
    out: str = typer.Option(None, "--out", help="Folder of the sweep's runs (one sub-folder per cell and seed)."
                            " [default: runs/sweep-<time>]"),
    jobs: int = typer.Option(None, "--jobs", "-j", help="Runs at a time (local: the CPU threads are divided)."),
    launcher: str = typer.Option(None, "--launcher", help="local|slurm (slurm: a job array through submitit)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the runs and their count; start nothing."),
    set_: list[str] = typer.Option(None, "--set", help="A base config field (--set train.epochs=2) or a launcher"
                                   " option (--set launcher.partition=gpu), repeatable."),
) -> None:
    """Train every cell of a grid × seeds; invalid cells are listed and skipped, finished runs skipped on restart."""
    from ..errors import ImgclsError
    from ..sweeps import describe, plan_sweep, run_sweep
    from ..sweeps.plan import cell_label
    from .train_cmd import _parse_set

    seed_list = None
    if seeds is not None:
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ImgclsError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if jobs is not None and jobs < 1:
        raise ImgclsError(f"--jobs {jobs}: give 1 or more runs at a time")
    plan = plan_sweep(config, parse_grid(grid or []), seed_list, out, jobs, launcher, _parse_set(set_ or []))
    for line in describe(plan):
        stdout.print(line, markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        for r in plan.runs:
            stdout.print(f"  {r.status:<6} {r.name}  ({cell_label(r.cell)}, seed {r.seed})", markup=False,
                         highlight=False, soft_wrap=True)
        stdout.print(f"{len(plan.runs)} runs, {len(plan.todo())} to start (dry run: nothing started)",
                     markup=False, highlight=False)
        return
    res = run_sweep(plan, report=lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True))
    if res.interrupted is not None:
        console.print(f"interrupted: run the same command again to resume ({plan.out})", highlight=False)
        raise typer.Exit(128 + res.interrupted)
    if res.submitted:
        stdout.print(f"queued; when the array is done: imgcls report {plan.out}", markup=False, highlight=False)
        return
    done = sum(r.status == "done" for r in plan.runs) + sum(r.ok for r in res.results)
    stdout.print(f"{done}/{len(plan.runs)} runs finished; table: imgcls report {plan.out}", markup=False,
                 highlight=False)
    if res.failed:
        raise ImgclsError(f"sweep: {len(res.failed)} run(s) failed (each run's train.log says why), first"
                          f" {res.failed[0].name}: {res.failed[0].message}; run the same command again to retry")


def register(app: typer.Typer) -> None:
    app.command("sweep")(handle_errors(sweep_command))
