"""Batch-level Mixup and CutMix on the device, with soft targets.

- Mixup: Zhang et al., "mixup: Beyond Empirical Risk Minimization", arXiv:1710.09412.
  lambda ~ Beta(alpha, alpha); x = lambda * x_i + (1 - lambda) * x_j, same for one-hot targets (eq. 1).
- CutMix: Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
  Features", arXiv:1905.04899.  lambda ~ Beta(alpha, alpha); a box of width W*sqrt(1-lambda) and
  height H*sqrt(1-lambda) at a uniform centre, clipped to the image, is pasted from the partner;
  lambda is recomputed as 1 - box area / (W*H) (eq. 2 and the official `rand_bbox`).

Choices and deviations (documented):
- The partner of image i is image perm[i] of a random permutation of the batch (METHODS.md: "a batch
  is paired with its own shuffled copy"; timm flips the batch instead).  The permutation is drawn on
  the device from the step's generator.
- The official `rand_bbox` uses size[2] (H) as "W": harmless only for square images.  Here the box
  width follows W and its height follows H.
- Scalar draws (mix or not, Mixup or CutMix, lambda, box centre) are made on the host with a numpy
  Generator seeded from the device generator's seed (`initial_seed()`, no device synchronisation);
  `torch.distributions.Beta` takes no generator.  The trainer reseeds the generator every step, so a
  run is reproducible.
- Targets are not smoothed here: the loss applies label smoothing to soft targets (losses/cross_entropy.py).
- A batch that is not mixed (probability 1 - mix_prob) still gets one-hot soft targets, so the loss
  always sees (B, C) probabilities when mixing is configured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..losses.cross_entropy import one_hot as class_one_hot


@dataclass(frozen=True)
class MixParams:
    kind: str  # "none", "mixup" or "cutmix"
    lam: float  # weight of the image's own label (after the CutMix area correction)
    perm: torch.Tensor | None  # (B,) partner indices, on the device
    box: tuple[int, int, int, int] | None  # CutMix (y0, y1, x0, x1), rows then columns


Box = tuple[int, int, int, int]  # (y0, y1, x0, x1)


def cutmix_box(lam: float, height: int, width: int, rng: np.random.Generator) -> tuple[Box, float]:
    """Box for a drawn lambda, clipped to the image, and the lambda recomputed from its area."""
    cut = math.sqrt(1.0 - lam)
    cut_w, cut_h = int(width * cut), int(height * cut)
    cx, cy = int(rng.integers(width)), int(rng.integers(height))  # uniform centre
    x0, x1 = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    y0, y1 = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    lam_corrected = 1.0 - (x1 - x0) * (y1 - y0) / float(width * height)
    return (y0, y1, x0, x1), lam_corrected


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


class Mixer:
    """`Mixer(aug_cfg, num_classes)(x, y, generator)` -> (mixed x (B, 3, H, W), soft targets (B, C))."""

    def __init__(self, aug: Any, num_classes: int):
        self.mixup_alpha, self.cutmix_alpha = float(aug.mixup), float(aug.cutmix)
        self.mix_prob, self.switch_prob = float(aug.mix_prob), float(aug.switch_prob)
        self.num_classes = num_classes

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> MixParams:
        rng = np.random.default_rng(generator.initial_seed())
        if rng.random() >= self.mix_prob or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0):
            return MixParams("none", 1.0, None, None)
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        perm = torch.randperm(batch, generator=generator, device=generator.device)  # (B,)
        if not use_cutmix:
            return MixParams("mixup", lam, perm, None)
        box, lam = cutmix_box(lam, height, width, rng)
        return MixParams("cutmix", lam, perm, box)

    def apply(self, x: torch.Tensor, y: torch.Tensor, p: MixParams) -> tuple[torch.Tensor, torch.Tensor]:
        one_hot = class_one_hot(y, self.num_classes)  # (B, C)
        if p.kind == "none" or p.perm is None:
            return x, one_hot
        perm = p.perm.to(x.device)
        soft = one_hot[perm].lerp(one_hot, p.lam)  # lam * y_i + (1 - lam) * y_perm(i)   (B, C)
        if p.kind == "mixup":
            mixed = x[perm].lerp(x, p.lam)  # lam * x_i + (1 - lam) * x_perm(i)   (B, 3, H, W)
            return mixed.contiguous(memory_format=_memory_format(x)), soft
        y0, y1, x0, x1 = p.box  # type: ignore[misc]
        out = x.clone()
        out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # (B, 3, h, w) patch from the partner
        return out, soft

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.sample(x.shape[0], x.shape[2], x.shape[3], generator)
        return self.apply(x, y, params)
