"""Bilinear CNN head (B-CNN).

Paper: Lin, RoyChowdhury, Maji, "Bilinear CNN Models for Fine-grained Visual Recognition",
ICCV 2015, arXiv:1504.07889.  Section 3: the bilinear feature at every location l is the outer
product x_l y_l^T of two conv feature maps; sum-pooling over locations gives the image descriptor
B = sum_l x_l y_l^T (we average, B = (1/HW) sum_l x_l y_l^T, as the authors' PyTorch code does:
the 1/HW only rescales before the L2 normalisation, it keeps values in a float-friendly range),
then the signed square root y = sign(B) sqrt(|B|), then z = y / ||y||_2, then a linear classifier.

- Symmetric (default, B-CNN [D,D]): x = y, one trunk.  Two-stream (`model.bilinear_two_stream`):
  a second, independently trained copy of the trunk gives y (B-CNN [M,M] style: same architecture,
  separate weights).  `BilinearCNN(features, ..., features2=...)` accepts any second trunk.
- The pooling runs in float32 outside autocast (the outer products overflow/underflow in fp16).
- Deviation: sqrt(|B| + eps) with eps = 1e-8 (gradient of sqrt is unbounded at 0); the public ports
  use 1e-5 to 1e-10.  `bilinear_pool(..., eps=0)` is the exact formula.
- VGG-16 as in the paper uses relu5_3 (no last max-pool); ResNets use layer4 (see models/trunk.py).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImgclsError
from ..registry import HEADS
from .trunk import backbone_trunk, feature_channels

SQRT_EPS = 1e-8


def bilinear_pool(x: torch.Tensor, y: torch.Tensor | None = None, eps: float = SQRT_EPS) -> torch.Tensor:
    """(B, C1, H, W), (B, C2, H, W) -> (B, C1*C2) signed-sqrt, L2-normalised bilinear feature."""
    y = x if y is None else y
    if x.shape[0] != y.shape[0] or x.shape[-2:] != y.shape[-2:]:
        raise ImgclsError(f"--head bilinear: the two streams' feature maps differ in batch or size"
                          f" ({tuple(x.shape)} vs {tuple(y.shape)})")
    b, c1, h, w = x.shape
    with torch.autocast(x.device.type, enabled=False):
        xf = x.float().reshape(b, c1, h * w)  # (B, C1, HW)
        yf = y.float().reshape(b, y.shape[1], h * w)  # (B, C2, HW)
        bil = torch.bmm(xf, yf.transpose(1, 2)) / (h * w)  # (B, C1, C2): (1/HW) sum_l x_l y_l^T
        bil = bil.reshape(b, -1)  # (B, C1*C2)
        bil = torch.sign(bil) * torch.sqrt(bil.abs() + eps)  # signed square root
        return F.normalize(bil, dim=1)  # L2 normalisation


class BilinearCNN(nn.Module):
    """trunk(s) -> bilinear pooling -> (dropout) -> fc; forward(images) -> logits (B, num_classes)."""

    def __init__(self, features: nn.Module, channels: int, num_classes: int, *,
                 features2: nn.Module | None = None, channels2: int | None = None, drop_rate: float = 0.0):
        super().__init__()
        self.features = features
        self.features2 = features2
        c2 = channels if features2 is None else (channels2 or feature_channels(features2))
        self.drop = nn.Dropout(drop_rate) if drop_rate else nn.Identity()
        self.fc = nn.Linear(channels * c2, num_classes)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images)  # (B, C1, H, W)
        y = None if self.features2 is None else self.features2(images)  # (B, C2, H, W)
        return bilinear_pool(x, y)  # (B, C1*C2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pooled(images)))  # (B, num_classes)


@HEADS.register("bilinear", wraps_model=True)
def bilinear_head(model: nn.Module, num_classes: int, *, two_stream: bool = False, drop_rate: float = 0.0,
                  **_: Any) -> nn.Module:
    """Wrap a model built by `build_model` (its weights already loaded) into a B-CNN."""
    info = model.imgcls
    trunk, channels, cam = backbone_trunk(model, info["family"], "--head bilinear")
    second = copy.deepcopy(trunk) if two_stream else None
    net = BilinearCNN(trunk, channels, num_classes, features2=second, channels2=channels, drop_rate=drop_rate)
    net.imgcls = {**info, "head": "fc", "classifier": "fc", "cam_layer": "features" + (f".{cam}" if cam else ""),
                  "feat_dim": channels * channels, "head_kind": "bilinear", "two_stream": bool(two_stream)}
    return net
