"""`imgcls sweep`: an ablation grid × seeds, each cell × seed one ordinary run (see `plan`, `launch`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import read_config_file
from ..errors import ImgclsError
from .launch import LocalLauncher, Task, TaskResult, cpu_threads, run_slurm
from .plan import Plan, SweepSpec, build_plan, cell_label, make_spec, write_plan_files

__all__ = ["Plan", "SweepResult", "SweepSpec", "load_sweep_file", "plan_sweep", "run_sweep"]


@dataclass
class SweepResult:
    plan: Plan
    results: list[TaskResult] = field(default_factory=list)
    submitted: bool = False  # slurm without waiting: the array is queued
    interrupted: int | None = None  # the signal that stopped a local sweep

    @property
    def failed(self) -> list[TaskResult]:
        return [r for r in self.results if not r.ok]


def load_sweep_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A YAML file's config sections and its `sweep:` section (empty where it has none)."""

    p = Path(path)
    d = read_config_file(p, "data, model, ..., sweep")
    sweep = d.pop("sweep", None) or {}
    if not isinstance(sweep, dict):
        raise ImgclsError(f"--config {p}: the sweep section must be a mapping (grid, seeds, out, jobs, launcher)")
    return d, sweep


def plan_sweep(config: str | Path | Mapping[str, Any] | None = None, grid: Mapping[str, list[Any]] | None = None,
               seeds: list[int] | None = None, out: str | Path | None = None, jobs: int | None = None,
               launcher: str | Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> Plan:
    """The runs of a sweep and what each needs (done, resume, new); arguments given override the YAML's sweep:."""
    base: dict[str, Any] = {}
    sweep: dict[str, Any] = {}
    source = None
    if isinstance(config, Mapping):
        base = {k: v for k, v in config.items() if k != "sweep"}
        sweep = dict(config.get("sweep") or {})
    elif config is not None:
        base, sweep = load_sweep_file(config)
        source = str(config)
    sweep = dict(sweep)
    if grid:
        sweep["grid"] = {**(sweep.get("grid") or {}), **{k: list(v) for k, v in grid.items()}}
    for key, value in (("seeds", seeds), ("out", None if out is None else str(out)), ("jobs", jobs)):
        if value is not None:
            sweep[key] = value
    lopts = dict(sweep.get("launcher") or {})
    if isinstance(launcher, str):
        lopts["name"] = launcher
    elif launcher:
        lopts.update(launcher)
    cfg_overrides = {}
    for k, v in (overrides or {}).items():  # --set launcher.partition=gpu goes to the launcher
        if k.startswith("launcher."):
            lopts[k.removeprefix("launcher.")] = v
        else:
            cfg_overrides[k] = v
    sweep["launcher"] = lopts
    return build_plan(base, cfg_overrides, make_spec(sweep, source))


def run_sweep(plan: Plan, report: Callable[[str], None] = print) -> SweepResult:
    """Start the runs the plan still needs; finished ones are skipped, those with a checkpoint resumed."""
    todo = plan.todo()
    res = SweepResult(plan)
    if not todo:
        return res
    write_plan_files(plan)
    spec, opts = plan.spec, plan.spec.launcher
    if opts.name == "local":
        threads = max(1, (spec.threads or cpu_threads()) // spec.jobs)
    else:
        threads = opts.cpus_per_task
    tasks = [Task(r.name, str(r.dir), str(plan.out / "configs" / f"{r.name}.yaml"), r.status == "resume", threads)
             for r in todo]
    if opts.name == "local":
        if spec.jobs > 1:
            report(f"{spec.jobs} runs at a time, {threads} CPU thread(s) each")
        launcher = LocalLauncher(spec.jobs, report)
        res.results = launcher.run(tasks)
        res.interrupted = launcher.stopped
    else:
        got = run_slurm(tasks, plan.out / "slurm", opts, spec.jobs, plan.out.name, report)
        res.submitted = got is None
        res.results = got or []
    return res


def describe(plan: Plan) -> list[str]:
    """The plan in lines: its counts, the skipped cells with their reasons, each run and what it needs."""
    n_done = sum(r.status == "done" for r in plan.runs)
    n_res = sum(r.status == "resume" for r in plan.runs)
    valid = len(plan.runs) // max(1, len(plan.spec.seeds))
    lines = [f"sweep {plan.out}: {len(plan.runs)} runs ({valid} cells × {len(plan.spec.seeds)} seeds"
             f"{f'; {len(plan.skipped)} invalid cells skipped' if plan.skipped else ''}): {n_done} finished (skipped),"
             f" {n_res} to resume, {len(plan.runs) - n_done - n_res} new"]
    for s in plan.skipped:
        lines.append(f"  skipped cell {cell_label(s.cell)}: {s.reason}")
    return lines
