"""The training batches of each epoch, with the next epoch's loading started early.

DataLoader workers (persistent or not) only start on an epoch's batches when that epoch's iterator
is created.  Created at the top of the epoch, the first step waits for a worker to load a whole
batch while the GPU idles: at 448 px that is a visible share of a short epoch.  `prefetch(e)` creates
epoch e's iterator at the end of epoch e - 1, so the workers fill their queues during evaluation
and checkpointing.  The sampler is advanced to epoch e first, so the batches are exactly those a
late start would give (every draw depends on (seed, epoch, position), not on timing).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class EpochBatches:
    def __init__(self, loader: Any, sampler: Any, second: tuple[Any, Any] | None = None):
        """`second`: (sampler, loader) of a second stream zipped batch for batch (BBN)."""
        self.loader, self.sampler, self.second = loader, sampler, second
        self._ready: tuple[int, Iterator] | None = None

    def _make(self, epoch: int, position: int) -> Iterator:
        self.sampler.set_epoch(epoch)
        self.sampler.set_position(position)
        it: Iterator = iter(self.loader)
        if self.second is not None:
            self.second[0].set_epoch(epoch)
            self.second[0].set_position(position)
            it = zip(it, iter(self.second[1]), strict=False)
        return it

    def prefetch(self, epoch: int) -> None:
        """Start loading epoch `epoch` from its beginning now."""
        try:
            self._ready = (epoch, self._make(epoch, 0))
        except Exception as e:  # noqa: BLE001  (e.g. a worker died): raised where the epoch's batches are read,
            self._ready = (epoch, _raising(e))  # inside the trainer's loader-failure handling

    def start(self, epoch: int, position: int = 0) -> Iterator:
        """The batches of `epoch` from item `position` (a prefetched iterator when one matches)."""
        ready, self._ready = self._ready, None
        if ready is not None and ready[0] == epoch and position == 0:
            return ready[1]
        return self._make(epoch, position)


def _raising(error: Exception) -> Iterator:
    raise error
    yield  # a generator: the error comes at the first next()
