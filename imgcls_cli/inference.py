"""Run a trained checkpoint on image files: class probabilities, top-k, CSV/JSON (timm's inference.py).

Preprocessing is the checkpoint's own evaluation pipeline (`data.transforms.eval_transform` at the saved
img_size and eval_crop_pct, the saved mean/std, the method's `Task.eval_logits`), batched through the same
Dataset / DataLoader / DeviceNormalizer as `imgcls eval`, so a file of the validation split gets exactly the
probabilities evaluation computes.  A file that cannot be decoded is listed in `unreadable`, never fatal.
`tta="flip"` averages the softmax of the image and of its horizontal mirror (mmpretrain's flip TTA).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ImgclsError

TTA = ("flip",)


@dataclass
class Predictions:
    files: list[Path]  # the images that were read, in input order
    probs: torch.Tensor  # (N, C) float32 class probabilities, rows in the order of `files`
    class_names: list[str]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason)
    checkpoint: Path | None = None

    def topk(self, k: int = 5) -> list[dict[str, Any]]:
        k = min(k, len(self.class_names))
        p, i = self.probs.topk(k, 1) if len(self.files) else (torch.empty(0, k), torch.empty(0, k, dtype=torch.long))
        return [{"file": str(f), "top": [{"class": self.class_names[c], "index": c, "prob": float(q)}
                                         for c, q in zip(ii.tolist(), pp.tolist(), strict=True)]}
                for f, pp, ii in zip(self.files, p, i, strict=True)]

    def write(self, path: str | Path, k: int = 5) -> None:
        """`.csv`: file, class_1, prob_1, ..., plus error rows; `.json`: predictions and unreadable files."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.topk(k)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps({"checkpoint": str(self.checkpoint), "predictions": rows,
                                        "unreadable": [{"file": str(f), "reason": r} for f, r in self.unreadable]},
                                       indent=2))
            return
        k = min(k, len(self.class_names))
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", *[c for j in range(1, k + 1) for c in (f"class_{j}", f"prob_{j}")], "error"])
            for r in rows:
                w.writerow([r["file"], *[v for t in r["top"] for v in (t["class"], f"{t['prob']:.6f}")], ""])
            for f, reason in self.unreadable:
                w.writerow([str(f), *[""] * (2 * k), reason])


def checkpoint_for(checkpoint: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """A .pt file, a run folder (its best.pt), or None: the latest run's best.pt."""
    from .engine.checkpoint import checkpoint_file
    from .engine.rundir import latest_run

    if checkpoint is None:
        run = latest_run(runs_dir)
        if run is None or not (run / "best.pt").is_file():
            raise ImgclsError(f"--checkpoint: no trained run found in {runs_dir}/; train first (imgcls train) or"
                              " pass --checkpoint RUN|CKPT")
        return run / "best.pt"
    return checkpoint_file(checkpoint, "--checkpoint")


def check_out(out: str | Path | None) -> None:
    if out is not None and Path(out).suffix.lower() not in (".csv", ".json"):
        raise ImgclsError(f"--out {out}: give a .csv or .json file")


@torch.no_grad()
def predict(images: Any, checkpoint: str | Path | None = None, topk: int | None = None, tta: str | None = None,
            batch_size: int | None = None, workers: int = 0, device: str = "auto", out: str | Path | None = None,
            progress: Any = None) -> Predictions:
    """Class probabilities for image files or folders (folders: their images, recursively, sorted).

    `topk` (used by `out`): None = min(5, classes); `progress(done, total)` is called after each batch."""
    from .data.dataset import ImageDataset
    from .data.loader import DeviceNormalizer, make_loader
    from .data.sources import FolderSource
    from .data.transforms import eval_transform
    from .engine.checkpoint import load_checkpoint
    from .engine.device import autocast, resolve_device
    from .methods import task_class
    from .viz.explain import collect_images

    if tta is not None and tta not in TTA:
        raise ImgclsError(f"--tta {tta}: unknown; valid: {', '.join(TTA)}")
    if batch_size is not None and batch_size < 1:
        raise ImgclsError(f"--batch-size {batch_size}: must be at least 1")
    if workers < 0:
        raise ImgclsError(f"--workers {workers}: must be 0 or more")
    check_out(out)
    paths = [Path(images)] if isinstance(images, (str, Path)) else [Path(p) for p in images]
    files = collect_images(paths)
    dev = resolve_device(device)
    path = checkpoint_for(checkpoint)
    ckpt = load_checkpoint(path, dev)
    topk = min(5, ckpt.num_classes) if topk is None else topk
    if not 1 <= topk <= ckpt.num_classes:
        raise ImgclsError(f"--topk {topk}: must be in 1..{ckpt.num_classes} (the number of classes)")
    cfg = ckpt.config
    tf = eval_transform(cfg.data.img_size or 224, cfg.aug.eval_crop_pct)  # img_size is resolved in a saved config
    ds = ImageDataset(FolderSource(files, [0] * len(files), cfg.data.decoder), tf)
    bs = batch_size or cfg.train.eval_batch_size or cfg.train.batch_size * 2
    loader = make_loader(ds, None, bs, workers, dev.type == "cuda")
    norm = DeviceNormalizer(ckpt.mean, ckpt.std, dev, bool(cfg.train.channels_last) and dev.type == "cuda")
    task = task_class(cfg)(cfg, ckpt.model, ckpt.num_classes, ckpt.class_counts)
    amp = autocast(dev, cfg.train)
    probs = torch.zeros(len(files), ckpt.num_classes)
    read = torch.zeros(len(files), dtype=torch.bool)
    unreadable: list[tuple[Path, str]] = []
    done = 0
    for batch in loader:
        for idx, reason in batch["bad"]:
            unreadable.append((files[idx], reason.removeprefix(f"{files[idx]}: ")))
        done += len(batch["bad"])
        if batch["images"] is not None:
            x = norm(batch["images"])  # (B, 3, S, S)
            with amp:
                p = task.eval_logits(ckpt.model, x).float().softmax(1)  # (B, C)
                if tta == "flip":
                    p = (p + task.eval_logits(ckpt.model, x.flip(3)).float().softmax(1)) / 2
            probs[batch["indices"]] = p.cpu()
            read[batch["indices"]] = True
            done += len(batch["indices"])
        if progress is not None:
            progress(done, len(files))
    keep = read.nonzero().flatten()
    res = Predictions([files[i] for i in keep.tolist()], probs[keep], ckpt.class_names, unreadable, path)
    if out is not None:
        res.write(out, topk)
    return res
