"""The Task interface shared by every training method (timm's `task/` idea).

A Task owns the loss and knows how its model is built, how a training batch becomes a loss, and
how evaluation logits are produced.  Methods override one hook each; the trainer only calls these.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.build import build_model


def model_from_config(cfg: Any, num_classes: int, weights: str | None = None, pretrained: bool | None = None,
                      head: str | None = None) -> nn.Module:
    m = cfg.model
    head = head or m.head
    if cfg.loss.name == "arcface" or (cfg.loss.name == "center" and cfg.loss.center_on == "arcface"):
        head = "cosine"  # ArcFace needs cosine logits: the head follows the loss (documented)
    return build_model(
        m.backbone, num_classes, attn=m.attn, head=head,
        pretrained=m.pretrained if pretrained is None else pretrained,
        weights=m.weights if weights is None else weights, feature_dim=m.feature_dim, drop_rate=m.drop_rate,
        zero_init_residual=m.zero_init_residual,
        attn_options={"reduction": m.reduction, "nonlocal_blocks": m.nonlocal_blocks, "cbam_kernel": m.cbam_kernel},
        head_options={"two_stream": m.bilinear_two_stream} if head == "bilinear" else None,
    )


class Task:
    """Default behaviour: one forward pass, loss on (logits, targets)."""

    #: names of extra samplers the method needs for a second batch stream (e.g. BBN: "reversed")
    second_sampler: str | None = None
    #: sampler used when the user gives none (cRT/LWS: "class_balanced"); an explicit --sampler is kept
    default_sampler: str | None = None
    #: backbone families the method's model supports (None = all); checked in Config._combinations
    backbone_families: tuple[str, ...] | None = None

    def __init__(self, cfg: Any, model: nn.Module, num_classes: int, class_counts: list[int] | None):
        self.cfg, self.model, self.num_classes = cfg, model, num_classes
        self.class_counts = class_counts
        self.epoch, self.epochs = 0, cfg.train.epochs

    # --- construction ------------------------------------------------------------------
    @classmethod
    def resolve_config(cls, cfg: Any) -> Any:
        """The config with what the method takes from elsewhere filled in (cRT/LWS: the stage-1 checkpoint's
        architecture); called before the run starts, so config.yaml states it.  Default: unchanged."""
        return cfg

    @classmethod
    def build_model(cls, cfg: Any, num_classes: int, class_counts: list[int] | None = None,
                    for_inference: bool = False) -> nn.Module:
        return model_from_config(cfg, num_classes, weights=None if for_inference else cfg.model.weights,
                                 pretrained=False if for_inference else None)

    def loss_modules(self) -> list[nn.Module]:
        """Modules with parameters trained besides the model (e.g. center-loss centres)."""
        return []

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Extra optimizer parameter groups (each may set its own lr / weight decay)."""
        return []

    def trainable_parameters(self) -> list[nn.Parameter] | None:
        """None = every model parameter; methods that freeze parts return the rest."""
        return None

    # --- per epoch / per step ------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """batch: images (B,3,H,W) float normalised, targets (B,) long, soft (B,C) or None."""
        raise NotImplementedError  # abstract: every registered Task overrides it

    def after_backward(self) -> None:
        """Called after backward, before the optimizer step (e.g. rescale center-loss grads)."""

    def after_step(self) -> None:
        """Called after the optimizer step."""

    @torch.no_grad()
    def eval_logits(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model(images)
