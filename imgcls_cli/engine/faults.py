"""Fault handling helpers for the training loop: loader crashes, stop signals, frozen BatchNorm (non-finite
steps: step_guard.py).

Under DDP every decision that changes control flow (skip a step, stop on a signal) is agreed by
all ranks through one all-reduce, so no rank waits forever in a collective another rank skipped.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import ImgclsError
from . import distributed as dist


class TrainingDiverged(ImgclsError):
    """K consecutive non-finite steps; the last good weights are in last.pt (exit status 3)."""

    exit_code = 3


class LoaderCrashed(ImgclsError):
    """A DataLoader worker died (killed, out of memory, segfault); a checkpoint was saved (exit status 4)."""

    exit_code = 4


def crash_error(error: BaseException, run_dir: Any) -> LoaderCrashed:
    """The one-line error for a dead loader worker (a checkpoint is in `run_dir`)."""
    first = (str(error).strip().splitlines() or ["worker died"])[0]
    return LoaderCrashed(f"data loading failed: {first[:160]}; checkpoint saved in {run_dir} (resume with --resume"
                         f" {run_dir}; fewer --workers if memory is short)")


class LoaderFailed(Exception):
    """Raised by `guarded` so the trainer can tell loader failures from model failures."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def guarded(batches: Iterable[Any], signals: Any = None) -> Iterator[Any]:
    """Iterate a DataLoader; any exception it raises comes out wrapped in `LoaderFailed`.

    `signals` (a StopSignals): the consumer's work on each batch (a training step) is a deferred section,
    while waiting for the next batch is not; a signal that came during a step stops at the next batch."""
    it, held = None, False
    try:
        while True:
            if held:
                held = False
                signals.leave()  # raises Interrupted for a signal recorded during the step
            try:
                it = iter(batches) if it is None else it  # persistent workers: creating the iterator can fail too
                batch = next(it)
            except StopIteration:
                return
            except Exception as e:  # worker death, a dataset bug, shared-memory exhaustion, ...
                raise LoaderFailed(e) from e
            if signals is not None:
                signals.enter()
                held = True
            yield batch
    finally:  # the consumer broke out of the loop or raised: its step is over
        if held:
            signals.leave(check=False)


def is_worker_crash(error: BaseException) -> bool:
    msg = str(error)
    return "DataLoader worker" in msg or "worker exited unexpectedly" in msg


@contextmanager
def worker_deaths_held() -> Iterator[None]:
    """Hold SIGCHLD while the body runs (a checkpoint write).

    PyTorch's DataLoader installs a SIGCHLD handler that raises a RuntimeError in whatever Python code the
    main thread is running when a worker dies; inside torch.save that error corrupts the zip writer's state
    ("unexpected pos ...") and hides the real cause.  Here the signal is only noted (the mask would not do:
    any thread may take a process signal); the DataLoader's check runs once the write is complete, and a
    worker death it reports comes out as `LoaderFailed`."""
    if not hasattr(signal, "SIGCHLD") or threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    handler = signal.signal(signal.SIGCHLD, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, handler)
        if came and callable(handler):  # the DataLoader's check, run now that the write is complete
            try:
                handler(signal.SIGCHLD, None)
            except RuntimeError as e:
                if not is_worker_crash(e):
                    raise
                raise LoaderFailed(e) from e


def agreed_signal(signum: int | None, device: torch.device) -> int | None:
    """The stop signal seen by any rank, or None; all ranks get the same answer."""
    if not dist.is_dist():
        return signum
    v = int(dist.all_reduce_max(torch.tensor(signum or 0, device=device)))
    return v or None


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm layer in eval mode (running statistics used and kept); returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            n += 1
    return n
