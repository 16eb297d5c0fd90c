"""albumentations pipelines.  Images stay uint8 (H, W, 3) until they reach the device.

Train preset: RandomResizedCrop(scale, ratio) + HorizontalFlip(p) [+ ColorJitter]
[+ AutoAugment-family policy].  Eval preset: resize the shorter side to img_size / crop_pct, then
centre-crop img_size (timm's and torchvision's ImageNet evaluation).
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2


def train_transform(img_size: int, crop_scale: tuple[float, float], crop_ratio: tuple[float, float], hflip: float,
                    color_jitter: float = 0.0, autoaugment: str | None = None) -> A.Compose:
    ops: list[Any] = [A.RandomResizedCrop(size=(img_size, img_size), scale=tuple(crop_scale), ratio=tuple(crop_ratio),
                                          interpolation=cv2.INTER_LINEAR)]
    if hflip > 0:
        ops.append(A.HorizontalFlip(p=hflip))
    if color_jitter > 0:
        cj = color_jitter
        ops.append(A.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=0.0, p=1.0))
    if autoaugment:
        from ..registry import AUTOAUGMENT

        ops.append(AUTOAUGMENT.get(autoaugment)())
    return A.Compose(ops, seed=0)


def eval_transform(img_size: int, crop_pct: float = 0.875) -> A.Compose:
    resize = int(round(img_size / crop_pct))
    return A.Compose([A.SmallestMaxSize(max_size=resize, interpolation=cv2.INTER_LINEAR),
                      A.CenterCrop(height=img_size, width=img_size)], seed=0)


def transforms_from_config(cfg: Any, bundle: Any) -> tuple[A.Compose, A.Compose]:
    """(train, eval) pipelines for a resolved Config and its DataBundle."""
    a = cfg.aug
    size = cfg.data.img_size or bundle.img_size
    train = train_transform(size, a.crop_scale or bundle.crop_scale, a.crop_ratio,
                            bundle.hflip if a.hflip is None else a.hflip, a.color_jitter, a.autoaugment)
    return train, eval_transform(size, a.eval_crop_pct)
