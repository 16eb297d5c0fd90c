"""Long-tailed subsets (CIFAR-LT protocol).

Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss" (LDAM,
arXiv:1906.07413) and Cui et al. (arXiv:1901.05555): class i keeps
n_i = floor(n_max * R^(-i/(C-1))) images (exponential profile); the step profile keeps n_max for
the first half of the classes and n_max / R for the rest.  The first n_i images of each class (in
file order) are kept, as in ../shared/data/cifar10_jpg/README.md, so the subset is deterministic.
"""

from __future__ import annotations

import math

import numpy as np


def longtail_counts(n_max: int, num_classes: int, ratio: float, profile: str = "exp") -> list[int]:
    if num_classes == 1 or ratio == 1.0:
        return [n_max] * num_classes
    if profile == "step":
        half = num_classes // 2
        return [n_max] * half + [max(1, int(n_max / ratio))] * (num_classes - half)
    return [max(1, math.floor(n_max * ratio ** (-i / (num_classes - 1)) + 1e-9)) for i in range(num_classes)]


def longtail_indices(labels: np.ndarray, num_classes: int, ratio: float = 1.0, profile: str = "exp",
                     max_per_class: int | None = None) -> np.ndarray:
    counts = np.bincount(labels, minlength=num_classes)
    n_max = int(counts.max()) if max_per_class is None else min(int(counts.max()), max_per_class)
    want = longtail_counts(n_max, num_classes, ratio, profile)
    keep = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        keep.append(idx[: min(want[c], len(idx))])
    return np.sort(np.concatenate(keep))
