"""Pictures and tables `imgcls eval` writes besides the confusion matrix: the reliability diagram
(Guo et al., arXiv:1706.04599, Fig. 1), the most-confused class pairs and a gallery of the most
confident mistakes."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .plots import _plt


def reliability_png(rel: dict[str, Any], ece: float, path: Path, title: str = "") -> None:
    """Accuracy per confidence bin against the diagonal (perfect calibration), the gap shaded; counts below."""
    plt = _plt()
    m, edges = rel["bins"], rel["edges"]
    width = 1.0 / m
    centres = [(edges[i] + edges[i + 1]) / 2 for i in range(m)]
    acc = [a if a is not None else 0.0 for a in rel["accuracy"]]
    conf = [c if c is not None else centres[i] for i, c in enumerate(rel["confidence"])]
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(centres, acc, width=width, edgecolor="#1f3b57", color="#4a7fb0", label="accuracy")
    gap_lo = [min(a, c) for a, c in zip(acc, conf, strict=True)]
    gap_h = [abs(c - a) if n else 0.0 for a, c, n in zip(acc, conf, rel["count"], strict=True)]
    ax.bar(centres, gap_h, bottom=gap_lo, width=width, color="#e07b7b", alpha=0.6, edgecolor="#a33",
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"reliability diagram, ECE {ece:.2f}% ({m} bins)")
    ax.legend(loc="upper left", fontsize=8)
    axc.bar(centres, rel["count"], width=width, color="#999", edgecolor="#555")
    axc.set_xlabel("confidence (top-1 probability)")
    axc.set_ylabel("images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confused_pairs_files(pairs: list[dict[str, Any]], csv_path: Path, json_path: Path | None = None) -> None:
    """true, pred, count, rate (percent of the true class's images) per pair, most confused first."""
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true", "pred", "count", "rate"])
        for p in pairs:
            w.writerow([p["true"], p["pred"], p["count"], f"{p['rate']:.4f}"])
    if json_path is not None:
        json_path.write_text(json.dumps(pairs, indent=2))


def mistakes_gallery_png(mistakes: list[dict[str, Any]], source: Any, class_names: list[str], path: Path,
                         cols: int = 4) -> int:
    """The most confident wrong predictions as captioned thumbnails; returns how many were drawn.

    `source` is the evaluated split's Source (its `load(i)` gives the original uint8 image)."""
    from ..data.decode import BadImage
    from .overlay import save_grid

    panels = []
    for m in mistakes:
        try:
            img = source.load(m["index"])
        except BadImage:
            continue
        name = Path(source.describe(m["index"])).name
        panels.append((img, f"{name}\ntrue: {class_names[m['true']]}\npred: {class_names[m['pred']]}"
                            f" ({m['confidence']:.2f})"))
    if panels:
        save_grid(path, panels, cols=cols, cell=160)
    return len(panels)
