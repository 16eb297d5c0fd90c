"""A Rich progress bar for training: loss, accuracy, learning rate and images/s; CPU seconds of an epoch."""

from __future__ import annotations

import multiprocessing
import os
import resource
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, console: Any, epoch: int, epochs: int, total: int, enabled: bool = True):
        self.enabled = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console, transient=True,
            disable=not self.enabled,
        )
        self.task = self.progress.add_task("train", total=total, info="")

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, completed: int, loss: float, acc: float, lr: float, ips: float) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=completed,
                                 info=f"loss {loss:.4f}  acc {acc:.1f}%  lr {lr:.3g}  {ips:.0f} img/s")


def cpu_seconds() -> float:
    """CPU seconds used by this process and its children: exited ones (getrusage) and live ones such as
    persistent loader workers (/proc on Linux; elsewhere live children are not counted)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for p in multiprocessing.active_children():
        try:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def epoch_line(r: dict[str, Any], epochs: int) -> str:
    """The console line of one epoch record of metrics.jsonl."""
    val = f"  val top1 {r['val_top1']:.2f}%  top5 {r['val_top5']:.2f}%" if "val_top1" in r else ""
    return (f"epoch {r['epoch']}/{epochs}  loss {r['train_loss']:.4f}  train acc {r['train_acc']:.2f}%{val}"
            f"  lr {r['lr']:.4g}  {r['img_per_s']:.0f} img/s  {r['time_s']:.1f}s")
