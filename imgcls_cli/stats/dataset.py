"""Data-set statistics: class counts, imbalance, many/medium/few bins, sizes, mean/std, bad files.

Counts come from the full label arrays.  Image sizes, channel mean/std and unreadable files come
from decoding a seeded sample of at most `max_images` images (all of them when the data set is
smaller); the report says how many were scanned.  Mean/std are per channel over every pixel of
the scanned images, on uint8 / 255 in [0, 1] (the convention of torchvision's normalisation).
Bins follow the long-tail literature (Liu et al., OLTR, arXiv:1904.05160): many > 100,
medium 20-100, few < 20 training images.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..data.decode import BadImage
from ..data.sources import DataBundle, Source, open_data

MANY, FEW = 100, 20


def bins(counts: list[int]) -> dict[str, int]:
    """Number of classes with > 100, 20-100 and < 20 training images."""
    c = np.asarray(counts)
    return {"many": int((c > MANY).sum()), "medium": int(((c >= FEW) & (c <= MANY)).sum()), "few": int((c < FEW).sum())}


def _scan(sources: list[tuple[str, Source]], max_images: int, seed: int) -> dict[str, Any]:
    items = [(name, src, i) for name, src in sources for i in range(len(src))]
    total = len(items)
    if total > max_images:
        pick = np.sort(np.random.default_rng(seed).choice(total, max_images, replace=False))
        items = [items[int(k)] for k in pick]
    s = np.zeros(3)  # per-channel sum of x, x in [0, 1]
    s2 = np.zeros(3)  # per-channel sum of x^2
    n_px = 0
    sizes: Counter[tuple[int, int]] = Counter()
    bad: list[dict[str, str]] = []
    for split, src, i in items:
        try:
            img = src.load(i)  # (H, W, 3) uint8
        except BadImage as e:
            bad.append({"split": split, "file": src.describe(i), "reason": str(e)})
            continue
        sizes[(int(img.shape[1]), int(img.shape[0]))] += 1
        x = img.reshape(-1, 3).astype(np.float64) / 255.0  # (H*W, 3)
        s += x.sum(0)
        s2 += np.square(x).sum(0)
        n_px += x.shape[0]
    mean = s / max(n_px, 1)
    std = np.sqrt(np.maximum(s2 / max(n_px, 1) - mean**2, 0.0))
    ws = np.repeat([w for w, _ in sizes], list(sizes.values())) if sizes else np.zeros(1)
    hs = np.repeat([h for _, h in sizes], list(sizes.values())) if sizes else np.zeros(1)
    return {
        "scanned": len(items), "total_images": total,
        "mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std],
        "sizes": {"width": {"min": int(ws.min()), "median": float(np.median(ws)), "max": int(ws.max())},
                  "height": {"min": int(hs.min()), "median": float(np.median(hs)), "max": int(hs.max())},
                  "distinct": len(sizes),
                  "most_common": [[f"{w}x{h}", c] for (w, h), c in sizes.most_common(10)]},
        "unreadable": bad,
    }


def bundle_stats(bundle: DataBundle, max_images: int = 5000, seed: int = 0) -> dict[str, Any]:
    names = bundle.class_names
    train = bundle.class_counts()
    val = np.bincount(bundle.val.labels, minlength=len(names)).tolist() if bundle.val is not None else None
    nonzero = [c for c in train if c > 0]
    ratio = (max(train) / min(train)) if min(train) > 0 else None
    sources = [("train", bundle.train)] + ([(bundle.val_split or "val", bundle.val)] if bundle.val is not None else [])
    return {
        "kind": "data", "name": bundle.name, "num_classes": len(names), "class_names": list(names),
        "num_train": int(sum(train)), "num_val": int(sum(val)) if val is not None else 0,
        "val_split": bundle.val_split,
        "train_counts": dict(zip(names, map(int, train), strict=True)),
        "val_counts": dict(zip(names, map(int, val), strict=True)) if val is not None else None,
        "imbalance_ratio": ratio, "empty_classes": len(train) - len(nonzero),
        "bins": bins(train), **_scan(sources, max_images, seed),
    }


def dataset_stats(path: str, imbalance_ratio: float | None = None, max_images: int = 5000,
                  seed: int = 0) -> dict[str, Any]:
    """Statistics of a data set (folder tree, .h5 pack, digits) as `imgcls stats DATA` reports them."""
    from pydantic import ValidationError

    from ..config import DataConfig
    from ..errors import ImgclsError

    try:
        # every training image: the carved selection split is a training protocol, not a property of the data
        data_cfg = DataConfig(path=str(path), imbalance_ratio=imbalance_ratio, select_split="none")
    except ValidationError as e:  # the only user value besides the path: --imbalance-ratio (>= 1, finite)
        reason = e.errors()[0]["msg"].removeprefix("Value error, ")
        raise ImgclsError(f"--imbalance-ratio {imbalance_ratio}: {reason} (1 = balanced, 100 = CIFAR-10-LT)") from None
    bundle = open_data(data_cfg)
    out = bundle_stats(bundle, max_images, seed)
    out["data"] = str(path)
    out["imbalance_ratio_option"] = imbalance_ratio
    return out


def histogram_png(stats: dict[str, Any], path: str | Path) -> None:
    """Training images per class, sorted by count (the long-tail view), bins shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted(stats["train_counts"].items(), key=lambda kv: -kv[1])
    n = len(counts)
    fig, ax = plt.subplots(figsize=(min(4 + 0.25 * n, 24), 4))
    colours = ["tab:blue" if c > MANY else "tab:orange" if c >= FEW else "tab:red" for _, c in counts]
    ax.bar(range(n), [c for _, c in counts], color=colours)
    if n <= 60:
        ax.set_xticks(range(n), [k for k, _ in counts], rotation=90, fontsize=7)
    ax.set_ylabel("training images")
    ratio = stats["imbalance_ratio"]
    ax.set_title(f"{stats['name']}: {n} classes, imbalance ratio {ratio:.1f}" if ratio else f"{stats['name']}")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
