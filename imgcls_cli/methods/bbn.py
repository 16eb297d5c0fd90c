"""BBN: Bilateral-Branch Network with cumulative learning.

Zhou, Cui, Wei, Chen, "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed
Visual Recognition", CVPR 2020, arXiv:1912.02413.

- Two branches share the network except its last residual block (section 3.2 of the paper and the
  official code's `cb_block` / `rb_block`; ../shared/METHODS.md says "last stage", the paper and
  code duplicate only the last block of the last stage, which is what we do).  The conventional
  branch sees the main (instance / uniform) stream, the re-balancing branch the `reversed` sampler
  stream (p_i proportional to N_max / N_i, eq. 1), fed by the trainer through `second_sampler`.
- Cumulative learning (eq. 2): alpha = 1 - (T / T_max)^2.  `train.bbn_schedule`:
  `parabolic` takes T = the 1-based epoch, as the formula reads (alpha reaches 0 at the last epoch);
  `official` copies the official code: T = epoch - 1 and T_max rounded up to 100 / 200 for 90 / 180
  epochs, else T_max = epochs.
- Logits (eq. 3) = W^T (2 * [alpha f_c ; (1 - alpha) f_r]) + b.  We keep the official code's factor 2:
  at test time alpha = 0.5 and the input of the classifier is then the plain concatenation [f_c ; f_r],
  exactly what the official test path feeds.  Loss (eq. 4): alpha CE(z, y_c) + (1 - alpha) CE(z, y_r).
- Deviation: when unreadable images make the two batches differ in size, the re-balancing batch is
  cut or cycled to the size of the main one (the feature concatenation needs equal batch sizes).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..losses import loss_from_config
from ..registry import BACKBONES, HEADS, METHODS
from .base import Task, model_from_config

STEM = ("conv1", "bn1", "relu", "maxpool")  # torchvision ResNet; CIFAR ResNets have no maxpool


def bbn_alpha(epoch: int, epochs: int, schedule: str = "parabolic") -> float:
    """Cumulative-learning weight of the conventional branch for the 0-based `epoch` (eq. 2)."""
    if schedule == "official":
        div = 100 * (epochs // 100 + 1) if epochs in (90, 180) else epochs
        return 1.0 - (epoch / div) ** 2
    return 1.0 - ((epoch + 1) / epochs) ** 2


class BBNNet(nn.Module):
    """forward(x) -> test logits (alpha = 0.5); forward(x, x2, alpha) -> mixed training logits."""

    def __init__(self, base: nn.Module, num_classes: int, head: str, drop_rate: float,
                 fresh: nn.Module | None = None):
        """`fresh`: a second, freshly initialised network of the same config, whose last block becomes the
        re-balancing branch's (so it starts independently of the conventional one, initialised exactly as a new
        block is: zero-initialised residual BN, CBAM's spatial BN at 0, ...); None: a copy of `base`'s (loaded
        weights, or an inference model whose weights are loaded next)."""
        super().__init__()
        info = dict(base.imgcls)
        stages = BACKBONES.meta(info["backbone"])["stages"]
        self.stages = list(stages)
        last = getattr(base, stages[-1])
        if not isinstance(last, nn.Sequential) or len(last) < 2:
            raise ValueError(f"BBN needs a last stage with at least two blocks ({stages[-1]} of {info['backbone']})")
        d = info["feat_dim"]  # pooled width of one branch
        self.backbone = base
        # the re-balancing branch's own last block
        self.rb_block = getattr(fresh, stages[-1])[-1] if fresh is not None else copy.deepcopy(last[-1])
        cls = nn.Linear(2 * d, num_classes) if head == "linear" else HEADS.get(head)(2 * d, num_classes)
        base.fc = nn.Sequential(nn.Dropout(drop_rate), cls) if drop_rate else cls
        classifier = "backbone.fc.1" if drop_rate else "backbone.fc"
        self.imgcls = {**info, "head": "backbone.fc", "classifier": classifier, "feat_dim": 2 * d,
                       "cam_layer": f"backbone.{stages[-1]}.{len(last) - 1}", "method": "bbn"}
        del base.imgcls

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Shared part: stem, all stages but the last block of the last one."""
        b = self.backbone
        for name in STEM:
            if hasattr(b, name):
                x = getattr(b, name)(x)
        for name in self.stages[:-1]:
            x = getattr(b, name)(x)
        last = getattr(b, self.stages[-1])
        for block in list(last)[:-1]:
            x = block(x)
        return x  # (B, C, h, w)

    def branch(self, x: torch.Tensor, reversed_branch: bool) -> torch.Tensor:
        last = getattr(self.backbone, self.stages[-1])
        block = self.rb_block if reversed_branch else last[-1]
        return torch.flatten(self.backbone.avgpool(block(self.trunk(x))), 1)  # (B, D)

    def forward(self, x: torch.Tensor, x2: torch.Tensor | None = None, alpha: float = 0.5) -> torch.Tensor:
        if x2 is None:
            t = self.trunk(x)  # (B, C, h, w), shared by both branches at test time
            last = getattr(self.backbone, self.stages[-1])
            f_c = torch.flatten(self.backbone.avgpool(last[-1](t)), 1)  # (B, D)
            f_r = torch.flatten(self.backbone.avgpool(self.rb_block(t)), 1)  # (B, D)
        else:
            f_c, f_r = self.branch(x, False), self.branch(x2, True)  # (B, D) each
        mixed = 2.0 * torch.cat((alpha * f_c, (1.0 - alpha) * f_r), dim=1)  # (B, 2D), eq. 3 with the code's x2
        return self.backbone.fc(mixed)  # (B, num_classes)


@METHODS.register("bbn")
class BBNTask(Task):
    second_sampler = "reversed"
    backbone_families = ("resnet", "cifar_resnet")

    def __init__(self, cfg: Any, model: nn.Module, num_classes: int, class_counts: list[int] | None):
        super().__init__(cfg, model, num_classes, class_counts)
        self.cls_loss = loss_from_config(cfg.loss.name, cfg.loss, num_classes)
        self.schedule = cfg.train.bbn_schedule
        self.alpha = bbn_alpha(0, self.epochs, self.schedule)

    @classmethod
    def build_model(cls, cfg: Any, num_classes: int, class_counts: list[int] | None = None,
                    for_inference: bool = False) -> nn.Module:
        base = model_from_config(cfg, num_classes, weights=None if for_inference else cfg.model.weights,
                                 pretrained=False if for_inference else None, head="linear")
        head = "cosine" if cfg.loss.name == "arcface" else cfg.model.head
        loaded = cfg.model.weights is not None or cfg.model.pretrained
        fresh = None if for_inference or loaded else model_from_config(cfg, num_classes, weights=None, pretrained=False,
                                                                       head="linear")
        return BBNNet(base, num_classes, head, cfg.model.drop_rate, fresh)

    def loss_modules(self) -> list[nn.Module]:
        return [self.cls_loss]

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.alpha = bbn_alpha(epoch, self.epochs, self.schedule)

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x, y = batch["images"], batch["targets"]  # (B, 3, H, W), (B,)
        x2, y2 = batch["images2"], batch["targets2"]  # reversed-sampler stream
        if len(y2) != len(y):
            keep = torch.arange(len(y), device=y2.device) % len(y2)  # (B,)
            x2, y2 = x2[keep], y2[keep]
        a = self.alpha
        logits = self.model(x, x2, a)  # (B, C)
        loss = a * self.cls_loss(logits, y) + (1.0 - a) * self.cls_loss(logits, y2)  # eq. 4
        return {"loss": loss, "logits": logits, "alpha": torch.tensor(a)}
