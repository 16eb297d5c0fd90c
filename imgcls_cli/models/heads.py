"""Classification heads.

`linear` keeps the backbone's own `nn.Linear` (torchvision parameter names); `cosine` replaces it
by a bias-free layer on L2-normalised features and L2-normalised class weights, so logits are
cos(theta) in [-1, 1] as ArcFace (Deng et al., arXiv:1801.07698, eq. 3) needs.  A head factory
takes (in_features, num_classes) and returns the module that sits where the linear layer was.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import HEADS


@HEADS.register("linear")
def linear_head(in_features: int, num_classes: int, **_: object) -> nn.Module:
    return nn.Linear(in_features, num_classes)


class CosineHead(nn.Module):
    """logits[b, j] = <x_b / |x_b|, w_j / |w_j|>, computed in float32 (outside autocast)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features, self.out_features = in_features, num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            x = F.normalize(x.float(), dim=1)  # (B, D)
            w = F.normalize(self.weight.float(), dim=1)  # (C, D)
            return F.linear(x, w)  # (B, C) in [-1, 1]


@HEADS.register("cosine")
def cosine_head(in_features: int, num_classes: int, **_: object) -> nn.Module:
    return CosineHead(in_features, num_classes)
