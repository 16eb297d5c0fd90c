"""Plots written as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(confusion: torch.Tensor, class_names: list[str], path: Path, title: str = "",
                  pairs: int = 40) -> None:
    """Row-normalised confusion matrix.  Up to 60 classes with tick labels; above that (CUB-200) the ticks
    would overlap, so the axes show class indices, the colour scale is a square root (single confusions of a
    200-class row stay visible) and the `pairs` most-confused class pairs are listed beside the matrix."""
    import matplotlib.colors as mcolors

    from ..engine.metrics import confused_pairs

    plt = _plt()
    c = confusion.double()
    norm = c / c.sum(1, keepdim=True).clamp_min(1)  # rows sum to 1
    n = len(class_names)
    many = n > 60
    if many:
        fig, (ax, axt) = plt.subplots(1, 2, figsize=(20, 12), gridspec_kw={"width_ratios": [3, 2]})
        scale = mcolors.PowerNorm(gamma=0.5, vmin=0, vmax=1)
    else:
        size = min(4 + n * 0.35, 30)
        fig, ax = plt.subplots(figsize=(size, size))
        scale = mcolors.Normalize(vmin=0, vmax=1)
    im = ax.imshow(norm.numpy(), cmap="Blues", norm=scale, interpolation="nearest")
    if not many:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if c[i, j] > 0:
                    ax.text(j, i, int(c[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted" + (" (class index)" if many else ""))
    ax.set_ylabel("true" + (" (class index)" if many else ""))
    ax.set_title(title or "confusion matrix (row-normalised)" + (", sqrt colour scale" if many else ""))
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    if many:
        axt.axis("off")
        top = confused_pairs(confusion, class_names, pairs)
        index = {name: i for i, name in enumerate(class_names)}
        lines = [f"{k + 1:>2}. [{index[p['true']]}] {p['true'][:28]} -> [{index[p['pred']]}] {p['pred'][:28]}"
                 f"  {p['count']} ({p['rate']:.0f}%)" for k, p in enumerate(top)]
        axt.set_title("most confused pairs (true -> predicted, images, % of true class)", fontsize=10, loc="left")
        axt.text(0.0, 1.0, "\n".join(lines) or "no confusions", va="top", ha="left", family="monospace",
                 fontsize=9, transform=axt.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_csv(confusion: torch.Tensor, class_names: list[str], path: Path) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\pred", *class_names])
        for name, row in zip(class_names, confusion.tolist(), strict=True):
            w.writerow([name, *row])


def per_class_vs_frequency_png(per_class: list[float], counts: list[int], class_names: list[str], path: Path) -> None:
    """Per-class accuracy against training class frequency (long-tail picture)."""
    plt = _plt()
    order = sorted(range(len(counts)), key=lambda i: -counts[i])
    fig, ax1 = plt.subplots(figsize=(max(6, len(counts) * 0.25), 4))
    ax1.bar(range(len(order)), [counts[i] for i in order], color="#cfd8e3", label="training images")
    ax1.set_ylabel("training images")
    ax1.set_xlabel("classes, most frequent first")
    ax2 = ax1.twinx()
    ax2.plot(range(len(order)), [per_class[i] for i in order], "o-", color="#c0392b", label="accuracy")
    ax2.set_ylabel("accuracy (%)")
    ax2.set_ylim(0, 100)
    if len(order) <= 40:
        ax1.set_xticks(range(len(order)), [class_names[i] for i in order], rotation=90, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
