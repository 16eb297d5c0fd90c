"""Plots written as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(confusion: torch.Tensor, class_names: list[str], path: Path, title: str = "") -> None:
    plt = _plt()
    c = confusion.double()
    norm = c / c.sum(1, keepdim=True).clamp_min(1)  # rows sum to 1
    n = len(class_names)
    size = min(4 + n * 0.35, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 60:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if c[i, j] > 0:
                    ax.text(j, i, int(c[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
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
