"""`imgcls train`: options override the YAML config (if any); the resolved config is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from .common import console, handle_errors, overrides_from
from .common import out as stdout

OPTION_PATHS = {
    "data": "data.path", "img_size": "data.img_size", "workers": "data.workers", "sampler": "data.sampler",
    "imbalance_ratio": "data.imbalance_ratio", "val_split": "data.val_split",
    "backbone": "model.backbone", "attn": "model.attn", "head": "model.head", "pretrained": "model.pretrained",
    "weights": "model.weights", "feature_dim": "model.feature_dim", "reduction": "model.reduction",
    "nonlocal_blocks": "model.nonlocal_blocks",
    "loss": "loss.name", "label_smoothing": "loss.label_smoothing", "arcface_s": "loss.arcface_s",
    "arcface_m": "loss.arcface_m", "easy_margin": "loss.easy_margin", "center_weight": "loss.center_weight",
    "center_lr": "loss.center_lr",
    "autoaugment": "aug.autoaugment", "mixup": "aug.mixup", "cutmix": "aug.cutmix", "mix_prob": "aug.mix_prob",
    "switch_prob": "aug.switch_prob",
    "optimizer": "optim.name", "lr": "optim.lr", "weight_decay": "optim.weight_decay",
    "warmup_epochs": "optim.warmup_epochs", "schedule": "optim.schedule", "milestones": "optim.milestones",
    "ema": "optim.ema", "accum_steps": "optim.accum_steps",
    "method": "train.method", "init_from": "train.init_from", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "device": "train.device", "devices": "train.devices", "amp": "train.amp",
    "compile": "train.compile", "channels_last": "train.channels_last", "seed": "train.seed", "out": "train.out",
    "name": "train.name", "resume": "train.resume", "freeze_backbone_epochs": "train.freeze_backbone_epochs",
    "steps_per_epoch": "train.steps_per_epoch", "progress": "train.progress", "sync_bn": "train.sync_bn",
    "tensorboard": "train.tensorboard", "tracker": "train.tracker",
    "keep_checkpoints": "train.keep_checkpoints",
}


def _parse_set(items: list[str]) -> dict[str, Any]:
    from ..errors import ImgclsError

    res = {}
    for it in items:
        key, sep, val = it.partition("=")
        if not sep or not key:
            raise ImgclsError(f"--set {it!r}: expected KEY=VALUE with a dotted key, e.g. optim.momentum=0.95")
        try:
            res[key.strip()] = yaml.safe_load(val)
        except yaml.YAMLError as e:
            reason = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ImgclsError(f"--set {it!r}: the value is not valid YAML ({reason}); quote a string value,"
                              f" e.g. --set 'data.path=\"my dir\"', or give a list as [1, 2]") from None
    return res


def _typed_options(values: dict[str, Any], sets: dict[str, Any]) -> dict[str, str]:
    """Dotted config path -> the option as the user typed it (`--epochs`, `--set optim.momentum`), for errors."""
    import click

    ctx = click.get_current_context(silent=True)
    spelled = {p.name: p.opts[0] for p in (ctx.command.params if ctx else []) if p.opts}
    typed = {OPTION_PATHS[k]: spelled.get(k, "--" + k.replace("_", "-"))
             for k, v in values.items() if k in OPTION_PATHS and v is not None}
    typed.update({k: f"--set {k}" for k in sets})
    return typed


def _base_for_resume(resume: str, ov: dict[str, Any]) -> dict[str, Any]:
    """A resumed run starts from the checkpoint's own config (options given now override it)."""
    from types import SimpleNamespace

    from ..engine.checkpoint import read_checkpoint
    from ..engine.state import resume_path

    where = SimpleNamespace(resume=resume, out=ov.get("train.out"), runs_dir=ov.get("train.runs_dir", "runs"))
    cfg = read_checkpoint(resume_path(SimpleNamespace(train=where)))["config"]  # a file, a run folder, or auto
    # where the run lived then: it continues in the checkpoint's folder unless --out/--name is given now
    cfg.get("train", {}).update(out=None, name=None)
    data = cfg.get("data", {})
    if "data.path" in ov and ov["data.path"] != data.get("path"):  # its splits were resolved for the old data set
        data.pop("val_split", None)
        data.pop("select_split", None)
    return cfg


