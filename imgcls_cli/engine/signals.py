"""Stop signals (SIGTERM, SIGINT, SIGUSR1) honoured promptly in every phase, with exit status 128 + signal.

`StopSignals` is a context manager that installs one handler for the three signals and restores the
previous handlers on exit.  The handler records the first signal and, unless the main thread is
inside a `deferred()` section, raises `Interrupted` at once (as Python's own SIGINT handler raises
KeyboardInterrupt): evaluation batches, waiting for a DataLoader, worker start-up and feature passes
all stop within the batch or wait they are in.  Inside `deferred()` (a training step, a checkpoint
write) the signal is only recorded; `check()` at the end of the section raises it.  So a signal
never tears a checkpoint or an optimizer step in half, and never waits for a whole evaluation.

SIGUSR1 is what SLURM's `--signal=USR1@SECONDS` sends ahead of the time limit: it stops the run
the same way (exit 138), with its checkpoint saved.

DataLoader workers ignore the three signals (data/loader.py's worker_init_fn): a signal sent to the
whole process group (`timeout`, `scancel`, `kill -- -PGID`, Ctrl-C) is handled by the main process,
which shuts its workers down as it exits; a worker killed by the group signal would otherwise
surface as "DataLoader worker ... is killed by signal" wherever the main thread happens to be. A
second SIGTERM ends a worker (multiprocessing's and PyTorch's last-resort `terminate()` of a worker
that does not exit).

The handler runs in the main thread between Python bytecodes; a long C++ operator (one convolution)
finishes first.  Under DDP the trainer keeps its agreed stop at a progress update (ranks must stop at
the same step), see trainer.py.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Interrupted(BaseException):  # noqa: N818  (like KeyboardInterrupt: no `except Exception` may swallow it)
    """A stop signal arrived; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum} ({signal.Signals(signum).name})")
        self.signum = int(signum)
        self.exit_code = 128 + int(signum)


class StopSignals:
    """Install with `with StopSignals() as stop:`; `stop.signum` is the first signal received (or None)."""

    def __init__(self, immediate: bool = True):
        """`immediate=False`: never raise from the handler; the owner polls `signum` / `check()` itself."""
        self.signum: int | None = None
        self.immediate = immediate
        self._deferred = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._old = {s: signal.signal(s, self._handler) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        if self.immediate and not self._deferred:
            raise Interrupted(self.signum)

    def check(self) -> None:
        """Raise `Interrupted` if a signal has arrived."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def enter(self) -> None:
        """Open a deferred section (see `deferred`); `leave` closes it."""
        self._deferred += 1

    def leave(self, check: bool = True) -> None:
        self._deferred = max(0, self._deferred - 1)
        if check and not self._deferred and self.immediate:
            self.check()

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A section a signal must not cut: the signal is recorded and raised when the section ends."""
        self.enter()
        try:
            yield
        finally:
            self.leave(check=False)
        if self.immediate and not self._deferred:
            self.check()

