"""What a sweep runs: the base config × every cell of a grid of overrides × seeds.

Each cell × seed is one ordinary run directory `OUT/<name>` (its resolved `config.yaml`, metrics,
checkpoints), trained by a normal `imgcls train --config OUT/configs/<name>.yaml`.  A cell whose
options are invalid together is listed with the config's one-line reason and skipped.  Planning
again over the same OUT looks at each run's files: finished runs are skipped, runs with a
checkpoint are resumed, and a run directory that holds another config stops the sweep (it is
never overwritten).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import Config, build_config, check_schedule, format_validation_error
from ..errors import ImgclsError
from ..report_stats import NOT_RECIPE, SEED, flatten, short_key

# set by the sweep itself for every run; a grid over them would fight it
SWEEP_OWNED = (SEED, "train.out", "train.name", "train.resume", "train.runs_dir")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LauncherOptions(_Frozen):
    """How the runs are started: `local` processes here, or a SLURM job array through submitit."""

    name: Literal["local", "slurm"] = "local"
    cluster: Literal["slurm", "local", "debug"] = Field(
        "slurm", description="submitit executor of --launcher slurm; local/debug run the same submission here")
    partition: str | None = None
    gpus_per_task: int = Field(0, ge=0, description="GPUs of each run (set train.devices to use them all)")
    cpus_per_task: int | None = Field(None, ge=1, description="also each run's thread count")
    time: int = Field(24 * 60, ge=1, description="time limit of each run in minutes (or H:MM:SS, D-H:MM:SS)")
    mem_gb: float | None = Field(None, gt=0)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = Field(default_factory=list, description="shell lines run before each task (module load ...)")
    wait: bool = Field(False, description="slurm: wait for the array to finish and summarise it")

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        if not isinstance(v, str) or v.strip().isdigit():
            return v
        m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})", v.strip())
        if not m:
            raise ValueError(f"{v!r} is not minutes, H:MM:SS or D-H:MM:SS")
        d, h, mi, s = (int(x or 0) for x in m.groups())
        return d * 1440 + h * 60 + mi + (1 if s else 0)


class SweepSpec(_Frozen):
    """The `sweep:` section of a YAML file (command-line options override it)."""

    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted config key -> values")
    seeds: list[int] = Field(default_factory=lambda: [0])
    out: str | None = Field(None, description="folder of the sweep's runs; default runs/sweep-<time>")
    jobs: int = Field(1, ge=1, description="runs at once (local processes, or the SLURM array's parallelism)")
    threads: int | None = Field(None, ge=1, description="local: CPU threads shared by the jobs; default: all")
    launcher: LauncherOptions = LauncherOptions()

    @field_validator("grid")
    @classmethod
    def _grid(cls, g: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in g.items():
            if key in SWEEP_OWNED:
                hint = "give the seeds with --seeds" if key == SEED else "the sweep names each run's folder"
                raise ValueError(f"{key}: set by the sweep for every run ({hint})")
            if not values:
                raise ValueError(f"{key}: give at least one value")
            if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
                raise ValueError(f"{key}: a value is listed twice ({values})")
        return g

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, s: list[int]) -> list[int]:
        if not s or len(set(s)) != len(s):
            raise ValueError(f"{','.join(map(str, s))}: give one or more distinct seeds")
        return s


def make_spec(d: dict[str, Any], source: str | None = None) -> SweepSpec:
    """`source`: the YAML file the sweep: section came from; errors read `FILE: sweep.KEY: reason`."""
    try:
        return SweepSpec.model_validate(d)
    except ValidationError as e:
        msg = format_validation_error(e, "options")
        raise ImgclsError(f"{source + ': ' if source else ''}sweep.{msg}") from None


@dataclass(frozen=True)
class PlannedRun:
    name: str
    dir: Path
    cell: dict[str, Any]
    seed: int
    config: Config
    status: Literal["done", "resume", "new"]
    detail: str = ""


@dataclass(frozen=True)
class SkippedCell:
    cell: dict[str, Any]
    reason: str


@dataclass(frozen=True)
class Plan:
    out: Path
    spec: SweepSpec
    runs: list[PlannedRun]
    skipped: list[SkippedCell]
    sections: dict[str, Any]  # the base config's sections with the overrides applied (for OUT/sweep.yaml)

    @property
    def cells(self) -> int:
        return len(self.runs) // max(1, len(self.spec.seeds)) + len(self.skipped)

    def todo(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.status != "done"]


def cell_label(cell: dict[str, Any]) -> str:
    return ", ".join(f"{short_key(k, cell)}={v}" for k, v in cell.items()) or "base config"


def _slug(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", Path(s).name if isinstance(v, str) and "/" in s else s).strip("-") or "x"


def run_name(cell: dict[str, Any], seed: int) -> str:
    parts = [f"{short_key(k, cell)}-{_slug(v)}" for k, v in cell.items()] + [f"seed{seed}"]
    name = "_".join(parts)
    if len(name) > 100:
        digest = hashlib.sha1(json.dumps(cell, sort_keys=True, default=str).encode()).hexdigest()[:8]
        name = f"{name[:80]}-{digest}_seed{seed}"
    return name


def run_finished(run_dir: Path, cfg: Config) -> bool:
    """A run is finished once its final evaluation is written, or (older runs) its last epoch is logged."""
    if (run_dir / "final_eval.json").is_file():
        return True
    met = run_dir / "metrics.jsonl"
    if not met.is_file():
        return False
    epochs = []
    for line in met.read_text().splitlines():
        try:
            epochs.append(int(json.loads(line).get("epoch", 0)))
        except (ValueError, AttributeError, TypeError):  # a line cut short by the kill
            continue
    return bool(epochs) and max(epochs) >= cfg.train.epochs


def _check_same(run_dir: Path, cfg: Config) -> None:
    """A run folder of this sweep must hold this run: never continue (or skip) another config's run there."""
    import yaml

    p = run_dir / "config.yaml"
    if not p.is_file():
        return
    try:
        saved = flatten(yaml.safe_load(p.read_text()) or {})
    except (yaml.YAMLError, AttributeError):
        raise ImgclsError(f"{p}: not a readable run config; remove {run_dir} or choose another --out") from None
    for key, now in flatten(cfg.to_dict()).items():
        if now in (None, "auto") or key in NOT_RECIPE or key not in saved:  # the data set's default, resolved there
            continue
        then = saved[key]
        if json.dumps(then, default=str) != json.dumps(now, default=str):
            raise ImgclsError(f"{run_dir}: holds a run with {key}={then!r}, this sweep asks {key}={now!r}; continue"
                              f" that sweep with its own settings, remove {run_dir}, or choose another --out")


