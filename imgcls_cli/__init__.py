"""imgcls: image-classification research toolkit (CLI `imgcls`, Python API here)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def components() -> dict[str, list[str]]:
    """Registered component names per kind: backbone, attn, head, loss, sampler, method, ..."""
    from .config import load_components
    from .registry import ALL

    load_components()
    return {kind: reg.valid_values() for kind, reg in ALL.items()}


def build_model(backbone: str, num_classes: int, attn: str | None = None, **kw: Any):
    from .api_checks import check_options
    from .models.build import build_model as _build

    check_options(_build, kw, "build_model", skip=("backbone", "num_classes", "attn"))
    return _build(backbone, num_classes, attn=attn, **kw)


def build_loss(name: str, num_classes: int, **kw: Any):
    from .losses import build_loss as _build

    return _build(name, num_classes, **kw)


def load_checkpoint(path: str, device: str = "cpu"):
    """A checkpoint file, or a run folder (its best.pt, as `imgcls eval RUN` takes it), on `device`."""
    from .engine.checkpoint import checkpoint_file
    from .engine.checkpoint import load_checkpoint as _load
    from .engine.device import resolve_device

    dev = resolve_device(str(device))  # an unknown or absent device: one line, before reading the file
    return _load(checkpoint_file(path), dev)


def train(config: Any = None, **overrides: Any):
    """Train from a Config (or YAML path) with dotted overrides: train(**{"model.backbone": "resnet20"})."""
    import os
    from collections.abc import Mapping
    from pathlib import Path

    from .config import Config, build_config, check_schedule
    from .engine.trainer import train as _train
    from .errors import ImgclsError

    if isinstance(config, Config):
        cfg = config.replace(**overrides) if overrides else config
    elif config is None or isinstance(config, (str, Path, Mapping)):  # a YAML path or its sections as a dict
        cfg = build_config(config, overrides)
    else:
        raise ImgclsError(f"config: expected a Config, a dict of sections or a YAML path, got {type(config).__name__}")
    check_schedule(cfg, {k: k for k in overrides})  # the overrides are what the caller gave; a recipe's is noted
    if cfg.train.devices > 1 and "WORLD_SIZE" not in os.environ:
        raise ImgclsError(f"train.devices {cfg.train.devices}: train() runs in this one process; start several with"
                          f" `imgcls train --devices {cfg.train.devices}` or torchrun (docs/distributed.md)")
    return _train(cfg)


def predict(images: Any, checkpoint: Any = None, topk: int | None = None, tta: str | None = None, **kw: Any):
    """Class probabilities of image files/folders with a checkpoint (default: the latest run's best.pt) through its
    evaluation pipeline: a Predictions (.files, .probs (N, C), .class_names, .unreadable, .topk(k), .write(path))."""
    from .api_checks import check_options
    from .inference import predict as _predict

    check_options(_predict, kw, "predict", skip=("images", "checkpoint", "topk", "tta"))
    return _predict(images, checkpoint, topk=topk, tta=tta, **kw)


def cam(model: Any, images: Any, method: str = "gradcam", target: Any = None, layer: str | None = None):
    """Activation maps (B, H, W) in [0, 1] for normalised images (B, 3, H, W)."""
    from .viz.cam import cam as _cam

    return _cam(model, images, method=method, target=target, layer=layer)


def sweep(config: Any = None, grid: Any = None, seeds: Any = None, out: Any = None, jobs: int | None = None,
          launcher: Any = None, dry_run: bool = False, **overrides: Any):
    """Train a grid × seeds: sweep("base.yaml", grid={"model.attn": ["none", "se"]}, seeds=[0, 1]).

    `config`: a YAML path (its `sweep:` section is read too) or a dict of sections; `launcher`: "local",
    "slurm" or a dict of launcher options; the other keywords are dotted config (or `launcher.*`) overrides.
    Returns a SweepResult (`.plan.runs`, `.results`, `.failed`); with dry_run=True nothing is started.
    """
    from .sweeps import SweepResult, plan_sweep, run_sweep

    plan = plan_sweep(config, grid, None if seeds is None else list(seeds), out, jobs, launcher, overrides)
    return SweepResult(plan) if dry_run else run_sweep(plan)


def report_runs(runs: Any, group_by: Any = None, baseline: Any = None, per_run: bool = False):
    """Read run directories (or folders of them) into a Report: `.groups` (mean, std, n; with a baseline each
    group's difference and 95 % CI), `.text("md"|"csv"|"json")`, `.plot(path)`; group_by/baseline as on the CLI.

    (Not `ic.report`: importing the `imgcls_cli.report` module would replace such an attribute.)"""
    from .report_groups import make_report

    return make_report(runs, group_by, baseline, per_run)


__all__ = ["__version__", "build_loss", "build_model", "cam", "components", "load_checkpoint", "predict", "report_runs",
           "sweep", "train"]
