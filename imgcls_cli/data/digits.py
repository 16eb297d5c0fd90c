"""The built-in `digits` data set: scikit-learn's bundled 8x8 handwritten digits (real data, no
download), upsampled to 32x32 RGB uint8, with fixed stratified 80/10/10 train/val/test splits (seed 0,
independent of the training seed so every run sees the same held-out images): the best checkpoint and any
tuned value are chosen on val, the numbers are reported on test."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SPLIT_SEED = 0
SIZE = 32


def load_digits_arrays() -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """({"train" | "val" | "test": (images (N, 32, 32, 3) uint8, labels (N,) int64)}, class names)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)  # (N, 1, 32, 32)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)  # (N, 3, 32, 32)
    imgs = x.permute(0, 2, 3, 1).contiguous().numpy()  # (N, 32, 32, 3) uint8
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, held = train_test_split(idx, test_size=0.2, random_state=SPLIT_SEED, stratify=y)
    va, te = train_test_split(held, test_size=0.5, random_state=SPLIT_SEED, stratify=y[held])
    splits = {name: (imgs[np.sort(i)], y[np.sort(i)]) for name, i in (("train", tr), ("val", va), ("test", te))}
    return splits, [str(i) for i in range(10)]
