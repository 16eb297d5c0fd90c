"""The map-style Dataset fed to the DataLoader, and its collate function.

A sampler item is either an index or (index, epoch).  With (index, epoch) the augmentation of
that sample is seeded by (seed, epoch, index), so it does not depend on the number of workers,
their order, or whether the run was resumed.  A file that cannot be decoded is dropped from its
batch and reported with its reason (never replaced by another sample, whose label would differ).
"""

from __future__ import annotations

import random
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .decode import BadImage
from .sources import Source

_M64 = (1 << 64) - 1


def _mix_seed(*values: int) -> int:
    """A well-mixed 64-bit seed from small integers (splitmix64 finaliser applied per value)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _M64)) * 0xBF58476D1CE4E5B9 & _M64
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & _M64
        h ^= h >> 29
    return h


class ImageDataset(Dataset):
    def __init__(self, source: Source, transform: Any | None, seed: int = 0):
        self.source, self.transform, self.seed = source, transform, seed

    def __len__(self) -> int:
        return len(self.source)

    def _seed_transform(self, index: int, epoch: int) -> None:
        s = _mix_seed(self.seed, epoch, index)  # ~1 us; np.random.SeedSequence costs ~12 us per sample
        # a numpy Generator costs ~20 us to build: skipped when no transform of the pipeline draws from it
        np_rng = np.random.default_rng(s) if getattr(self.transform, "needs_numpy_rng", True) else None
        self.transform.set_random_state(np_rng, random.Random(s))

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor | None, int, int, str | None]:
        index, epoch = (item if isinstance(item, tuple) else (item, 0))
        index = int(index)
        label = int(self.source.labels[index])
        try:
            img = self.source.load(index)  # (H, W, 3) uint8
        except BadImage as e:
            return None, label, index, f"{self.source.describe(index)}: {e}"
        if self.transform is not None:
            self._seed_transform(index, epoch)
            img = self.transform(image=img)["image"]
        return torch.from_numpy(to_planar(img)), label, index, None  # (3, H, W) uint8, contiguous


def to_planar(img: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> contiguous (C, H, W): one OpenCV split here makes the batch a plain memcpy later."""
    if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and img.strides[1] == 3 and img.strides[2] == 1:
        out = np.empty((3, img.shape[0], img.shape[1]), np.uint8)
        cv2.split(img, [out[0], out[1], out[2]])  # writes into the planes of `out`
        return out
    return np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))


def _stack(images: list[torch.Tensor]) -> torch.Tensor:
    out = None
    if torch.utils.data.get_worker_info() is not None:
        # in a loader worker, stack straight into shared memory (as torch's default_collate does): the batch
        # then crosses to the main process without another copy
        numel = sum(x.numel() for x in images)
        storage = images[0]._typed_storage()._new_shared(numel, device=images[0].device)
        out = images[0].new(storage).resize_(len(images), *images[0].shape)
    return torch.stack(images, out=out)


def split_bad(items: list[tuple[Any, int, int, str | None]]) -> tuple[list[Any], list[tuple[int, str | None]]]:
    """Items whose payload is there, and (index, reason) of those dropped as unreadable."""
    return [it for it in items if it[0] is not None], [(it[2], it[3]) for it in items if it[0] is None]


def collate(items: list[tuple[torch.Tensor | None, int, int, str | None]]) -> dict[str, Any]:
    good, bad = split_bad(items)
    if not good:
        return {"images": None, "targets": None, "indices": None, "bad": bad}
    return {
        "images": _stack([it[0] for it in good]),  # (B, 3, H, W) uint8
        "targets": torch.tensor([it[1] for it in good], dtype=torch.long),  # (B,)
        "indices": torch.tensor([it[2] for it in good], dtype=torch.long),  # (B,)
        "bad": bad,
    }
