"""Softmax cross-entropy with label smoothing that also takes soft (probability) targets.

Szegedy et al., "Rethinking the Inception Architecture", arXiv:1512.00567, section 7: the target
becomes (1 - eps) * y + eps / C.  For soft targets q (Mixup/CutMix, which already sum to 1) the same
smoothing is applied to q, then L = -sum_j q_j log softmax(z)_j; for integer targets this equals
torch's `cross_entropy(label_smoothing=eps)`.  Computed in float32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImgclsError
from ..registry import LOSSES


def one_hot(targets: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B,) long -> (B, C).  Unlike F.one_hot, no `.item()` range check on the CPU (CUDA skips it too and
    relies on the scatter's device-side bounds check), so a training step never waits on a Python read."""
    out = torch.zeros(targets.shape[0], num_classes, dtype=dtype, device=targets.device)
    return out.scatter_(1, targets.unsqueeze(1), 1)


def smooth_targets(targets: torch.Tensor, num_classes: int, eps: float) -> torch.Tensor:
    """(B,) long or (B, C) probabilities -> (B, C) smoothed probabilities."""
    if targets.ndim == 1:
        targets = one_hot(targets, num_classes)
    return targets.float() * (1.0 - eps) + eps / num_classes


@LOSSES.register("ce")
class CrossEntropy(nn.Module):
    def __init__(self, num_classes: int, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:  # F.cross_entropy would refuse it only at the first step
            raise ImgclsError(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
        self.num_classes, self.eps = num_classes, label_smoothing

    @classmethod
    def config_kwargs(cls, lc: Any) -> dict[str, Any]:
        return {"label_smoothing": lc.label_smoothing}

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # (B, C)
        if targets.ndim == 1:
            return F.cross_entropy(logits, targets, label_smoothing=self.eps)
        q = smooth_targets(targets, self.num_classes, self.eps)  # (B, C)
        return torch.sum(-q * F.log_softmax(logits, dim=1), dim=1).mean()
