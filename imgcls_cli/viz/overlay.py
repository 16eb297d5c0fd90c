"""Heat-map overlays: a matplotlib colour map alpha-blended over the photo, with a caption.

`blend` works on arrays (uint8 (H, W, 3) image, float (H, W) map in [0, 1]); `save_overlay`
writes one captioned PNG and `save_grid` a grid of captioned panels (matplotlib, Agg backend).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ImgclsError
from .plots import _plt


def colorize(heat: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """(H, W) in [0, 1] -> uint8 (H, W, 3) through a matplotlib colour map."""
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise ImgclsError(f"--cmap: unknown colour map {cmap!r}; e.g. jet, turbo, inferno, viridis, magma") from None
    rgba = cm(np.clip(heat, 0.0, 1.0))  # (H, W, 4) floats
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def blend(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """alpha * colour(heat) + (1 - alpha) * image, uint8 (H, W, 3); heat must match the image's H x W."""
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heat map {heat.shape} does not match the image {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ImgclsError(f"--alpha: must be in [0, 1], got {alpha}")
    out = alpha * colorize(heat, cmap).astype(np.float32) + (1.0 - alpha) * image.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale so the longer side is at most `max_side` (display only; raw maps keep full size)."""
    h, w = image.shape[:2]
    s = max_side / max(h, w)
    if s >= 1.0:
        return image
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def save_overlay(path: Path, overlay: np.ndarray, caption: str, max_side: int = 512) -> None:
    plt = _plt()
    img = shrink(overlay, max_side)
    h, w = img.shape[:2]
    dpi = 100
    fig = plt.figure(figsize=(max(w, 240) / dpi, (h + 36) / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, h / (h + 36)))
    ax.imshow(img)
    ax.axis("off")
    fig.text(0.5, 1 - 18 / (h + 36), caption, ha="center", va="center", fontsize=8)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def save_grid(path: Path, panels: list[tuple[np.ndarray, str]], cols: int = 4, cell: int = 256) -> None:
    """Several captioned overlays in one PNG, `cols` per row, each at most `cell` pixels wide."""
    plt = _plt()
    cols = max(1, min(cols, len(panels)))
    rows = (len(panels) + cols - 1) // cols
    shown = [shrink(img, cell) for img, _ in panels]
    height = max(im.shape[0] * cell / im.shape[1] for im in shown)  # tallest panel at `cell` width
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell / 100, rows * (height + 40) / 100), dpi=100,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, im, (_, caption) in zip(axes.flat, shown, panels, strict=False):
        ax.imshow(im)
        ax.set_title(caption, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
