"""albumentations pipelines.  Images stay uint8 (H, W, 3) until they reach the device.

Train presets (`aug.preset`):
- `random_resized_crop`: RandomResizedCrop(scale, ratio) + HorizontalFlip(p) (the ImageNet protocol).
- `pad_crop`: zero-pad `aug.pad` pixels on each side, a uniformly placed img_size x img_size crop,
  HorizontalFlip(p): the CIFAR protocol of He et al. (arXiv:1512.03385, section 4.2), used by
  LDAM, Decoupling, BBN and Mixup (torchvision's `RandomCrop(32, padding=4)`).
Either is followed by [ColorJitter] [+ AutoAugment-family policy].  Eval: resize the shorter side to
img_size / crop_pct, then centre-crop img_size (timm's and torchvision's ImageNet evaluation); with
crop_pct 1 and an image already img_size square (the CIFAR protocol), the image as it is.

The train preset is a `TrainCompose`: an `A.Compose` whose call runs the crop and flip through the
transforms' own parameter sampling (`get_params_dependent_on_data`, `should_apply`) and then calls
OpenCV directly on a view of the crop, skipping albumentations' per-call bookkeeping (~60 us per
image).  The random draws, their order and the pixels are the same as `A.Compose.__call__`'s
(tested bit for bit); anything else (masks, odd images, replay) goes through `A.Compose`.

albumentations is pinned to its MIT line (2.0.x; its successor is AGPL under the same import name)
and only its public API is used: `Compose` (`seed`, `p`, `save_applied_params`, `set_random_state`),
the transforms' constructor arguments (`size`, `interpolation`), and the documented custom-transform
hooks (`ImageOnlyTransform.apply`, `get_params_dependent_on_data`, `get_transform_init_args_names`,
`should_apply`, the per-transform `py_random`).  The crop's resize uses its public `interpolation`
(built with `area_for_downscale=None`, under which albumentations resizes with exactly that flag),
not the private `_get_interpolation_for_resize`.  The transforms are kept rather than rewritten in
OpenCV so that the random streams (and so every seeded run, and the device-decode path's crop boxes)
stay what they were.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np


class TrainCompose(A.Compose):
    """RandomResizedCrop [+ HorizontalFlip] [+ tail transforms], with a direct path for uint8 RGB images."""

    def __init__(self, transforms: list[Any], seed: int = 0):
        super().__init__(transforms, seed=seed)
        crop = transforms[0]
        if not isinstance(crop, A.RandomResizedCrop):
            raise TypeError("TrainCompose: the first transform must be A.RandomResizedCrop")
        if getattr(crop, "area_for_downscale", None) is not None:  # the direct path resizes with `interpolation`
            raise TypeError("TrainCompose: the crop must have area_for_downscale=None")
        has_flip = len(transforms) > 1 and isinstance(transforms[1], A.HorizontalFlip)
        self._flip = transforms[1] if has_flip else None
        self._tail = list(transforms[2 if has_flip else 1:])
        # the per-sample numpy Generator (~10-20 us to build) is only needed by tail transforms that draw from it
        # (the AutoAugment family draws from `py_random` only and says so)
        self.needs_numpy_rng = any(getattr(t, "needs_numpy_rng", True) for t in self._tail)

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        img = data.get("image")
        if (args or force_apply or len(data) != 1 or not isinstance(img, np.ndarray) or img.dtype != np.uint8
                or img.ndim != 3 or img.shape[2] != 3 or self.save_applied_params or self.p < 1.0):
            return super().__call__(*args, force_apply=force_apply, **data)
        (x0, y0, x1, y1), flip = self.draw_crop_flip(img.shape[:2], data)
        crop = img[y0:y1, x0:x1]  # a view: no copy before the resize
        crop_t = self.transforms[0]
        h, w = crop_t.size
        if crop.shape[:2] != (h, w):
            crop = cv2.resize(crop, (w, h), interpolation=crop_t.interpolation)  # area_for_downscale=None: this flag
        if flip:
            crop = cv2.flip(crop, 1)
        out = {"image": crop}
        for t in self._tail:
            out = t(**out)
        return out

    def draw_crop_flip(self, hw: tuple[int, int], data: dict[str, Any] | None = None) -> tuple[tuple[int, ...], bool]:
        """The crop box (x0, y0, x1, y1) and flip of one image of height x width `hw`: the draws of `__call__`, in its
        order (the Compose p-check, the crop, the flip), so `data.decode=device` crops where the CPU path would."""
        self.py_random.random()  # A.Compose draws its own p-check first; keep the stream aligned
        crop_t = self.transforms[0]
        box = crop_t.get_params_dependent_on_data({"shape": (hw[0], hw[1], 3)}, data or {})["crop_coords"]
        return tuple(int(v) for v in box), bool(self._flip is not None and self._flip.should_apply())


def train_transform(img_size: int, crop_scale: tuple[float, float], crop_ratio: tuple[float, float], hflip: float,
                    color_jitter: float = 0.0, autoaugment: str | None = None, preset: str = "random_resized_crop",
                    pad: int = 4) -> A.Compose:
    if preset == "pad_crop":
        # (H, W) -> (H + 2 pad, W + 2 pad) zeros around -> a crop at offsets uniform in 0..2 pad (images of another
        # size are first resized so the crop is img_size; CIFAR images already are)
        ops: list[Any] = [A.SmallestMaxSize(max_size=img_size, interpolation=cv2.INTER_LINEAR),
               A.CenterCrop(height=img_size, width=img_size),
               A.Pad(padding=pad, border_mode=cv2.BORDER_CONSTANT, fill=0),
               A.RandomCrop(height=img_size, width=img_size)]
    else:
        ops = [A.RandomResizedCrop(size=(img_size, img_size), scale=tuple(crop_scale), ratio=tuple(crop_ratio),
                                   interpolation=cv2.INTER_LINEAR, area_for_downscale=None)]
    if hflip > 0:
        ops.append(A.HorizontalFlip(p=hflip))
    if color_jitter > 0:
        cj = color_jitter
        ops.append(A.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=0.0, p=1.0))
    if autoaugment:
        from ..registry import AUTOAUGMENT

        ops.append(AUTOAUGMENT.get(autoaugment)())
    return A.Compose(ops, seed=0) if preset == "pad_crop" else TrainCompose(ops, seed=0)


def eval_transform(img_size: int, crop_pct: float = 0.875) -> A.Compose:
    resize = int(round(img_size / crop_pct))
    return A.Compose([A.SmallestMaxSize(max_size=resize, interpolation=cv2.INTER_LINEAR),
                      A.CenterCrop(height=img_size, width=img_size)], seed=0)


def preset_of(cfg: Any, bundle: Any) -> str:
    from .sources import default_preset

    size = cfg.data.img_size or bundle.img_size
    return cfg.aug.preset or bundle.aug_preset or default_preset(size)


def eval_crop_pct(cfg: Any, bundle: Any) -> float:
    """aug.eval_crop_pct, or its preset's default: 1.0 (the image as it is) for pad_crop, else 0.875."""
    if cfg.aug.eval_crop_pct is not None:
        return cfg.aug.eval_crop_pct
    return 1.0 if preset_of(cfg, bundle) == "pad_crop" else 0.875


def transforms_from_config(cfg: Any, bundle: Any) -> tuple[A.Compose, A.Compose]:
    """(train, eval) pipelines for a resolved Config and its DataBundle."""
    a = cfg.aug
    size = cfg.data.img_size or bundle.img_size
    train = train_transform(size, a.crop_scale or bundle.crop_scale, a.crop_ratio,
                            bundle.hflip if a.hflip is None else a.hflip, a.color_jitter, a.autoaugment,
                            preset_of(cfg, bundle), a.pad)
    return train, eval_transform(size, eval_crop_pct(cfg, bundle))
