"""DataLoaders with uint8 batches, and normalisation on the device.

Batches stay uint8 (B, 3, H, W) through collation, pinning and the host-to-device copy (4x fewer
bytes than float32); `DeviceNormalizer` turns them into normalised float tensors on the device.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .dataset import ImageDataset, collate


def _worker_init(worker_id: int) -> None:
    # Each worker gets a distinct, seed-derived torch seed; sample-level augmentation is seeded
    # per (seed, epoch, index) in ImageDataset, so nothing depends on worker scheduling.
    info = torch.utils.data.get_worker_info()
    torch.manual_seed(info.seed % 2**63)
    # Stop signals sent to the whole process group (timeout, scancel, kill -- -PGID, Ctrl-C) are the main
    # process's to handle: it saves and shuts its workers down.  A worker killed by the group's SIGTERM would
    # instead surface as "DataLoader worker ... is killed by signal" wherever the main thread is (mid-save).
    # A second SIGTERM ends the worker: that is the last-resort terminate() of a worker that does not exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _second_sigterm_ends)


def _second_sigterm_ends(signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def make_loader(dataset: ImageDataset, sampler: Sampler | None, batch_size: int, workers: int,
                pin_memory: bool, drop_last: bool = False, seed: int = 0,
                collate_fn: Callable[[list[Any]], dict[str, Any]] = collate) -> DataLoader:
    kw: dict[str, Any] = {}
    if workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=_worker_init)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      pin_memory=pin_memory, drop_last=drop_last, collate_fn=collate_fn,
                      generator=torch.Generator().manual_seed(seed), **kw)


class LoaderWrapper:
    """Base of loaders that transform another loader's batches: length and attributes (batch_size, sampler, ...)
    are the wrapped loader's; subclasses define `__iter__`, creating the inner iterator at once (not at the
    first next()), so that EpochBatches.prefetch starts the workers early."""

    def __init__(self, loader: Any):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:  # only for names this class does not define
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


class DeviceNormalizer:
    """uint8 (B, 3, H, W) on the host -> normalised float (B, 3, H, W) on the device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                 channels_last: bool = False):
        self.device = device
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0  # (1, 3, 1, 1)
        self.inv_std = 1.0 / (torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0)
        self.shift = -self.mean * self.inv_std  # (1, 3, 1, 1)
        # on the CPU the one-pass LUT below writes NCHW; a channels_last model converts at its first conv
        self.memory_format = torch.channels_last if channels_last and device.type != "cpu" else torch.contiguous_format

        # CPU: (x - mean) / std per channel in one OpenCV pass from uint8, as a 256-entry float32 table per channel
        # (cv2.LUT: ~0.6 ns per element, cv2.addWeighted from uint8 ~0.9 ns, torch's uint8 -> float alone ~2 ns)
        self._pool: list[np.ndarray] = []
        ramp = np.arange(256, dtype=np.float64)
        self._cpu_tables = [((ramp - m * 255.0) / (s * 255.0)).astype(np.float32)
                            for m, s in zip(mean, std, strict=True)]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if (self.device.type == "cpu" and images.device.type == "cpu" and images.dtype == torch.uint8
                and images.dim() == 4 and images.shape[1] == len(self._cpu_tables) and images.is_contiguous()
                and self.memory_format == torch.contiguous_format):
            return self._cpu_uint8(images)
        x = images.to(self.device, non_blocking=True)
        if not x.is_floating_point():  # one pass: reads uint8, writes float in the model's memory format
            out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=self.memory_format)
            return torch.addcmul(self.shift, x, self.inv_std, out=out)  # x * inv_std - mean * inv_std
        x = x.contiguous(memory_format=self.memory_format)
        x = x.float() if x.dtype != torch.float32 else x.clone()  # a new tensor: safe to update in place
        return x.sub_(self.mean).mul_(self.inv_std)  # in place: no extra (B, 3, H, W) float temporaries

    def _cpu_uint8(self, images: torch.Tensor) -> torch.Tensor:
        import cv2

        b, c, h, w = images.shape
        buf = self._free_buffer((b, c, h * w))
        src = images.numpy().reshape(b, c, h * w)
        for k, table in enumerate(self._cpu_tables):  # cv2 writes the (B, H*W) plane of each channel in place
            cv2.LUT(src[:, k], table, dst=buf[:, k])
        return torch.from_numpy(buf).view(b, c, h, w)

    def _free_buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 array of `shape` that no live tensor uses, recycled from earlier batches.

        A fresh 224-px batch costs as much in first-touch page faults as the normalisation itself.  A tensor made
        by torch.from_numpy keeps its array referenced until the last tensor, view or autograd-saved copy of
        it is freed, so an array whose only references are this pool's is safe to overwrite.
        """
        for arr in self._pool:
            if arr.shape == shape and sys.getrefcount(arr) <= 3:  # the pool's list, `arr`, getrefcount's argument
                return arr
        arr = np.empty(shape, np.float32)
        self._pool = [arr, *self._pool[:1]]  # two: the step's batch is still alive while the next one is made
        return arr
