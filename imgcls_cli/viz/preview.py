"""A grid of augmented training samples, drawn with the run's own pipeline, to look at before training.

The images go through exactly what training uses: `open_data` -> the train albumentations pipeline
(`transforms_from_config`, seeded per sample as in `ImageDataset`) -> uint8 batch -> device
normalisation -> Mixup/CutMix (`data/mixing.py`) when configured, then back to uint8 for display.
Each tile is titled with its class (or, for mixed tiles, both classes and the weight of the first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def augmented_batch(cfg: Any, n: int = 32, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(n, H, W, 3) uint8 augmented training images and one title per image."""
    from ..data.dataset import ImageDataset
    from ..data.loader import DeviceNormalizer
    from ..data.sources import open_data
    from ..data.transforms import transforms_from_config
    from ..engine.setup import resolve_config

    bundle = open_data(cfg.data)
    cfg = resolve_config(cfg, bundle, torch.device("cpu"))
    train_tf, _ = transforms_from_config(cfg, bundle)
    ds = ImageDataset(bundle.train, train_tf, seed=seed)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds), size=min(n, len(ds)), replace=False)
    items = [ds[(int(i), 0)] for i in idx]
    items = [it for it in items if it[0] is not None]
    if not items:
        from ..errors import DataError

        raise DataError(f"--data {cfg.data.path}: none of the sampled training images could be decoded")
    images = torch.stack([it[0] for it in items])  # (B, 3, H, W) uint8
    labels = torch.tensor([it[1] for it in items])  # (B,)
    names = bundle.class_names
    titles = [names[int(y)] for y in labels]
    if cfg.aug.mixup > 0 or cfg.aug.cutmix > 0:
        from ..data.mixing import Mixer

        norm = DeviceNormalizer(bundle.mean, bundle.std, torch.device("cpu"))
        mixer = Mixer(cfg.aug, bundle.num_classes)
        x = norm(images)  # (B, 3, H, W) float
        p = mixer.sample(x.shape[0], x.shape[2], x.shape[3], torch.Generator().manual_seed(seed))
        x, _ = mixer.apply(x, labels, p)
        x = x / norm.inv_std + norm.mean  # back to 0..255
        images = x.round().clamp(0, 255).to(torch.uint8)
        if p.perm is not None:
            titles = [f"{names[int(labels[i])]}/{names[int(labels[j])]} {p.lam:.2f} {p.kind}"
                      for i, j in enumerate(p.perm.tolist())]
    return images.permute(0, 2, 3, 1).numpy(), titles  # (B, H, W, 3)


def preview_grid(cfg: Any, out_png: str | Path, n: int = 32, seed: int = 0) -> Path:
    """Write a PNG grid of `n` augmented training samples for the configured pipeline; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, titles = augmented_batch(cfg, n, seed)
    cols = int(np.ceil(np.sqrt(len(images) * 4 / 3)))
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], interpolation="nearest")
            ax.set_title(titles[k][:28], fontsize=6)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
