"""ArcFace: additive angular margin loss on cosine logits.

Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", arXiv:1801.07698.
Eq. 3: L = -log e^{s cos(theta_y + m)} / (e^{s cos(theta_y + m)} + sum_{j != y} e^{s cos theta_j}).

Input: cos(theta) logits (B, C) in [-1, 1] from the cosine head (`models/heads.py`), integer targets
(B,) or soft targets (B, C).  Choices, following the official insightface code:

* cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m) with sin(theta) = sqrt(1 - cos^2) clamped
  away from 0, so the gradient is finite at cos = +-1 (no acos is evaluated).  Like the paper's
  classic form, the margin carries gradient (newer insightface detaches it).
* Threshold fallback: where theta + m > pi, i.e. cos(theta) <= th = cos(pi - m), the logit would stop
  decreasing in theta; there cos(theta) - mm with mm = sin(pi - m) * m is used instead
  (insightface `th`/`mm`).  `easy_margin` instead applies the margin only where cos(theta) > 0.
* Computed in float32 with autocast disabled.  Label smoothing eps uses the target
  (1 - eps) e_y + eps / C on the margin-applied logits.
* Soft targets q (Mixup/CutMix; a deliberate extension, not in the paper): the loss is the expectation
  of the hard-label ArcFace loss under q, L = sum_k q_k L_arc(z, k), where L_arc(z, k) puts the margin
  on class k only.  For a Mixup pair this is lam * L(y_a) + (1 - lam) * L(y_b), the mixup criterion of
  Zhang et al. (arXiv:1710.09412) code; for one-hot q it equals the hard-label loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImgclsError
from ..registry import LOSSES
from .cross_entropy import one_hot


def margin_cosine(cos: torch.Tensor, m: float, easy_margin: bool = False) -> torch.Tensor:
    """phi(cos theta) = cos(theta + m) with the threshold / easy-margin fallback, elementwise."""
    sin = torch.sqrt((1.0 - cos * cos).clamp(min=1e-7, max=1.0))  # clamped: finite grad at cos = +-1
    phi = cos * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
    if easy_margin:
        return torch.where(cos > 0, phi, cos)
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m
    return torch.where(cos > th, phi, cos - mm)


def _lse_excluding_each(z: torch.Tensor) -> torch.Tensor:
    """out[b, k] = log sum_{j != k} exp(z[b, j]), stable: (B, C) -> (B, C)."""
    mx, arg = z.max(dim=1, keepdim=True)  # (B, 1)
    e = torch.exp(z - mx)  # (B, C), max entry 1
    rest = (e.sum(dim=1, keepdim=True) - e).clamp_min(1e-30)  # (B, C); >= 1 wherever k is not the argmax
    out = torch.log(rest) + mx  # (B, C)
    masked = z.scatter(1, arg, float("-inf"))  # (B, C) without the row maximum
    exact = torch.logsumexp(masked, dim=1, keepdim=True)  # (B, 1): the argmax column, computed directly
    return out.scatter(1, arg, exact)


@LOSSES.register("arcface")
class ArcFaceLoss(nn.Module):
    """forward(cos_logits (B, C), targets (B,) long or (B, C) probabilities) -> scalar."""

    def __init__(self, num_classes: int, s: float = 64.0, m: float = 0.5, easy_margin: bool = False,
                 label_smoothing: float = 0.0):
        super().__init__()
        if s <= 0:
            raise ImgclsError(f"arcface s: must be > 0, got {s}")
        if not 0.0 <= m < math.pi:
            raise ImgclsError(f"arcface m: must be in [0, pi), got {m}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ImgclsError(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
        self.num_classes, self.s, self.m = num_classes, float(s), float(m)
        self.easy_margin, self.eps = easy_margin, float(label_smoothing)

    @classmethod
    def config_kwargs(cls, lc: Any) -> dict[str, Any]:
        return {"s": lc.arcface_s, "m": lc.arcface_m, "easy_margin": lc.easy_margin,
                "label_smoothing": lc.label_smoothing}

    def margin_logits(self, cos: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """s * cos theta_j, with s * phi(cos theta_y) at each row's target (eq. 3's logits): (B, C)."""
        with torch.autocast(cos.device.type, enabled=False):
            cos = cos.float().clamp(-1.0, 1.0)  # (B, C)
            phi = margin_cosine(cos, self.m, self.easy_margin)  # (B, C)
            onehot = one_hot(targets, self.num_classes, torch.bool)  # (B, C)
            return self.s * torch.where(onehot, phi, cos)

    def forward(self, cos: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if cos.ndim != 2 or cos.shape[1] != self.num_classes:
            raise ImgclsError(f"arcface: expected cosine logits (B, {self.num_classes}), got {tuple(cos.shape)}")
        with torch.autocast(cos.device.type, enabled=False):
            if targets.ndim == 1:
                return F.cross_entropy(self.margin_logits(cos, targets), targets, label_smoothing=self.eps)
            return self._soft(cos.float().clamp(-1.0, 1.0), targets.float())

    def _soft(self, cos: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """sum_k q_k L_arc(z, k) in O(B C): L(k) = LSE(z with margin at k) - <smoothed e_k, z with margin at k>."""
        c, eps = self.num_classes, self.eps
        z = self.s * cos  # (B, C) plain logits
        zt = self.s * margin_cosine(cos, self.m, self.easy_margin)  # (B, C): logit of k if k were the target
        lse = torch.logaddexp(_lse_excluding_each(z), zt)  # (B, C): log-partition with the margin on k
        # smoothed target (1 - eps) e_k + eps / C: weight (1 - eps + eps / C) on zt_k, eps / C on z_j (j != k)
        dot = (1.0 - eps + eps / c) * zt + (eps / c) * (z.sum(dim=1, keepdim=True) - z)  # (B, C)
        per_k = lse - dot  # (B, C) = L_arc(z, k)
        return torch.sum(q * per_k, dim=1).mean()
