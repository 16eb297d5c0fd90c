"""training_curves.png: train/val loss, train/val top-1 and the learning rate against the epoch.

Drawn with matplotlib's object API (a Figure on an Agg canvas, no pyplot state) at a small size, so
redrawing it after every epoch costs ~0.1 s; written to a temporary file and renamed, so a viewer never
reads half a PNG.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def training_curves_png(records: list[dict[str, Any]], path: Path, epochs: int | None = None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ep = [r["epoch"] for r in records]
    # val_* are measured on the selection split (metrics.jsonl's val_split: val or carve), never the reported one
    split = next((r["val_split"] for r in reversed(records) if isinstance(r.get("val_split"), str)), None)

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(12, 3.4), dpi=90)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    for ax, keys, title in ((ax_loss, ("train_loss", "val_loss"), "loss"),
                            (ax_acc, ("train_acc", "val_top1"), "top-1 (%)"),
                            (ax_lr, ("lr",), "learning rate (end of epoch)")):
        for key in keys:
            x, y = series(key)
            if x:
                label = f"{key} ({split})" if split and key.startswith("val_") else key
                ax.plot(x, y, "o-" if len(x) < 30 else "-", ms=3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xlim(0.5, max(epochs, max(ep, default=1)) + 0.5)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