def train_command(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config; options given here override it."),
    data: str = typer.Option(None, help="Image-folder root (train/<class>/, val/ or test/), .h5 pack, or "
                                       "digits|cifar10|cifar100. [default: digits]"),
    backbone: str = typer.Option(None, help="Backbone (see `imgcls stats --components`). [default: resnet18]"),
    attn: str = typer.Option(None, help="Attention: none|se|cbam|nonlocal|coord."),
    head: str = typer.Option(None, help="Head: linear|cosine|bilinear."),
    pretrained: bool = typer.Option(None, "--pretrained/--no-pretrained",
                                    help="torchvision ImageNet weights (needs network)."),
    weights: str = typer.Option(None, help="torchvision/imgcls state dict file to start from."),
    loss: str = typer.Option(None, help="Loss: ce|arcface|center."),
    label_smoothing: float = typer.Option(None, help="Label smoothing epsilon."),
    arcface_s: float = typer.Option(None, help="ArcFace scale s (64; 30 suits small data)."),
    arcface_m: float = typer.Option(None, help="ArcFace additive angular margin m."),
    easy_margin: bool = typer.Option(None, "--easy-margin/--no-easy-margin", help="ArcFace easy margin."),
    center_weight: float = typer.Option(None, help="Center-loss weight lambda."),
    center_lr: float = typer.Option(None, help="Learning rate of the class centres."),
    feature_dim: int = typer.Option(None, help="Embedding projection width before the head (2 to plot)."),
    autoaugment: str = typer.Option(None, help="AutoAugment policy: imagenet|cifar10|svhn|randaugment|trivialaugment."),
    mixup: float = typer.Option(None, help="Mixup alpha (0 = off)."),
    cutmix: float = typer.Option(None, help="CutMix alpha (0 = off)."),
    mix_prob: float = typer.Option(None, help="Probability of mixing a batch."),
    switch_prob: float = typer.Option(None, help="Probability of CutMix when both are on."),
    sampler: str = typer.Option(None, help="instance|class_balanced|sqrt|progressive|reversed."),
    imbalance_ratio: float = typer.Option(None, help="Make a long-tailed training subset with this ratio."),
    method: str = typer.Option(None, help="standard|bbn|crt|lws|wsdan."),
    init_from: str = typer.Option(None, help="Stage-1 checkpoint or run folder (its best.pt) for cRT, LWS."),
    epochs: int = typer.Option(None, help="Epochs. [default: 10]"),
    batch_size: int = typer.Option(None, help="Batch size per process (default 32)."),
    lr: float = typer.Option(None, help="Base learning rate (default: sgd 0.05 / adamw 0.002 at batch 32, scaled)."),
    optimizer: str = typer.Option(None, help="sgd|adamw (default adamw)."),
    weight_decay: float = typer.Option(None, help="Weight decay (default: sgd 5e-4, adamw 0.05)."),
    warmup_epochs: float = typer.Option(None, help="Linear warm-up epochs (default: 15% of the epochs, at most 1)."),
    schedule: str = typer.Option(None, help="cosine|multistep|constant."),
    milestones: str = typer.Option(None, help="Comma-separated epochs for multistep, e.g. 120,160."),
    ema: float = typer.Option(None, help="EMA decay of weights (e.g. 0.999)."),
    accum_steps: int = typer.Option(None, help="Gradient accumulation steps."),
    img_size: int = typer.Option(None, help="Training resolution. [default: the data set's]"),
    val_split: str = typer.Option(None, "--split", help="Validation split folder: val|test."),
    workers: int = typer.Option(None, help="DataLoader worker processes."),
    device: str = typer.Option(None, help="auto|cpu|cuda|cuda:N."),
    devices: int = typer.Option(None, help="Processes on this node (launches torchrun when > 1)."),
    amp: bool = typer.Option(None, "--amp/--no-amp", help="Mixed precision on CUDA."),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    channels_last: bool = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC memory format."),
    sync_bn: bool = typer.Option(None, "--sync-bn/--no-sync-bn", help="SyncBatchNorm under DDP."),
    reduction: int = typer.Option(None, help="SE/CBAM reduction ratio."),
    nonlocal_blocks: int = typer.Option(None, help="Non-local blocks: 1 or 5."),
    freeze_backbone_epochs: int = typer.Option(None, help="Train only the head for this many epochs."),
    steps_per_epoch: int = typer.Option(None, help="Cap steps per epoch (quick runs)."),
    seed: int = typer.Option(None, help="Random seed. [default: 0]"),
    out: str = typer.Option(None, help="Run directory. [default: runs/<time>-<backbone>-<data>]"),
    name: str = typer.Option(None, help="Run name under runs/."),
    resume: str = typer.Option(None, help="Resume from a checkpoint, a run directory, or 'auto'."),
    keep_checkpoints: int = typer.Option(None, help="Also keep the N newest epoch_NNN.pt (full resume state)."
                                         " [default: 0; last.pt and best.pt are always written]"),
    progress: bool = typer.Option(None, "--progress/--no-progress", help="Show the progress bar."),
    tensorboard: bool = typer.Option(None, "--tensorboard/--no-tensorboard",
                                     help="TensorBoard events in RUN/tensorboard/ (imgcls[tensorboard]). [on]"),
    tracker: str = typer.Option(None, help="none|mlflow: log params, metrics, artifacts to MLFLOW_TRACKING_URI or"
                                " sqlite:///RUN/mlflow.db (imgcls[mlflow])."),
    set_: list[str] = typer.Option(None, "--set", help="Any config field: --set optim.momentum=0.95 (repeatable)."),
) -> None:
    """Train a model.  With no options: ResNet-20 (chosen for 32-px images) on the built-in digits data, under a minute
    on a CPU; the defaults chosen from the data are printed at the start."""
    from ..config import _set_dotted, build_config, check_schedule, config_from_dict
    from ..errors import ImgclsError

    values = dict(locals())
    if milestones is not None:
        try:
            values["milestones"] = [int(m) for m in milestones.split(",") if m.strip()]
        except ValueError:
            raise ImgclsError(f"--milestones {milestones!r}: expected comma-separated epochs, e.g. 120,160") from None
    ov = overrides_from(OPTION_PATHS, values)
    sets = _parse_set(set_ or [])
    ov.update(sets)
    typed = _typed_options(values, sets)
    if resume and "train.out" not in ov and "train.name" not in ov:
        # a config file's out/name is where a new run from it goes; resuming continues in the checkpoint's folder
        ov.update({"train.out": None, "train.name": None})
    base = _base_for_resume(resume, ov) if resume and config is None else None
    if base is not None:
        for k, v in ov.items():
            _set_dotted(base, k, v)
        cfg = config_from_dict(base, source=f"--resume {resume}", options=typed)
    else:
        cfg = build_config(config, ov, typed)
    check_schedule(cfg, typed)  # a warm-up / freeze typed now that the run has no room for; a recipe's is noted
    if cfg.train.devices > 1:
        from ..engine.launch import maybe_launch

        if maybe_launch(cfg.train.devices):
            return
    from ..engine.trainer import train

    res = train(cfg, console=console)
    from ..engine import distributed as dist

    if dist.is_main() and res.best_epoch < 0:  # nothing was evaluated: best.pt is the last epoch
        stdout.print(f"no validation split (val/ or test/), so no val top-1; best.pt is the last epoch;"
                     f" run directory: {res.run_dir}")
    elif dist.is_main():
        stdout.print(f"best val top-1 {res.best_top1:.2f}% (epoch {res.best_epoch}); run directory: {res.run_dir}")


def register(app: typer.Typer) -> None:
    app.command("train")(handle_errors(train_command))
