"""Standard supervised training: one forward pass, a classification loss, optional center loss.

With `--loss center` the classification part is CE (or ArcFace, `loss.center_on`) and
lambda * center loss is added on the embedding that feeds the classifier (Wen et al., ECCV 2016,
arXiv-free; eq. 5: L = L_S + lambda * L_C).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..losses import loss_from_config
from ..models.build import forward_with_features, meta
from ..registry import METHODS
from .base import Task


@METHODS.register("standard")
class StandardTask(Task):
    def __init__(self, cfg: Any, model: nn.Module, num_classes: int, class_counts: list[int] | None):
        super().__init__(cfg, model, num_classes, class_counts)
        lc = cfg.loss
        self.center = None
        if lc.name == "center":
            self.cls_loss = loss_from_config(lc.center_on, lc, num_classes)
            self.center = loss_from_config("center", lc, num_classes, feat_dim=meta(model)["feat_dim"])
        else:
            self.cls_loss = loss_from_config(lc.name, lc, num_classes)
        self.center_weight = lc.center_weight

    def loss_modules(self) -> list[nn.Module]:
        return [m for m in (self.cls_loss, self.center) if m is not None]

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        if self.center is None or not hasattr(self.center, "param_groups"):
            return []
        return self.center.param_groups(self.cfg.loss)

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, targets = batch["images"], batch["targets"]
        target = batch["soft"] if batch.get("soft") is not None else targets
        if self.center is not None:
            logits, feats = forward_with_features(self.model, images)  # (B, C), (B, D)
            loss = self.cls_loss(logits, target)
            c = self.center(feats, targets)
            return {"loss": loss + self.center_weight * c, "logits": logits, "center": c.detach()}
        logits = self.model(images)  # (B, C)
        return {"loss": self.cls_loss(logits, target), "logits": logits}

    def after_backward(self) -> None:
        if self.center is not None and hasattr(self.center, "after_backward"):
            self.center.after_backward(self.center_weight)

    def after_step(self) -> None:
        if self.center is not None and hasattr(self.center, "after_step"):
            self.center.after_step()
