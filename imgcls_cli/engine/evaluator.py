"""Evaluation: top-1/top-5, per-class accuracy, confusion matrix, shot splits; macro P/R/F1, ECE and the most
confident mistakes (engine/metrics.py).

Counts are accumulated on the device (no host sync per batch) and reduced across ranks under DDP.
Shot splits follow Liu et al., OLTR (arXiv:1904.05160) and Kang et al.: many-shot classes have
> 100 training images, medium 20-100, few < 20.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from .metrics import CalibrationBins, ConfidentMistakes, confused_pairs, ece_from_bins, macro_prf, reliability

MANY, FEW = 100, 20


@dataclass
class EvalResult:
    confusion: torch.Tensor  # (C, C) int64 on CPU, rows = true class
    top5_correct: int
    loss_sum: float
    calibration: torch.Tensor | None = None  # (3, 15) float64: count, confidence sum, correct sum per bin
    mistakes: list[dict[str, Any]] = field(default_factory=list)  # most confident wrong predictions, highest first

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def per_class(self) -> list[float]:
        tot = self.confusion.sum(1).clamp_min(1)
        return (self.confusion.diag().double() / tot * 100).tolist()

    @property
    def top1(self) -> float:
        return float(self.confusion.diag().sum()) / max(1, self.n) * 100

    @property
    def top5(self) -> float:
        return self.top5_correct / max(1, self.n) * 100

    @property
    def mean_class_acc(self) -> float:
        present = self.confusion.sum(1) > 0
        acc = torch.tensor(self.per_class, dtype=torch.float64)
        return float(acc[present].mean()) if present.any() else 0.0

    def summary(self, class_names: list[str], class_counts: list[int] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "top1": self.top1, "top5": self.top5, "mean_class_acc": self.mean_class_acc, "n": self.n,
            "loss": self.loss_sum / max(1, self.n),
            "per_class": dict(zip(class_names, self.per_class, strict=True)),
        }
        if class_counts is not None:
            out.update(shot_split(self.confusion, class_counts))
        out.update(macro_prf(self.confusion))
        if self.calibration is not None:
            out["ece"] = ece_from_bins(self.calibration)
            out["reliability"] = reliability(self.calibration)
        out["confused_pairs"] = confused_pairs(self.confusion, class_names, 20)
        return out


def shot_split(confusion: torch.Tensor, class_counts: list[int]) -> dict[str, float | None]:
    """Accuracy (percent, over images) of many/medium/few-shot classes; None where a bin is empty."""
    counts = torch.tensor(class_counts)
    correct, total = confusion.diag().double(), confusion.sum(1).double()
    bins = {"many": counts > MANY, "medium": (counts >= FEW) & (counts <= MANY), "few": counts < FEW}
    out: dict[str, float | None] = {}
    for name, mask in bins.items():
        t = total[mask].sum()
        out[name] = float(correct[mask].sum() / t * 100) if t > 0 else None
    return out


@torch.no_grad()
def evaluate(logits_fn: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[dict[str, Any]],
             normalize: Callable[[torch.Tensor], torch.Tensor], num_classes: int, device: torch.device,
             on_bad: Callable[[list[tuple[int, str]]], None] | None = None,
             collect: list[torch.Tensor] | None = None) -> EvalResult:
    conf = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    k = min(5, num_classes)
    calib, mistakes = CalibrationBins(device), ConfidentMistakes(device)
    for batch in batches:
        if batch["bad"] and on_bad:
            on_bad(batch["bad"])
        if batch["images"] is None:
            continue
        x = normalize(batch["images"])
        y = batch["targets"].to(device, non_blocking=True)  # (B,)
        logits = logits_fn(x).float()  # (B, C)
        if collect is not None:
            collect.append(logits.cpu())
        pred = logits.argmax(1)
        # scatter_add_, not bincount: CUDA's bincount reads min/max back to the host on every batch
        conf.scatter_add_(0, y * num_classes + pred, torch.ones_like(pred))
        top5 += (logits.topk(k, 1).indices == y[:, None]).any(1).sum()
        loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").double()
        calib.update(logits, y)
        if batch.get("indices") is not None:
            mistakes.update(logits, y, batch["indices"])
    from .distributed import all_reduce_sum

    conf, top5, loss = all_reduce_sum(conf), all_reduce_sum(top5), all_reduce_sum(loss)
    bins = all_reduce_sum(calib.sums)
    return EvalResult(conf.view(num_classes, num_classes).cpu(), int(top5), float(loss), bins.cpu(), mistakes.result())
