"""AutoAugment, RandAugment and TrivialAugment as albumentations transforms on uint8 (H, W, 3) arrays.

- AutoAugment: Cubuk et al., "AutoAugment: Learning Augmentation Strategies from Data",
  arXiv:1805.09501.  One sub-policy chosen uniformly; each of its two steps applied with its
  probability at its magnitude bin (10 bins), with a random sign for signed operations.
- RandAugment: Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced
  search space", arXiv:1909.13719.  N = 2 operations chosen uniformly, magnitude M = 9 of 31 bins.
- TrivialAugment: Muller & Hutter, "TrivialAugment: Tuning-free Yet State-of-the-Art Data
  Augmentation", arXiv:2103.10158 (the "wide" space).  One operation, a uniform magnitude bin of 31.

Sampling follows torchvision's AutoAugment / RandAugment / TrivialAugmentWide (same operations,
bins and signs) but every random draw comes from albumentations' per-transform `py_random`, so the
per-sample seeding in `data/dataset.py` makes the result reproducible and independent of workers.
Operations are implemented in `augment_ops.py` (OpenCV/numpy, no PIL round trip).
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np

from ..registry import AUTOAUGMENT
from .augment_ops import apply_op, magnitude_bins
from .autoaugment_policies import POLICIES, SubPolicy

Op = tuple[str, float]  # (operation name, signed magnitude)


class _PolicyTransform(A.ImageOnlyTransform):
    """Base class: subclasses override `sample_ops(height, width)` -> the operations for one image."""

    needs_numpy_rng = False  # every draw comes from `py_random`: the data set can skip building a numpy Generator

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def sample_ops(self, height: int, width: int) -> list[Op]:
        raise NotImplementedError  # abstract hook

    def _signed(self, value: float, signed: bool) -> float:
        return -value if signed and self.py_random.random() < 0.5 else value

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        return {"ops": self.sample_ops(h, w)}

    def apply(self, img: np.ndarray, ops: list[Op] | None = None, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3:
            raise ValueError(f"{type(self).__name__} expects uint8 (H, W, C) images, got {img.dtype} {img.shape}")
        for name, magnitude in ops or []:
            img = apply_op(img, name, magnitude)
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


class AutoAugment(_PolicyTransform):
    def __init__(self, policy: str = "imagenet", p: float = 1.0):
        super().__init__(p=p)
        self.policy_name = policy
        self.policy: list[SubPolicy] = POLICIES[policy]

    def sample_ops(self, height: int, width: int) -> list[Op]:
        sub = self.policy[self.py_random.randrange(len(self.policy))]
        ops: list[Op] = []
        for name, prob, bin_ in sub:
            # draw order per step: apply?, sign (torchvision draws probs and signs for both steps)
            apply, flip = self.py_random.random() <= prob, self.py_random.random() < 0.5
            if not apply:
                continue
            mags, signed = magnitude_bins(name, 10, height, width)
            m = float(mags[bin_]) if bin_ is not None else 0.0
            ops.append((name, -m if signed and flip else m))
        return ops


class RandAugment(_PolicyTransform):
    OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
           "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_bins: int = 31, p: float = 1.0):
        super().__init__(p=p)
        self.num_ops, self.magnitude, self.num_bins = num_ops, magnitude, num_bins

    def sample_ops(self, height: int, width: int) -> list[Op]:
        ops: list[Op] = []
        for _ in range(self.num_ops):
            name = self.OPS[self.py_random.randrange(len(self.OPS))]
            mags, signed = magnitude_bins(name, self.num_bins, height, width)
            ops.append((name, self._signed(float(mags[self.magnitude]), signed)))
        return ops


class TrivialAugmentWide(_PolicyTransform):
    OPS = RandAugment.OPS

    def __init__(self, num_bins: int = 31, p: float = 1.0):
        super().__init__(p=p)
        self.num_bins = num_bins

    def sample_ops(self, height: int, width: int) -> list[Op]:
        name = self.OPS[self.py_random.randrange(len(self.OPS))]
        mags, signed = magnitude_bins(name, self.num_bins, height, width, wide=True)
        m = float(mags[self.py_random.randrange(self.num_bins)])
        return [(name, self._signed(m, signed))]


AUTOAUGMENT.add("imagenet", lambda: AutoAugment("imagenet"), paper="arXiv:1805.09501")
AUTOAUGMENT.add("cifar10", lambda: AutoAugment("cifar10"), paper="arXiv:1805.09501")
AUTOAUGMENT.add("svhn", lambda: AutoAugment("svhn"), paper="arXiv:1805.09501")
AUTOAUGMENT.add("randaugment", RandAugment, paper="arXiv:1909.13719")
AUTOAUGMENT.add("trivialaugment", TrivialAugmentWide, paper="arXiv:2103.10158")
