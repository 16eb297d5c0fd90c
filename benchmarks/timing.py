"""Shared timing for the benchmark scripts: warm up, then the median of three timed runs."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def median_rate(step: Callable[[], None], items: int, steps: int, warm: int, device: str | torch.device
                ) -> tuple[float, float]:
    """(items per second of `step`, median of 3 runs of `steps` calls; seconds spent warming up)."""
    cuda = torch.device(device).type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(warm):
        step()
    sync()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(3):
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append((time.perf_counter() - t) / steps)
    return items / sorted(times)[1], warm_s
