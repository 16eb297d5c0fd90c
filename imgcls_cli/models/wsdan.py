"""WS-DAN model and its attention-guided augmentation (cropping, dropping).

Paper: Hu, Qi, Huang, Lu, "See Better Before Looking Closer: Weakly Supervised Data Augmentation
Network for Fine-Grained Visual Classification", arXiv:1901.09891.

- Attention maps A = f(F) in R^{M x H x W} from the last feature map F (section 3.1): a 1x1 conv
  + BN + ReLU as in the authors' code (ReLU keeps maps non-negative, needed by the thresholds).
- Bilinear attention pooling (eq. 2-3): f_k = g(A_k * F) with g = global average pooling, giving
  the (M, C) feature matrix; signed sqrt and L2 normalisation over the flattened M*C vector
  (authors' code), logits = FC(100 * feature) (authors' code: the scale lets the softmax sharpen
  on a unit-norm feature).
- Cropping (eq. 5-6): normalise A_k to [0, 1] by its min and max, mask = A_k* >= theta_c, take the
  mask's bounding box (padded by 10 % of the image side, authors' code) and resize it to the input
  size (bilinear, `roi_align` so the whole batch is one call).  Dropping (eq. 7): mask out pixels
  where A_k* > theta_d.  The paper thresholds A_k* (min-max normalised); the authors' code uses
  theta * max(A_k); for the non-negative ReLU maps the two differ only by the min.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

EPS = 1e-12
LOGIT_SCALE = 100.0


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> each map min-max scaled to [0, 1] (eq. 5's A_k*); a constant map becomes 0."""
    flat = maps.flatten(1)  # (B, HW)
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(EPS)).view_as(maps)  # (B, H, W)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) attention maps -> (B, H, W) at image size, bilinear, then min-max normalised."""
    up = F.interpolate(maps.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False)  # (B, 1, H, W)
    return normalise_maps(up[:, 0])  # (B, H, W)


def crop_boxes(maps: torch.Tensor, theta: torch.Tensor, padding: float) -> torch.Tensor:
    """Bounding boxes of {A* >= theta} per image, padded: (B, H, W), (B,) -> (B, 4) long [x0, y0, x1, y1).

    Coordinates are pixel indices with exclusive ends, clipped to the image; an empty mask gives
    the whole image.
    """
    b, h, w = maps.shape
    mask = maps >= theta.view(b, 1, 1)  # (B, H, W)
    rows, cols = mask.any(2), mask.any(1)  # (B, H), (B, W)
    ar_h = torch.arange(h, device=maps.device)
    ar_w = torch.arange(w, device=maps.device)
    big = max(h, w) + 1
    y0 = torch.where(rows, ar_h, big).min(1).values  # (B,) first row with a masked pixel
    y1 = torch.where(rows, ar_h, -1).max(1).values + 1  # (B,) one past the last
    x0 = torch.where(cols, ar_w, big).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values + 1
    empty = ~rows.any(1)  # (B,)
    ph, pw = int(padding * h), int(padding * w)
    y0 = torch.where(empty, 0, (y0 - ph).clamp(0, h))
    y1 = torch.where(empty, h, (y1 + ph).clamp(0, h))
    x0 = torch.where(empty, 0, (x0 - pw).clamp(0, w))
    x1 = torch.where(empty, w, (x1 + pw).clamp(0, w))
    return torch.stack([x0, y0, x1, y1], 1)  # (B, 4)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crop each image to its box and resize it back to the input size (bilinear): (B, 3, H, W)."""
    b, _, h, w = images.shape
    idx = torch.arange(b, device=images.device, dtype=torch.float32).unsqueeze(1)  # (B, 1)
    rois = torch.cat([idx, boxes.to(images.device, torch.float32)], 1)  # (B, 5): batch index, x0, y0, x1, y1
    # aligned=True: pixel i covers [i, i+1), so box [x0, x1) samples at bin centres like
    # F.interpolate(align_corners=False) of the crop; one sample per bin (the crop is upsampled).
    with torch.autocast(images.device.type, enabled=False):
        return roi_align(images.float(), rois, (h, w), spatial_scale=1.0, sampling_ratio=1,
                         aligned=True).to(images.dtype)  # (B, 3, H, W)


def drop_masks(maps: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Keep-masks of attention dropping (eq. 7): 1 where A* < theta, 0 where it is dropped. (B, 1, H, W)."""
    return (maps < theta.view(-1, 1, 1)).unsqueeze(1).to(maps.dtype)  # (B, 1, H, W)


class WSDAN(nn.Module):
    """forward(images) -> logits (B, num_classes); forward(images, with_attention=True) also
    returns the (B, M*C) feature and the (B, M, h, w) attention maps."""

    def __init__(self, features: nn.Module, channels: int, num_classes: int, num_maps: int = 32,
                 drop_rate: float = 0.0):
        super().__init__()
        self.features = features
        self.num_maps, self.channels = num_maps, channels
        self.head = nn.Module()
        self.head.attention = nn.Sequential(nn.Conv2d(channels, num_maps, 1, bias=False),
                                            nn.BatchNorm2d(num_maps), nn.ReLU(inplace=True))
        self.head.drop = nn.Dropout(drop_rate) if drop_rate else nn.Identity()
        self.head.fc = nn.Linear(num_maps * channels, num_classes, bias=False)  # bias-free as the authors'

    def pooled(self, feats: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Bilinear attention pooling (eq. 2-3): (B, C, h, w), (B, M, h, w) -> (B, M*C)."""
        b, _, h, w = feats.shape
        with torch.autocast(feats.device.type, enabled=False):
            fm = torch.einsum("bmhw,bchw->bmc", maps.float(), feats.float()) / (h * w)  # (B, M, C): GAP(A_k * F)
            fm = fm.reshape(b, -1)  # (B, M*C)
            fm = torch.sign(fm) * torch.sqrt(fm.abs() + EPS)  # signed sqrt (authors' code)
            return F.normalize(fm, dim=1)  # (B, M*C)

    def forward(self, images: torch.Tensor, with_attention: bool = False) -> Any:
        feats = self.features(images)  # (B, C, h, w)
        maps = self.head.attention(feats)  # (B, M, h, w)
        feature = self.pooled(feats, maps)  # (B, M*C)
        logits = self.head.fc(self.head.drop(feature * LOGIT_SCALE))  # (B, num_classes)
        return (logits, feature, maps) if with_attention else logits

    @torch.no_grad()
    def refined_logits(self, images: torch.Tensor, theta: float = 0.1, padding: float = 0.05) -> torch.Tensor:
        """Test-time refinement (section 3.4): average the raw logits with the logits of the crop
        guided by the mean attention map (authors' test code: theta 0.1, padding 5 %)."""
        raw, _, maps = self(images, with_attention=True)  # (B, K), _, (B, M, h, w)
        mean_map = upsample_maps(maps.mean(1), images.shape[-2:])  # (B, H, W)
        boxes = crop_boxes(mean_map, torch.full((images.shape[0],), theta, device=images.device), padding)
        crop_logits = self(crop_resize(images, boxes))  # (B, K)
        return (raw.float() + crop_logits.float()) / 2
