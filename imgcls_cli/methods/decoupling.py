"""Decoupling representation and classifier: cRT and LWS (stage 2), tau-norm and NCM (evaluation).

Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR 2020, arXiv:1910.09217, section 4.

Stage 1 is a plain (`standard`, instance-balanced) run.  Stage 2 starts from its checkpoint
(`--init-from`), freezes the representation and re-balances only the classifier:
- `crt`: classifier re-initialised and retrained with class-balanced sampling (section 4.2, cRT).
- `lws`: the classifier stays frozen; one scale f_i per class is learned, z_i = f_i * (w_i^T x + b_i)
  (section 4.2, LWS).  The official code scales the logits, so the bias is scaled as well; we do the
  same.  The scale lives in the model (the classifier is wrapped), so checkpoints and `imgcls eval`
  need nothing special.
- tau-norm and NCM change only evaluation: see `decoupling_eval.py` (`eval_variant`).

Choices: the architecture comes from the current config and must match the stage-1 checkpoint's
(one-line error otherwise).  Both methods default `data.sampler` to `class_balanced` (the paper's
stage-2 sampler) through `Task.default_sampler`; a sampler the user gives explicitly is kept, so an
instance-balanced cRT ablation stays possible.  The frozen backbone runs in eval mode (BatchNorm
running statistics untouched), so its weights and buffers stay bit-identical to stage 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..engine.checkpoint import checkpoint_file, read_checkpoint
from ..errors import ImgclsError
from ..models.build import get_classifier, meta, set_submodule
from ..registry import METHODS
from .base import model_from_config
from .decoupling_eval import eval_variant
from .standard import StandardTask

#: model fields that define the architecture: stage 1 and stage 2 must agree on them
ARCH_FIELDS = ("backbone", "attn", "head", "feature_dim", "reduction", "nonlocal_blocks", "cbam_kernel",
               "bilinear_two_stream", "wsdan_maps")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def load_stage1(cfg: Any, num_classes: int) -> nn.Module:
    """The current config's model with the stage-1 checkpoint's weights (architectures must match)."""
    path = checkpoint_file(cfg.train.init_from, "--init-from")  # a run folder: its best.pt, as eval/cam/export
    if not path.is_file():
        raise ImgclsError(f"--init-from: file not found: {path} (give the stage-1 run folder, best.pt or last.pt)")
    raw = read_checkpoint(path)
    s1 = raw["config"].get("model", {})
    for key in ARCH_FIELDS:
        if key in s1 and s1[key] != getattr(cfg.model, key):
            raise ImgclsError(f"--init-from {path}: stage 1 has model.{key}={s1[key]!r}, this run"
                              f" model.{key}={getattr(cfg.model, key)!r}; they must match")
    if len(raw["class_names"]) != num_classes:
        n1 = len(raw["class_names"])
        raise ImgclsError(f"--init-from {path}: stage 1 has {n1} classes, --data has {num_classes}")
    model = model_from_config(cfg, num_classes, weights=None, pretrained=False)
    try:
        model.load_state_dict(raw["model"], strict=True)
    except RuntimeError as e:
        method = raw["config"].get("train", {}).get("method")
        raise ImgclsError(f"--init-from {path}: its weights do not fit this model (stage-1 method {method!r};"
                          f" {str(e).splitlines()[0][:100]})") from None
    return model


def reset_classifier(module: nn.Module) -> None:
    """Re-initialise every parameter of the classifier (nn.Linear defaults; weights of bias-free heads alike)."""
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        elif isinstance(getattr(m, "weight", None), nn.Parameter):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))


def freeze_all_but(model: nn.Module, keep: list[nn.Parameter]) -> None:
    keep_ids = {id(p) for p in keep}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep_ids)


class _StageTwo(StandardTask):
    """Shared stage-2 behaviour: frozen representation in eval mode; `trained(model)` are the only parameters
    that learn.  Hooks: `wrap` (architecture change, also applied when loading a checkpoint), `prepare`."""

    default_sampler = "class_balanced"

    @classmethod
    def wrap(cls, model: nn.Module) -> nn.Module:
        return model

    @classmethod
    def resolve_config(cls, cfg: Any) -> Any:
        """Architecture fields not given for this run are the stage-1 checkpoint's (given ones must match it,
        which load_stage1 checks), so `--method crt --init-from RUN` needs no repeated --backbone."""
        path = checkpoint_file(cfg.train.init_from, "--init-from")
        if not path.is_file():
            return cfg  # load_stage1 says so
        s1 = read_checkpoint(path)["config"].get("model", {})
        given = cfg.model.model_fields_set
        upd = {f"model.{k}": s1[k] for k in ARCH_FIELDS
               if k in s1 and k not in given and s1[k] != getattr(cfg.model, k)}
        return cfg.replace(**upd) if upd else cfg

    @classmethod
    def prepare(cls, model: nn.Module) -> nn.Module:
        return model

    @classmethod
    def trained(cls, model: nn.Module) -> list[nn.Parameter]:
        return list(get_classifier(model).parameters())

    @classmethod
    def build_model(cls, cfg: Any, num_classes: int, class_counts: list[int] | None = None,
                    for_inference: bool = False) -> nn.Module:
        if for_inference:  # a stage-2 checkpoint holds every weight; the stage-1 file is not needed
            return cls.wrap(model_from_config(cfg, num_classes, weights=None, pretrained=False))
        model = cls.prepare(cls.wrap(load_stage1(cfg, num_classes)))
        freeze_all_but(model, cls.trained(model))
        return model

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.trained(unwrap(self.model))

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        # frozen representation: BN running statistics (and dropout) stay as in stage 1; the classifier
        # (nn.Linear / cosine / LWS wrapper) has no train-mode behaviour, so eval mode covers the whole model
        unwrap(self.model).eval()


@METHODS.register("crt")
class CRTTask(_StageTwo):
    """Classifier re-training: fresh classifier on the frozen stage-1 representation."""

    @classmethod
    def prepare(cls, model: nn.Module) -> nn.Module:
        reset_classifier(get_classifier(model))
        return model


class LWSClassifier(nn.Module):
    """Learnable weight scaling: z = f * classifier(x), one scale per class, initialised to 1."""

    def __init__(self, inner: nn.Module, num_classes: int):
        super().__init__()
        self.inner = inner
        self.scales = nn.Parameter(torch.ones(num_classes))  # (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scales  # (B, C)


@METHODS.register("lws")
class LWSTask(_StageTwo):
    """Learnable weight scaling on the frozen stage-1 classifier."""

    @classmethod
    def wrap(cls, model: nn.Module) -> nn.Module:
        info = meta(model)
        set_submodule(model, info["classifier"], LWSClassifier(get_classifier(model), info["num_classes"]))
        return model

    @classmethod
    def trained(cls, model: nn.Module) -> list[nn.Parameter]:
        return [get_classifier(model).scales]


__all__ = ["CRTTask", "LWSClassifier", "LWSTask", "eval_variant", "load_stage1"]
