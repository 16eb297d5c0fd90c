"""Center loss: pull each embedding towards a learned centre of its class.

Wen et al., "A Discriminative Feature Learning Approach for Deep Face Recognition", ECCV 2016
(no arXiv id).  Eq. 2: L_C = 1/2 sum_i ||x_i - c_{y_i}||^2; eq. 5: L = L_S + lambda * L_C.

Deliberate choices:

* Reduction: 1/2 * MEAN over the batch (the paper sums over the mini-batch; the common PyTorch form
  averages, so lambda does not depend on the batch size).  Computed in float32.
* The centres (C, D) are the module's only parameter.  `update="sgd"` (the common PyTorch form):
  they are trained by the optimizer in their own group (lr `center_lr`, no weight decay, no
  momentum) and a gradient hook multiplies their gradient by 1 / lambda, so lambda weighs the pull
  on the features only, not how fast centres learn.  A hook (rather than rescaling `.grad` after
  backward) keeps gradient accumulation correct.  The group follows the run's lr schedule.
* `update="paper"` (eq. 4): the centres are not trained by the optimizer (requires_grad False);
  each training forward accumulates per-class feature sums and counts, and after each optimizer
  step c_j <- c_j - alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j).
* Centres start from N(0, 1) drawn with a seeded torch.Generator.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ..errors import ImgclsError
from ..registry import LOSSES


@LOSSES.register("center")
class CenterLoss(nn.Module):
    """forward(features (B, D), targets (B,) long) -> 1/2 * mean_i ||x_i - c_{y_i}||^2."""

    def __init__(self, num_classes: int, feat_dim: int, weight: float = 1.0, lr: float = 0.5,
                 update: Literal["sgd", "paper"] = "sgd", alpha: float = 0.5, seed: int = 0):
        super().__init__()
        if update not in ("sgd", "paper"):
            raise ImgclsError(f"center_update: unknown {update!r}; valid: sgd, paper")
        if feat_dim < 1 or num_classes < 1:
            raise ImgclsError(f"center loss: num_classes and feat_dim must be >= 1, got {num_classes}, {feat_dim}")
        if not 0.0 < alpha <= 1.0:
            raise ImgclsError(f"center_alpha: must be in (0, 1], got {alpha}")
        g = torch.Generator().manual_seed(seed)
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim, generator=g))  # (C, D)
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.weight, self.lr, self.update, self.alpha = float(weight), float(lr), update, float(alpha)
        self._sum: torch.Tensor | None = None  # (C, D) feature sums since the last step (paper mode)
        self._count: torch.Tensor | None = None  # (C,)
        if update == "paper":
            self.centers.requires_grad_(False)
        elif self.weight > 0 and self.weight != 1.0:
            self.centers.register_hook(lambda grad: grad / self.weight)  # d(lambda L_C)/dc -> dL_C/dc

    @classmethod
    def config_kwargs(cls, lc: Any) -> dict[str, Any]:
        return {"weight": lc.center_weight, "lr": lc.center_lr, "update": lc.center_update,
                "alpha": lc.center_alpha}

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.feat_dim:
            raise ImgclsError(f"center loss: expected features (B, {self.feat_dim}), got {tuple(features.shape)}")
        if targets.ndim != 1:
            raise ImgclsError("center loss: needs integer class targets (B,), not soft (Mixup/CutMix) targets")
        with torch.autocast(features.device.type, enabled=False):
            x = features.float()  # (B, D)
            c = self.centers[targets]  # (B, D): c_{y_i}
            loss = 0.5 * (x - c).pow(2).sum(dim=1).mean()  # eq. 2, averaged over the batch
        if self.update == "paper" and self.training and torch.is_grad_enabled():
            self._accumulate(x.detach(), targets)
        return loss

    @torch.no_grad()
    def _accumulate(self, x: torch.Tensor, targets: torch.Tensor) -> None:
        if self._sum is None:
            self._sum = torch.zeros_like(self.centers)  # (C, D)
            self._count = torch.zeros(self.num_classes, device=self.centers.device)  # (C,)
        self._sum.index_add_(0, targets, x)
        self._count.index_add_(0, targets, torch.ones_like(targets, dtype=self._count.dtype))

    def param_groups(self, loss_cfg: Any = None) -> list[dict[str, Any]]:
        """The optimizer group of the centres ([] in paper mode, where eq. 4 updates them)."""
        if self.update == "paper":
            return []
        lr = self.lr if loss_cfg is None else float(loss_cfg.center_lr)
        return [{"params": [self.centers], "lr": lr, "weight_decay": 0.0, "momentum": 0.0}]

    @torch.no_grad()
    def after_step(self) -> None:
        """Paper mode: c_j <- c_j - alpha * (n_j c_j - sum_{y_i = j} x_i) / (1 + n_j)  (eq. 4)."""
        if self.update != "paper" or self._sum is None or self._count is None:
            return
        n = self._count[:, None]  # (C, 1)
        delta = (n * self.centers - self._sum) / (1.0 + n)  # (C, D); 0 for classes absent from the batch
        self.centers.sub_(self.alpha * delta)
        self._sum, self._count = None, None
