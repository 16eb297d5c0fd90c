"""Epoch samplers, distributed-aware from the start.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020,
arXiv:1910.09217, eq. 1: class j is drawn with probability p_j = n_j^q / sum_i n_i^q, q = 1
instance-balanced, q = 0 class-balanced, q = 1/2 square-root; progressively balanced (eq. 2):
p_j(t) = (1 - t/T) p_j^IB + (t/T) p_j^CB.  Zhou et al., BBN, CVPR 2020, arXiv:1912.02413, eq. 1:
the reversed sampler draws class i with probability proportional to N_max / N_i.
Within a class, images are drawn uniformly (weight p_j / n_j per image).

Every sampler makes the same global draw on every rank from a generator seeded by (seed, epoch),
then rank r takes items r, r+W, r+2W, ...: the global sampling distribution does not depend on the
world size.  Items are (index, epoch) so the data set can seed each sample's augmentation.
`set_position(k)` skips the first k items of this rank's epoch (exact mid-epoch resume).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from ..registry import SAMPLERS


class EpochSampler(Sampler):
    replacement = True

    def __init__(self, labels: np.ndarray, num_classes: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 total_epochs: int = 1, num_samples: int | None = None):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes, self.seed = num_classes, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.total_epochs = max(1, total_epochs)
        self.counts = np.bincount(self.labels, minlength=num_classes).astype(np.float64)  # (C,)
        n = num_samples or len(self.labels)
        self.per_rank = math.ceil(n / num_replicas)
        self.total = self.per_rank * num_replicas
        self.epoch, self.position = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0

    def set_position(self, items_done: int) -> None:
        self.position = items_done

    def class_probabilities(self, epoch: int) -> np.ndarray | None:
        """(C,) probabilities of drawing each class; None means a plain permutation."""
        return None

    def sample_weights(self, epoch: int) -> torch.Tensor | None:
        p = self.class_probabilities(epoch)
        if p is None:
            return None
        per_image = np.where(self.counts > 0, p / np.maximum(self.counts, 1), 0.0)  # (C,)
        return torch.as_tensor(per_image[self.labels], dtype=torch.float64)  # (N,)

    def global_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        w = self.sample_weights(epoch)
        if w is None:
            order = torch.randperm(len(self.labels), generator=g)
            reps = math.ceil(self.total / len(order))
            return order.repeat(reps)[: self.total]  # pad by wrapping
        return torch.multinomial(w, self.total, replacement=True, generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.global_order(self.epoch)[self.rank :: self.num_replicas]
        epoch, start = self.epoch, self.position
        for i in order[start:].tolist():
            yield (i, epoch)

    def __len__(self) -> int:
        return self.per_rank - self.position


def _power(counts: np.ndarray, q: float) -> np.ndarray:
    w = np.where(counts > 0, np.power(np.maximum(counts, 1), q), 0.0)
    return w / w.sum()


@SAMPLERS.register("instance")
class InstanceSampler(EpochSampler):
    """Instance-balanced (q = 1): every image once per epoch, shuffled."""

    replacement = False


@SAMPLERS.register("class_balanced")
class ClassBalancedSampler(EpochSampler):
    def class_probabilities(self, epoch: int) -> np.ndarray:
        return _power(self.counts, 0.0)


@SAMPLERS.register("sqrt")
class SqrtSampler(EpochSampler):
    def class_probabilities(self, epoch: int) -> np.ndarray:
        return _power(self.counts, 0.5)


@SAMPLERS.register("progressive")
class ProgressiveSampler(EpochSampler):
    """t = current epoch, T = total epochs (or data.progressive_epochs)."""

    def class_probabilities(self, epoch: int) -> np.ndarray:
        t = min(epoch / self.total_epochs, 1.0)
        return (1 - t) * _power(self.counts, 1.0) + t * _power(self.counts, 0.0)


@SAMPLERS.register("reversed")
class ReversedSampler(EpochSampler):
    def class_probabilities(self, epoch: int) -> np.ndarray:
        w = np.where(self.counts > 0, self.counts.max() / np.maximum(self.counts, 1), 0.0)
        return w / w.sum()


class SequentialShard(Sampler):
    """Evaluation: rank r takes r, r+W, ... with no padding, so every sample counts exactly once."""

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0):
        self.indices = list(range(rank, n, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
