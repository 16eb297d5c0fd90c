"""The one configuration tree: frozen Pydantic v2 models with `extra="forbid"`.

A run is fully described by a `Config`; `config.yaml` in the run directory is its resolved,
validated form and `imgcls train --config RUN/config.yaml` reproduces the run.  Component names
are checked against the registries; cross-component rules live in `model_validator`s with a
one-line reason each.  `None` in a field marked "data-set default" is resolved when the data set
is opened (see `engine.setup.resolve_config`) and the resolved value is what gets saved.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ImgclsError
from .registry import ALL


def load_components() -> None:
    """Import every component module so that the registries are filled."""
    importlib.import_module("imgcls_cli.components_all")


def _check(kind: str, name: str | None) -> str | None:
    if name is None:
        return name
    load_components()
    reg = ALL[kind]
    if name not in reg:
        raise ValueError(reg.unknown_message(name))
    return name


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class DataConfig(Frozen):
    path: str = Field("digits", description="image-folder root, HDF5 pack, or digits|cifar10|cifar100")
    img_size: int | None = Field(None, ge=8, le=2048, description="training/eval resolution; data-set default")
    val_split: str | None = Field(None, description="the reported held-out split: test when the tree has val/ and"
                                  " test/, else the one that exists")
    select_split: Literal["auto", "val", "carve", "none"] = Field(
        "auto", description="where the best checkpoint, tau and any auto-tuned value are chosen; never the reported"
        " split. val: the tree's val/ (when test/ is reported); carve: data.carve_per_class images a class held out"
        " of the training images (seeded); none: no selection (best.pt = last epoch). auto: val, else carve")
    carve_per_class: int = Field(20, ge=1, description="images a class in a carved selection split (at most a fifth"
                                 " of the class); for a long-tailed subset taken from the images it leaves unused")
    carve_seed: int = Field(0, ge=0, description="seed of the carved selection split")
    workers: int = Field(2, ge=0, le=256)
    pin_memory: bool = True
    cache_dir: str = Field("~/.cache/imgcls", description="download folder for named torchvision data sets")
    imbalance_ratio: float | None = Field(None, ge=1.0, description="make a long-tailed training subset")
    imbalance_profile: Literal["exp", "step"] = "exp"
    sampler: str = "instance"
    progressive_epochs: int | None = Field(None, ge=1, description="T of the progressive sampler; default: epochs")
    max_train_per_class: int | None = Field(None, ge=1)
    decoder: Literal["auto", "pil", "simplejpeg", "cv2"] = "auto"
    decode: Literal["workers", "device"] = Field(
        "workers", description="workers: loader workers decode, crop and flip (libjpeg-turbo); device: workers read the"
        " bytes and draw the crop, the training device decodes the batch's JPEGs (nvJPEG on CUDA) and crops/flips;"
        " training batches only, random-resized crop + flip only")

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        return _check("sampler", v)


class AugConfig(Frozen):
    preset: Literal["pad_crop", "random_resized_crop"] | None = Field(
        None, description="training crop; data-set default. pad_crop: the CIFAR protocol (zero-pad aug.pad pixels,"
        " random img_size crop, flip; evaluated as it is); random_resized_crop: the ImageNet one")
    pad: int = Field(4, ge=0, le=64, description="pad_crop: zero padding on each side, in pixels")
    crop_scale: tuple[float, float] | None = Field(None, description="random-resized-crop scale; data-set default")
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float | None = Field(None, ge=0.0, le=1.0, description="flip probability; data-set default")
    color_jitter: float = Field(0.0, ge=0.0, le=1.0)
    eval_crop_pct: float | None = Field(None, gt=0.0, le=1.0, description="resize to img_size/pct, centre crop"
                                        " img_size; default 1.0 with pad_crop (the image as it is), else 0.875")
    autoaugment: str | None = None
    mixup: float = Field(0.0, ge=0.0, description="Mixup Beta(alpha, alpha); 0 = off")
    cutmix: float = Field(0.0, ge=0.0, description="CutMix Beta(alpha, alpha); 0 = off")
    mix_prob: float = Field(1.0, ge=0.0, le=1.0)
    switch_prob: float = Field(0.5, ge=0.0, le=1.0, description="chance of CutMix when both are on")

    @field_validator("autoaugment")
    @classmethod
    def _aa(cls, v: str | None) -> str | None:
        return None if v in (None, "none") else _check("autoaugment", v)

    @model_validator(mode="after")
    def _ranges(self) -> AugConfig:
        if self.crop_scale is not None and not (0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
            raise ValueError("aug.crop_scale must satisfy 0 < min <= max <= 1")
        if self.preset == "pad_crop" and self.crop_scale is not None:
            raise ValueError("aug.crop_scale is the random-resized crop's; aug.preset=pad_crop does not use it"
                             " (drop it, or set aug.preset=random_resized_crop)")
        return self


class ModelConfig(Frozen):
    backbone: str | None = Field(None, description="data-set default: resnet20 (CIFAR-style: 3x3 stem, no max-pool)"
                                 " for images of 64 px or less, else resnet18")
    attn: str = "none"
    head: str = "linear"
    pretrained: bool = False
    weights: str | None = Field(None, description="torchvision or imgcls state dict file")
    feature_dim: int | None = Field(None, ge=1, description="embedding projection before the head (e.g. 2 to plot)")
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    zero_init_residual: bool = False
    # attention options
    reduction: int = Field(16, ge=1, description="SE/CBAM channel reduction ratio r")
    nonlocal_blocks: Literal[1, 5] = 1
    cbam_kernel: int = Field(7, ge=1, description="CBAM spatial-gate kernel size")
    # bilinear / WS-DAN
    bilinear_two_stream: bool = False
    wsdan_maps: int = Field(32, ge=1)

    @field_validator("backbone")
    @classmethod
    def _bb(cls, v: str | None) -> str | None:
        return _check("backbone", v)

    @field_validator("attn")
    @classmethod
    def _attn(cls, v: str) -> str:
        return "none" if v in (None, "none") else _check("attn", v)

    @field_validator("head")
    @classmethod
    def _head(cls, v: str) -> str:
        return _check("head", v)

    @field_validator("cbam_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("model.cbam_kernel must be odd")
        return v

    @model_validator(mode="after")
    def _attn_options(self) -> ModelConfig:
        # an attention option the chosen module does not use would be silently ignored: refuse it
        used = set(ALL["attn"].meta(self.attn).get("options", {})) if self.attn != "none" else set()
        for name in ("reduction", "cbam_kernel", "nonlocal_blocks"):
            if name not in used and getattr(self, name) != type(self).model_fields[name].default:
                users = [a for a in ALL["attn"].names() if name in ALL["attn"].meta(a).get("options", {})]
                raise ValueError(f"model.{name} is used only by --attn {'|'.join(users)}, not --attn {self.attn}")
        return self


class LossConfig(Frozen):
    name: str = "ce"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    arcface_s: float = Field(64.0, gt=0.0)
    arcface_m: float = Field(0.5, ge=0.0, lt=1.6)
    easy_margin: bool = False
    center_weight: float = Field(0.003, ge=0.0, description="lambda of center loss")
    center_lr: float = Field(0.5, gt=0.0)
    center_update: Literal["sgd", "paper"] = "sgd"
    center_alpha: float = Field(0.5, gt=0.0, le=1.0, description="paper update rate alpha")
    center_on: Literal["ce", "arcface"] = Field("ce", description="classification loss combined with center loss")

    @field_validator("name")
    @classmethod
    def _loss(cls, v: str) -> str:
        return _check("loss", v)


class OptimConfig(Frozen):
    name: Literal["sgd", "adamw"] = "adamw"
    lr: float | None = Field(None, gt=0.0, description="default: the optimizer's base rate (sgd 0.05, adamw 0.002) at"
                             " a global batch of 32, scaled to the global batch (batch x processes x accum steps):"
                             " linearly for sgd, by the square root for adamw")
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float | None = Field(None, ge=0.0, description="default: sgd 5e-4, adamw 0.05")
    no_wd_bn_bias: bool = True
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    warmup_epochs: float | None = Field(None, ge=0.0, description="linear warm-up, per step; default: 15% of the"
                                        " epochs, at most 1")
    milestones: tuple[int, ...] = ()
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    min_lr: float = Field(0.0, ge=0.0)
    accum_steps: int = Field(1, ge=1)
    ema: float | None = Field(None, gt=0.0, lt=1.0, description="EMA decay of the weights; None = off")
    ema_warmup_power: float | None = Field(
        0.75, gt=0.0, le=1.0, description="EMA decay warm-up d_t = min(ema, 1 - (1 + t)^-power) (timm ModelEmaV3);"
        " 3/4 for runs under ~1M steps, 2/3 above; None = constant decay from the first step")
    grad_clip: float | None = Field(None, gt=0.0)
    fused: bool | None = Field(None, description="fused optimizer kernels, else foreach; default: fused on CUDA, CPU")


class TrainConfig(Frozen):
    method: str = "standard"
    init_from: str | None = Field(None, description="stage-1 checkpoint for cRT/LWS")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1, description="per process; the global batch is batch x processes x accum steps")
    eval_batch_size: int | None = Field(None, ge=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps")
    devices: int = Field(1, ge=1, description="processes on this node (torchrun)")
    amp: bool = Field(True, description="bf16/fp16 autocast on CUDA")
    cpu_amp: bool = Field(False, description="bf16 autocast on the CPU as well (fast where the CPU has AMX)")
    amp_dtype: Literal["bf16", "fp16"] = "bf16"
    channels_last: bool | None = Field(None, description="default: on for CUDA, and on the CPU with cpu_amp")
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune"] = Field(
        "default", description="torch.compile mode with --compile; reduce-overhead/max-autotune add CUDA graphs")
    fuse_attention: bool = Field(True, description="CUDA training: SE/CBAM/CA gates as compiled, fused regions")
    trim_convs: bool = Field(True, description="CPU: convs skip kernel taps that only read zero padding (exact)")
    sync_bn: bool = False
    seed: int = 0
    deterministic: bool = False
    out: str | None = None
    runs_dir: str = "runs"
    name: str | None = None
    resume: str | None = Field(None, description="checkpoint or run directory, or 'auto'")
    keep_checkpoints: int = Field(0, ge=0, description="epoch_NNN.pt files (full resume state) kept besides last.pt"
                                  " (resume state) and best.pt (weights only); 0 = none")
    eval_every: int = Field(1, ge=1)
    log_every: int = Field(10, ge=1)
    max_bad_steps: int = Field(5, ge=1, description="stop after this many consecutive non-finite steps")
    steps_per_epoch: int | None = Field(None, ge=1, description="cap on steps per epoch (quick runs)")
    freeze_backbone_epochs: int = Field(0, ge=0, description="train the head only for this many epochs")
    bbn_schedule: Literal["parabolic", "official"] = "parabolic"
    wsdan_beta: float = Field(0.05, gt=0.0, le=1.0)
    progress: bool = True
    tensorboard: bool = Field(True, description="write TensorBoard events to RUN/tensorboard/ (needs the"
                              " tensorboard package: imgcls[tensorboard]; without it the run says so once)")
    tracker: Literal["none", "mlflow"] = Field(
        "none", description="mlflow: log params, metrics and artifacts to MLFLOW_TRACKING_URI, else to"
        " sqlite:///RUN/mlflow.db (imgcls[mlflow])")
    curves: bool = Field(True, description="redraw RUN/training_curves.png (loss, top-1, LR per epoch) each epoch")
    finite_check: Literal["step", "log"] = Field(
        "step", description="step: skip each non-finite step on the device (no per-step host sync with fused"
        " optimizers; reported at the next progress update); log: no checks, stop at the next progress update if"
        " the loss went non-finite")
    log_steps: bool = Field(False, description="write steps.jsonl: the loss of every optimizer step (costs a sync)")
    freeze_bn: bool = Field(False, description="BN uses and keeps its running statistics (small batches)")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _check("method", v)

    @model_validator(mode="after")
    def _compile_mode(self) -> TrainConfig:
        if self.compile_mode != "default" and not self.compile:
            raise ValueError(f"train.compile_mode={self.compile_mode} needs --compile (or leave it at default)")
        return self


class Config(Frozen):
    data: DataConfig = DataConfig()
    aug: AugConfig = AugConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, d: Any) -> Any:
        """A method may supply the sampler default (cRT/LWS: class_balanced); a sampler the user gave is kept."""
        if not isinstance(d, dict) or not isinstance(d.get("train"), dict) or not d["train"].get("method"):
            return d
        data = d.get("data") or {}
        given = "sampler" in (data if isinstance(data, dict) else data.model_fields_set)
        load_components()
        if given or d["train"]["method"] not in ALL["method"]:
            return d
        default = getattr(ALL["method"].get(d["train"]["method"]), "default_sampler", None)
        if default is None:
            return d
        data = dict(data) if isinstance(data, dict) else data.model_dump()
        return {**d, "data": {**data, "sampler": default}}

    @model_validator(mode="before")
    @classmethod
    def _loss_head(cls, d: Any) -> Any:
        """ArcFace (also as center loss's classifier) trains on cosine logits, so a linear head is built as the
        cosine one; resolving it here makes config.yaml, `imgcls stats` and the checkpoint say what was built."""
        if not isinstance(d, dict) or not isinstance(d.get("loss"), (dict, LossConfig)):
            return d
        loss = d["loss"] if isinstance(d["loss"], dict) else d["loss"].model_dump()
        arc = loss.get("name") == "arcface" or (loss.get("name") == "center" and loss.get("center_on") == "arcface")
        model = d.get("model") or {}
        model = model if isinstance(model, dict) else model.model_dump()
        if not arc or model.get("head", "linear") != "linear":
            return d
        return {**d, "model": {**model, "head": "cosine"}}

    @model_validator(mode="after")
    def _combinations(self) -> Config:
        mixing = self.aug.mixup > 0 or self.aug.cutmix > 0
        fams = getattr(ALL["method"].get(self.train.method), "backbone_families", None)
        family = ALL["backbone"].meta(self.model.backbone).get("family") if self.model.backbone else None
        if fams and family is not None and family not in fams:
            ok = [b for b in ALL["backbone"].names() if ALL["backbone"].meta(b).get("family") in fams]
            raise ValueError(f"--method {self.train.method} supports {'/'.join(fams)} backbones only; --backbone"
                             f" {self.model.backbone} is {family} (valid: {', '.join(ok)})")
        if self.train.method == "bbn" and (self.loss.name == "center" or self.model.feature_dim):
            raise ValueError("--method bbn: --loss center and --feature-dim are not supported with its two-branch head")
        if self.loss.name == "arcface" and self.model.head not in ("linear", "cosine"):
            raise ValueError(f"--loss arcface needs a cosine head; --head {self.model.head} cannot give cosine logits")
        cosine_ok = self.model.head in ("linear", "cosine")
        if self.loss.name == "center" and self.loss.center_on == "arcface" and not cosine_ok:
            raise ValueError("--loss center with ArcFace needs a cosine head")
        if self.loss.name == "center" and mixing:
            raise ValueError("--loss center pulls features to the centre of their hard label; Mixup/CutMix"
                             " (soft labels) are not supported with it")
        if self.train.method in ("crt", "lws") and not self.train.init_from:
            raise ValueError(f"--method {self.train.method} is a second stage: give the stage-1 checkpoint"
                             " with --init-from")
        if self.train.init_from and self.train.method not in ("crt", "lws"):
            raise ValueError(f"--init-from is the stage-1 checkpoint of --method crt|lws; --method {self.train.method}"
                             " would ignore it (to start from its weights use --weights FILE)")
        if self.train.method == "bbn" and mixing:
            raise ValueError("--method bbn mixes its own two samplers; Mixup/CutMix are not supported with it")
        if self.train.method == "wsdan" and mixing:
            raise ValueError("--method wsdan crops by attention per image; Mixup/CutMix are not supported with it")
        if self.data.decode == "device":  # the device path does random-resized crop + flip, nothing else
            a = self.aug
            if a.preset == "pad_crop":
                raise ValueError("data.decode=device does random-resized crop and flip only; aug.preset=pad_crop"
                                 " needs the worker path (valid: aug.preset=random_resized_crop, or"
                                 " data.decode=workers)")
            for given, what, valid in ((a.autoaugment, f"--autoaugment {a.autoaugment}", "--autoaugment none"),
                                       (a.color_jitter > 0, f"aug.color_jitter={a.color_jitter}", "aug.color_jitter=0"),
                                       (self.data.decoder != "auto", f"data.decoder={self.data.decoder}",
                                        "data.decoder=auto")):
                if given:
                    raise ValueError(f"data.decode=device does random-resized crop and flip only; {what} needs the"
                                     f" worker path (valid: {valid}, or data.decode=workers)")
        if self.optim.schedule == "multistep" and not self.optim.milestones:
            raise ValueError("optim.milestones: --schedule multistep needs at least one milestone epoch")
        return self

    # ---- helpers -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **dotted: Any) -> Config:
        """Return a copy with dotted paths set, validated: cfg.replace(**{"model.attn": "se"})."""
        d = self.to_dict()
        for key, value in dotted.items():
            _set_dotted(d, key, value)
        return config_from_dict(d)


def _schedule_overruns(cfg: Config) -> list[tuple[str, str, str, str]]:
    """(dotted path, its value, the bound on train.epochs, what happens) for a warm-up as long as the run and a
    backbone freeze longer than it."""
    found = []
    warm = cfg.optim.warmup_epochs  # None: the default (engine/recipe.py), always a fraction of the run
    if warm is not None and warm > 0 and warm >= cfg.train.epochs:
        found.append(("optim.warmup_epochs", f"{cfg.optim.warmup_epochs:g}", "must be below",
                      "the run never leaves the warm-up"))
    if cfg.train.freeze_backbone_epochs > cfg.train.epochs:
        found.append(("train.freeze_backbone_epochs", str(cfg.train.freeze_backbone_epochs), "must be at most",
                      "the freeze outlasts the run"))
    return found


def check_schedule(cfg: Config, given: Mapping[str, str]) -> None:
    """Refuse a warm-up not below train.epochs, or a backbone freeze longer than the run, where the user gave that
    value: `given` maps the dotted paths set explicitly (typed options, API overrides, a sweep's cell) to how they
    were given (`--warmup-epochs`, `--set optim.warmup_epochs`, or the path itself).  A value that came from a
    recipe or a saved config while only the run was shortened (`--config cifar10_lt_ce.yaml --epochs 1`, a smoke
    test) is not refused: the run goes ahead with it and `schedule_notes` says so."""
    for path, value, bound, what in _schedule_overruns(cfg):
        if path not in given:
            continue
        opt = given[path]
        name = f"{opt}={value}" if opt.startswith("--set ") else f"{opt} {value}"
        if opt != path:
            name += f" ({path})"
        ep = given.get("train.epochs")
        epochs = (f"--set train.epochs={cfg.train.epochs}" if ep.startswith("--set ") else f"{ep} {cfg.train.epochs}"
                  ) if ep else f"train.epochs {cfg.train.epochs} (give --epochs to lengthen the run)"
        raise ImgclsError(f"{name}: {bound} {epochs}, or {what}")


def schedule_notes(cfg: Config) -> list[str]:
    """One line each for a recipe's warm-up or backbone freeze that the run's epochs no longer leave room for."""
    said = {"optim.warmup_epochs": ("is not below", "the whole run is warm-up", "--warmup-epochs"),
            "train.freeze_backbone_epochs": ("is more than", "the backbone never trains", "--freeze-backbone-epochs")}
    return [f"{path} {value} {said[path][0]} train.epochs {cfg.train.epochs}: {said[path][1]} (the recipe's value,"
            f" kept; give {said[path][2]} to change it)" for path, value, _, _ in _schedule_overruns(cfg)]


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = d
    for i, p in enumerate(parts[:-1]):
        child = node.get(p)
        if child is None:  # absent, or a YAML section left empty (`optim:` with its keys commented out)
            child = node[p] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[:i + 1])
            raise ImgclsError(f"{where}: is {child!r}, not a section (a mapping of keys), so {key} cannot be set"
                              f" in it; write {where} as a section with {parts[i + 1]} indented below it")
        node = child
    node[parts[-1]] = value


def format_validation_error(err: ValidationError, source: str = "config",
                            options: Mapping[str, str] | None = None) -> str:
    """One line: the field path and the reason of the first error (plus a count of the rest).  `options` maps
    the dotted paths the user set on the command line to what was typed (`train.epochs` -> `--epochs`), so
    that the message names the option as well as the field."""
    errs = err.errors()
    first = errs[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    if msg.startswith("--") and ": " in msg:  # the validator named the CLI option: "--attn (model.attn): ..."
        option, _, msg = msg.partition(": ")
        return f"{option} ({loc}): {msg}{more}"
    if options and loc in options:  # a value typed on the command line, not read from `source`
        return f"{options[loc]} ({loc}): {msg}{more}"
    prefix = "" if source == "options" else f"{source}: "
    return f"{prefix}{loc}: {msg}{more}"


def config_from_dict(d: dict[str, Any], source: str = "config", options: Mapping[str, str] | None = None) -> Config:
    try:
        return Config.model_validate(d)
    except ValidationError as e:
        raise ImgclsError(format_validation_error(e, source, options)) from None


def read_config_file(path: str | Path, sections: str = "data, model, ...") -> dict[str, Any]:
    """A YAML config file's top-level mapping, with one-line errors naming `--config` and the file."""
    p = Path(path)
    if not p.is_file():
        raise ImgclsError(f"--config: file not found: {p}")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ImgclsError(f"--config {p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise ImgclsError(f"--config {p}: expected a mapping of sections ({sections})")
    return d


def load_config(path: str | Path, overrides: dict[str, Any] | None = None,
                options: Mapping[str, str] | None = None) -> Config:
    """Load a YAML config file; `overrides` maps dotted paths to values (the CLI options)."""
    p = Path(path)
    d = read_config_file(p)
    try:
        d = _with_overrides(d, overrides)
    except ImgclsError as e:
        raise ImgclsError(f"{p}: {e}") from None
    return config_from_dict(d, source=str(p), options=options)


def _with_overrides(sections: Mapping[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of `sections` (the caller's dicts are left as they are) with dotted `overrides` set in it."""
    d = {k: dict(v) if isinstance(v, Mapping) else v for k, v in sections.items()}
    for key, value in (overrides or {}).items():
        _set_dotted(d, key, value)
    return d


def build_config(config: str | Path | Mapping[str, Any] | None = None,
                 overrides: dict[str, Any] | None = None, options: Mapping[str, str] | None = None) -> Config:
    """A Config from a YAML file, a dict of sections (as in a YAML recipe) or nothing, plus dotted overrides;
    `options` (dotted path -> the option as typed) lets errors in an override name the option."""
    if isinstance(config, Mapping):
        return config_from_dict(_with_overrides(config, overrides), source="config", options=options)
    if config is not None:
        return load_config(config, overrides, options)
    return config_from_dict(_with_overrides({}, overrides), source="options", options=options)
