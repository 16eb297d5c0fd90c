"""Turn a Config into the objects a run needs: resolved config, data loaders, normaliser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config
from ..data.dataset import ImageDataset, collate
from ..data.device_decode import BatchDecoder, DeviceDecodeLoader, EncodedTrainSet, collate_encoded
from ..data.device_prefetch import prefetch_to
from ..data.loader import DeviceNormalizer, make_loader
from ..data.samplers import SequentialShard
from ..data.sources import DataBundle, open_data
from ..data.transforms import eval_crop_pct, preset_of, transforms_from_config
from ..errors import DataError, ImgclsError
from ..registry import SAMPLERS
from . import distributed as dist
from .recipe import resolve_recipe


def resolve_config(cfg: Config, bundle: DataBundle, device: torch.device) -> Config:
    """Fill the data-set defaults (None fields) so config.yaml states every value used."""
    return resolve_with_note(cfg, bundle, device)[0]


def resolve_with_note(cfg: Config, bundle: DataBundle, device: torch.device) -> tuple[Config, str]:
    """resolve_config, plus the one line naming the recipe defaults chosen (engine.recipe); "" if none."""
    upd, note = resolve_recipe(cfg, cfg.data.img_size or bundle.img_size, dist.world_size())
    if cfg.data.img_size is None:
        upd["data.img_size"] = bundle.img_size
    if cfg.data.val_split is None and bundle.val_split:
        upd["data.val_split"] = bundle.val_split
    upd["data.select_split"] = bundle.select_split or "none"
    preset = preset_of(cfg, bundle)
    if cfg.aug.preset is None:
        upd["aug.preset"] = preset
    if preset == "pad_crop" and cfg.aug.crop_scale is not None:
        raise ImgclsError(f"aug.crop_scale: the random-resized crop's option, and {cfg.data.path} trains with"
                          " aug.preset=pad_crop (drop it, or set aug.preset=random_resized_crop)")
    if preset == "pad_crop" and cfg.data.decode == "device":
        raise ImgclsError(f"data.decode=device does random-resized crop and flip only; {cfg.data.path} trains with"
                          " aug.preset=pad_crop (valid: aug.preset=random_resized_crop, or data.decode=workers)")
    if cfg.aug.eval_crop_pct is None:
        upd["aug.eval_crop_pct"] = eval_crop_pct(cfg, bundle)
    if cfg.aug.crop_scale is None and preset == "random_resized_crop":
        upd["aug.crop_scale"] = list(bundle.crop_scale)
    if cfg.aug.hflip is None:
        upd["aug.hflip"] = bundle.hflip
    if cfg.train.channels_last is None:
        upd["train.channels_last"] = device.type == "cuda" or (device.type == "cpu" and cfg.train.cpu_amp)
    if cfg.train.eval_batch_size is None:
        upd["train.eval_batch_size"] = cfg.train.batch_size * 2
    return (cfg.replace(**upd) if upd else cfg), note


@dataclass
class DataSetup:
    bundle: DataBundle
    train_set: ImageDataset
    val_set: ImageDataset | None
    train_sampler: Any
    train_loader: Any  # a DataLoader, wrapped: DeviceDecodeLoader (data.decode=device), DevicePrefetchLoader (CUDA)
    val_loader: Any  # the reported split: a DataLoader (a DevicePrefetchLoader around one on CUDA) or None
    normalizer: DeviceNormalizer
    select_loader: Any = None  # the selection split (best checkpoint), same kind of loader, or None


def make_sampler(name: str, cfg: Config, labels: Any, num_classes: int, salt: int = 0) -> Any:
    cls = SAMPLERS.get(name)
    return cls(labels, num_classes, seed=cfg.train.seed + salt, num_replicas=dist.world_size(), rank=dist.rank(),
               total_epochs=cfg.data.progressive_epochs or cfg.train.epochs)


def train_loader_for(cfg: Config, train_set: ImageDataset, sampler: Any, device: torch.device, seed: int) -> Any:
    """The training DataLoader; with data.decode=device wrapped so that its batches are decoded on `device`, else on
    CUDA with pinned memory so that each batch is copied to the device on a side stream during the step before."""
    on_device = cfg.data.decode == "device"
    bs, pin = cfg.train.batch_size, cfg.data.pin_memory and device.type == "cuda"
    loader = make_loader(train_set, sampler, bs, cfg.data.workers, pin, drop_last=sampler.per_rank > bs, seed=seed,
                         collate_fn=collate_encoded if on_device else collate)
    if not on_device:
        return prefetch_to(loader, device, pin)
    size = train_set.transform.transforms[0].size[0]  # the RandomResizedCrop's output side: the worker path's size
    return DeviceDecodeLoader(loader, BatchDecoder(train_set, size, device))


def setup_data(cfg: Config, bundle: DataBundle, device: torch.device) -> DataSetup:
    if len(bundle.train) == 0:
        raise DataError(f"--data {cfg.data.path}: the training split is empty")
    if bundle.num_classes < 2:  # (training only: eval, stats and pack may look at a one-class tree)
        raise DataError(f"--data {cfg.data.path}: needs at least 2 classes to train, found {bundle.num_classes}"
                        f" ({', '.join(bundle.class_names)})")
    train_tf, eval_tf = transforms_from_config(cfg, bundle)
    train_cls = EncodedTrainSet if cfg.data.decode == "device" else ImageDataset
    train_set = train_cls(bundle.train, train_tf, seed=cfg.train.seed)
    sampler = make_sampler(cfg.data.sampler, cfg, bundle.train.labels, bundle.num_classes)
    train_loader = train_loader_for(cfg, train_set, sampler, device, cfg.train.seed)
    val_set = val_loader = None
    if bundle.val is not None and len(bundle.val) > 0:
        val_set, val_loader = eval_loader_for(cfg, bundle.val, eval_tf, device)
    select_loader = None
    if bundle.select is not None and len(bundle.select) > 0:
        _, select_loader = eval_loader_for(cfg, bundle.select, eval_tf, device)
    norm = DeviceNormalizer(bundle.mean, bundle.std, device, bool(cfg.train.channels_last))
    return DataSetup(bundle, train_set, val_set, sampler, train_loader, val_loader, norm, select_loader)


def eval_loader_for(cfg: Config, source: Any, eval_tf: Any, device: torch.device) -> tuple[ImageDataset, Any]:
    """A held-out split's dataset and loader, sharded over the ranks in order."""
    pin = cfg.data.pin_memory and device.type == "cuda"
    ds = ImageDataset(source, eval_tf, seed=cfg.train.seed)
    shard = SequentialShard(len(ds), dist.world_size(), dist.rank())
    bs = cfg.train.eval_batch_size or cfg.train.batch_size * 2
    return ds, prefetch_to(make_loader(ds, shard, bs, cfg.data.workers, pin), device, pin)


def second_stream(cfg: Config, data: DataSetup, name: str, device: torch.device) -> tuple[Any, Any]:
    """A second batch stream over the same training set (BBN: the reversed sampler), seeded apart from the
    first (salt 1); it has as many batches per epoch as the main stream and is normalised the same way."""
    sampler = make_sampler(name, cfg, data.bundle.train.labels, data.bundle.num_classes, salt=1)
    return sampler, train_loader_for(cfg, data.train_set, sampler, device, cfg.train.seed + 1)


def open_and_resolve(cfg: Config, device: torch.device) -> tuple[Config, DataBundle]:
    bundle = open_data(cfg.data)
    return resolve_config(cfg, bundle, device), bundle
