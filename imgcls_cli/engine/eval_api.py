"""Evaluate a checkpoint on a data split: the same code path the trainer uses each epoch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.dataset import ImageDataset
from ..data.device_prefetch import prefetch_to
from ..data.loader import DeviceNormalizer, make_loader
from ..data.sources import open_data
from ..data.transforms import transforms_from_config
from ..errors import DataError
from .checkpoint import Checkpoint, load_checkpoint
from .device import autocast, resolve_device
from .evaluator import EvalResult, evaluate


@dataclass
class EvalOutput:
    result: EvalResult
    summary: dict[str, Any]
    ckpt: Checkpoint
    source: Any = None  # the evaluated split's Source (EvalResult.mistakes index into it)


def _same_data(a: str, b: str) -> bool:
    """Whether two --data values name the same data set (a built-in name, or the same folder / pack)."""
    return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def eval_loader(ckpt: Checkpoint, data: str | None, split: str | None, batch_size: int | None, workers: int | None,
                device: torch.device):
    cfg = ckpt.config
    upd: dict[str, Any] = {}
    if data is not None and not _same_data(data, cfg.data.path):
        # another data set: its own held-out split (val/, else test/), as training would pick, unless --split
        upd["data.path"], upd["data.val_split"] = data, None
    if split is not None:
        upd["data.val_split"] = split
    if "data.path" in upd or (cfg.data.select_split == "val" and upd.get("data.val_split", "test") == "val"):
        # other data (which may hold only val/ or test/: no training images to carve from) needs no selection
        # split; nor does val/ of a run that selected on it (nothing was carved from its training images), whose
        # training split stays the one the run trained on
        upd["data.select_split"] = "none"
    if workers is not None:
        upd["data.workers"] = workers
    # the evaluated split is balanced and complete: no long-tail subsetting of val applies anyway
    cfg = cfg.replace(**upd) if upd else cfg
    bundle = open_data(cfg.data, class_names=ckpt.class_names)  # a tree of val/ (or test/) only will do
    if bundle.val is None or len(bundle.val) == 0:
        raise DataError(f"--data {cfg.data.path}: no validation split (val/ or test/) to evaluate on")
    if bundle.class_names != ckpt.class_names:
        raise DataError(f"--data {cfg.data.path}: its classes differ from the checkpoint's "
                        f"({len(bundle.class_names)} vs {len(ckpt.class_names)} classes)")
    if cfg.data.val_split != bundle.val_split:  # the split picked for a new --data: named in the summary
        cfg = cfg.replace(**{"data.val_split": bundle.val_split})
    _, eval_tf = transforms_from_config(cfg, bundle)
    ds = ImageDataset(bundle.val, eval_tf)
    bs = batch_size or cfg.train.eval_batch_size or cfg.train.batch_size * 2
    loader = prefetch_to(make_loader(ds, None, bs, cfg.data.workers, device.type == "cuda"), device, True)
    norm = DeviceNormalizer(ckpt.mean, ckpt.std, device, bool(cfg.train.channels_last) and device.type == "cuda")
    return cfg, bundle, loader, norm


def selection_loader(ckpt: Checkpoint, batch_size: int | None, workers: int | None, device: torch.device,
                     option: str = "--tau-norm auto"):
    """(cfg, loader, normaliser) over the checkpoint's own selection split (`data.select_split`), where tau and
    other values are chosen; never the reported split."""
    from ..errors import ImgclsError

    cfg = ckpt.config
    if workers is not None:
        cfg = cfg.replace(**{"data.workers": workers})
    bundle = open_data(cfg.data)
    if bundle.select is None or len(bundle.select) == 0:
        raise ImgclsError(f"{option}: the run of {ckpt.path} has no selection split (data.select_split="
                          f"{cfg.data.select_split}), and nothing is chosen on the reported split; give a number")
    if bundle.select_split == "carve":
        saved = ckpt.raw.get("select_indices")
        if saved is None:
            raise ImgclsError(f"{option}: {ckpt.path} was written before imgcls carved selection splits, so its model"
                              " trained on the images a carve would pick; give a number")
        if list(saved) != bundle.select_indices.tolist():
            raise DataError(f"{option}: --data {cfg.data.path}: the carved selection split differs from the one the"
                            " checkpoint was trained without (the data changed); give a number")
    _, eval_tf = transforms_from_config(cfg, bundle)
    bs = batch_size or cfg.train.eval_batch_size or cfg.train.batch_size * 2
    ds = ImageDataset(bundle.select, eval_tf)
    loader = prefetch_to(make_loader(ds, None, bs, cfg.data.workers, device.type == "cuda"), device, True)
    norm = DeviceNormalizer(ckpt.mean, ckpt.std, device, bool(cfg.train.channels_last) and device.type == "cuda")
    return cfg, loader, norm


def evaluate_checkpoint(path: str | Path, data: str | None = None, split: str | None = None,
                        batch_size: int | None = None, workers: int | None = None, device: str = "auto",
                        logits_transform: Any = None) -> EvalOutput:
    dev = resolve_device(device)
    ckpt = load_checkpoint(path, dev)
    cfg, bundle, loader, norm = eval_loader(ckpt, data, split, batch_size, workers, dev)
    from ..methods import task_class

    task = task_class(cfg)(cfg, ckpt.model, len(ckpt.class_names), ckpt.class_counts)
    amp = autocast(dev, cfg.train)
    bad: list[str] = []

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        if getattr(logits_transform, "wants_features", False):  # tau-norm / NCM replace the final layer
            from ..models.build import forward_with_features

            with amp:
                z, feats = forward_with_features(ckpt.model, x)  # (B, C), (B, D)
            return logits_transform(z, feats)
        with amp:
            z = task.eval_logits(ckpt.model, x)
        return logits_transform(z) if logits_transform is not None else z

    res = evaluate(logits_fn, loader, norm, len(ckpt.class_names), dev, on_bad=lambda b: bad.extend(r for _, r in b))
    summary = res.summary(ckpt.class_names, ckpt.class_counts)
    summary.update(checkpoint=str(path), data=cfg.data.path, split=cfg.data.val_split, skipped=bad)
    return EvalOutput(res, summary, ckpt, bundle.val)
