"""engine/epochs.py: an epoch's batches started early are exactly the batches of a late start."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from imgcls_cli.engine.epochs import EpochBatches
from imgcls_cli.registry import SAMPLERS


class Items(Dataset):
    """Returns the sampler item itself: (index, epoch)."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, item):
        index, epoch = item
        return torch.tensor([index, epoch])


def _loader(sampler, workers: int) -> DataLoader:
    kw = {"persistent_workers": True} if workers else {}
    return DataLoader(Items(), batch_size=4, sampler=sampler, num_workers=workers,
                      generator=torch.Generator().manual_seed(0), **kw)


def _epochs(workers: int, prefetch: bool, name: str = "progressive") -> list[list[list[int]]]:
    import imgcls_cli.components_all  # noqa: F401

    labels = np.arange(40) % 4
    sampler = SAMPLERS.get(name)(labels, 4, seed=3, total_epochs=3)
    second = SAMPLERS.get("reversed")(labels, 4, seed=4, total_epochs=3)
    eb = EpochBatches(_loader(sampler, workers), sampler, (second, _loader(second, workers)))
    out = []
    for epoch in range(3):
        out.append([torch.cat(b).tolist() for b in eb.start(epoch)])
        if prefetch and epoch < 2:
            eb.prefetch(epoch + 1)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_prefetched_epochs_equal_late_starts(workers: int) -> None:
    late = _epochs(workers, prefetch=False)
    early = _epochs(workers, prefetch=True)
    assert early == late
    assert all(r[1] == e for e, batches in enumerate(late) for b in batches for r in b)  # each item's epoch
    assert late[0] != late[1]  # epochs differ: the test would see a stale epoch


def test_resume_position_ignores_a_prefetch_of_another_start() -> None:
    import imgcls_cli.components_all  # noqa: F401

    labels = np.arange(40) % 4
    sampler = SAMPLERS.get("instance")(labels, 4, seed=3, total_epochs=2)
    eb = EpochBatches(_loader(sampler, 0), sampler)
    full = [b.tolist() for b in eb.start(1)]
    eb.prefetch(1)
    assert [b.tolist() for b in eb.start(1, position=8)] == full[2:]