def _status(run_dir: Path, cfg: Config) -> tuple[str, str]:
    if not run_dir.exists():
        return "new", ""
    _check_same(run_dir, cfg)
    if run_finished(run_dir, cfg):
        return "done", "finished"
    if any((run_dir / n).exists() for n in ("last.pt", "best.pt")) or any(run_dir.glob("epoch_*.pt")):
        return "resume", "has a checkpoint"
    return "new", ""


def build_plan(base: dict[str, Any], overrides: dict[str, Any], spec: SweepSpec) -> Plan:
    """Validate every cell × seed; nothing is written."""
    from ..config import _with_overrides

    out = Path(spec.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    spec = spec.model_copy(update={"out": str(out)})
    keys = list(spec.grid)
    runs: list[PlannedRun] = []
    skipped: list[SkippedCell] = []
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        cell = dict(zip(keys, values, strict=True))
        try:  # progress bars off: each run's output goes to its train.log
            cfg0 = build_config(base, {**overrides, **cell, "train.progress": False})
            check_schedule(cfg0, {k: k for k in {**overrides, **cell}})  # a base recipe's warm-up is only noted
        except ImgclsError as e:
            skipped.append(SkippedCell(cell, str(e).removeprefix("config: ")))
            continue
        for seed in spec.seeds:
            name = run_name(cell, seed)
            cfg = cfg0.replace(**{SEED: seed, "train.out": str(out / name)})
            status, detail = _status(out / name, cfg)
            runs.append(PlannedRun(name, out / name, cell, seed, cfg, status, detail))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ImgclsError(f"--grid: two cells get the run name {dup!r} (their values read the same in a folder"
                          f" name); give the values distinct spellings")
    if not runs:
        reason = skipped[0].reason if skipped else "the grid is empty"
        raise ImgclsError(f"sweep: no valid cell to run (first reason: {reason})")
    return Plan(out, spec, runs, skipped, _with_overrides(base, overrides))


def write_plan_files(plan: Plan) -> None:
    """OUT/sweep.yaml (`imgcls sweep --config OUT/sweep.yaml` continues this sweep) and each run's config."""
    import yaml

    plan.out.mkdir(parents=True, exist_ok=True)
    (plan.out / "configs").mkdir(exist_ok=True)
    sweep_yaml = {**plan.sections, "sweep": plan.spec.model_dump(mode="json")}
    (plan.out / "sweep.yaml").write_text(yaml.safe_dump(sweep_yaml, sort_keys=False))
    for r in plan.todo():
        (plan.out / "configs" / f"{r.name}.yaml").write_text(r.config.to_yaml())
