"""Host-to-device copies of image batches (training and evaluation) on a side CUDA stream, one batch ahead.

Why: `images.to(device, non_blocking=True)` on the training stream returns at once on the host, but on
the GPU the copy is ordered between two steps, and the SMs wait for it.  At 448 px a uint8 batch of 64
is 38.5 MB, 1-2 ms over PCIe against a ~55 ms ResNet-50 step: a few percent of the end-to-end rate
(issue 10: JPEG files -> GPU at >= 95 % of the synthetic-input rate).  Issued on a second stream while
the previous step computes, the copy runs on the copy engine in parallel with the step; the training
stream only waits (on the GPU, not the host) for the batch it is about to use.  The same pattern as
timm's PrefetchLoader and NVIDIA's Apex/DALI examples.

Memory safety: device tensors allocated on the side stream are `record_stream`-ed on the training
stream, so the caching allocator does not reuse their memory before the step that reads them is done;
PyTorch's pinned-host allocator keeps each pinned source buffer until its copy has finished.

Order and errors are those of the plain loader: the same batches in the same order, and a loader
error surfaces when the batch it replaced would have been read, after every earlier batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from .loader import LoaderWrapper

Pending = tuple[dict[str, Any] | None, Exception | None] | None
# the batch tensor worth overlapping; targets (B int64) and indices stay on the host, where every consumer
# of a batch expects them (the trainer and evaluator copy targets themselves; feature collectors keep them there)
MOVED = ("images",)


def prefetch_to(loader: Any, device: torch.device, pinned: bool) -> Any:
    """`loader` with side-stream copies where they pay (CUDA, pinned batches), else `loader` itself."""
    return DevicePrefetchLoader(loader, device) if pinned and device.type == "cuda" else loader


class DevicePrefetchLoader(LoaderWrapper):
    """A DataLoader (with pinned batches) whose batches arrive with `images` already on `device`."""

    def __init__(self, loader: Any, device: torch.device):
        super().__init__(loader)
        self.device = device

    def __iter__(self) -> Iterator[dict[str, Any]]:
        it = iter(self.loader)  # now, not at the first next(): EpochBatches.prefetch starts the workers early
        return self._batches(it)

    def _batches(self, it: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        copy_stream = torch.cuda.Stream(self.device)
        pending = self._fetch(it, copy_stream)
        while pending is not None:
            batch, error = pending
            if error is not None:
                raise error
            train_stream = torch.cuda.current_stream(self.device)
            train_stream.wait_stream(copy_stream)  # a GPU-side wait for this batch's copy; the host goes on
            for k in MOVED:
                if isinstance(batch.get(k), torch.Tensor):
                    batch[k].record_stream(train_stream)
            pending = self._fetch(it, copy_stream)  # the next batch's copy overlaps the step on this one
            yield batch

    def _fetch(self, it: Iterator[dict[str, Any]], stream: Any) -> Pending:
        """(next batch, its tensors being copied on `stream`; None) or (None, the loader's error); None at the end."""
        try:
            batch = next(it)
        except StopIteration:
            return None
        except Exception as e:  # noqa: BLE001  (raised in order, once the batches before it are used)
            return None, e
        with torch.cuda.stream(stream):
            moved = {k: v.to(self.device, non_blocking=True) if k in MOVED and isinstance(v, torch.Tensor) else v
                     for k, v in batch.items()}
        return moved, None
