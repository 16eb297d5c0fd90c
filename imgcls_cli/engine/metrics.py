"""Evaluation metrics beyond accuracy: macro precision / recall / F1, calibration (ECE), confusions.

Macro P/R/F1 (per class from the confusion matrix C, rows = true class, then the unweighted mean):
    P_c = C_cc / sum_i C_ic,   R_c = C_cc / sum_j C_cj,   F1_c = 2 P_c R_c / (P_c + R_c)
a zero denominator gives 0 (scikit-learn's zero_division=0), and the mean runs over the classes that
occur as a label or a prediction (scikit-learn's `labels=None`).

Expected calibration error, Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017,
arXiv:1706.04599), Eq. 3, with M = 15 equal-width bins B_m = ((m-1)/M, m/M] of the top-1 confidence:
    ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|
Deliberate deviation from torchmetrics' binning: a confidence of exactly 1.0 is in the last bin (Guo's
closed right edge); torchmetrics puts it into a 16th bin of its own.  Reported in percent, like top-1.

Both accumulators live on the device and are updated per batch without a host sync.
"""

from __future__ import annotations

from typing import Any

import torch

ECE_BINS = 15


class CalibrationBins:
    """Per confidence bin: count, sum of confidences, sum of correct predictions."""

    def __init__(self, device: torch.device, n_bins: int = ECE_BINS):
        self.n_bins = n_bins
        self.sums = torch.zeros(3, n_bins, dtype=torch.float64, device=device)  # (3, M): count, conf, correct

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        conf, pred = logits.float().softmax(1).max(1)  # (B,), (B,)
        b = (conf * self.n_bins).ceil().long().sub_(1).clamp_(0, self.n_bins - 1)  # bin m-1 of ((m-1)/M, m/M]
        src = torch.stack([torch.ones_like(conf), conf, (pred == targets).to(conf.dtype)]).double()  # (3, B)
        self.sums.scatter_add_(1, b.expand(3, -1), src)


def ece_from_bins(sums: torch.Tensor) -> float:
    """ECE in percent from (3, M) bin sums (count, confidence sum, correct sum)."""
    count, conf, correct = sums.double().cpu()
    n = count.sum()
    if n == 0:
        return 0.0
    return float((conf - correct).abs().sum() / n * 100)  # sum_m |B_m|/n |acc - conf| = sum_m |sum conf - sum acc|/n


def reliability(sums: torch.Tensor) -> dict[str, Any]:
    """Per bin: edges, count, mean confidence and accuracy (None for an empty bin), for the diagram and the JSON."""
    count, conf, correct = sums.double().cpu()
    m = count.shape[0]
    nz = count.clamp_min(1)
    # as Python lists first: no tensor read per bin (a fixed number of reads, whatever the predictions)
    n, mean_conf, acc = count.tolist(), (conf / nz).tolist(), (correct / nz).tolist()
    return {"bins": m, "edges": [i / m for i in range(m + 1)], "count": [int(c) for c in n],
            "confidence": [v if c > 0 else None for v, c in zip(mean_conf, n, strict=True)],
            "accuracy": [v if c > 0 else None for v, c in zip(acc, n, strict=True)]}


def macro_prf(confusion: torch.Tensor) -> dict[str, float]:
    """Macro precision, recall and F1 (percent) from a (C, C) confusion matrix, rows = true class."""
    c = confusion.double()
    tp, pred_n, true_n = c.diag(), c.sum(0), c.sum(1)
    p = torch.where(pred_n > 0, tp / pred_n.clamp_min(1), 0.0)
    r = torch.where(true_n > 0, tp / true_n.clamp_min(1), 0.0)
    f1 = torch.where(p + r > 0, 2 * p * r / (p + r).clamp_min(1e-300), 0.0)
    used = (pred_n + true_n) > 0
    if not used.any():
        return {"macro_precision": 0.0, "macro_recall": 0.0, "macro_f1": 0.0}
    return {"macro_precision": float(p[used].mean() * 100), "macro_recall": float(r[used].mean() * 100),
            "macro_f1": float(f1[used].mean() * 100)}


def confused_pairs(confusion: torch.Tensor, class_names: list[str], k: int = 20) -> list[dict[str, Any]]:
    """The k largest off-diagonal cells: true class, predicted class, count and the share of the true class."""
    c = confusion.clone().long()
    c.fill_diagonal_(0)
    flat = c.flatten()
    k = min(k, int((flat > 0).sum()))
    if k == 0:
        return []
    vals, idx = flat.topk(k)
    n = c.shape[0]
    rows = confusion.sum(1).tolist()  # one conversion, not one tensor read per pair
    return [{"true": class_names[i // n], "pred": class_names[i % n], "count": int(v),
             "rate": float(v) / max(1, int(rows[i // n])) * 100}
            for v, i in zip(vals.tolist(), idx.tolist(), strict=True)]


class ConfidentMistakes:
    """The k wrong predictions with the highest confidence seen so far (dataset index, true, predicted, confidence).

    Kept on the device (a top-k merge per batch, no host sync); under DDP each rank keeps its own share.
    """

    def __init__(self, device: torch.device, k: int = 16):
        self.k = k
        self.conf = torch.empty(0, device=device)
        self.rows = torch.empty(0, 3, dtype=torch.long, device=device)  # (n, 3): index, true, pred

    def update(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> None:
        conf, pred = logits.float().softmax(1).max(1)  # (B,)
        wrong = pred != targets
        conf = torch.where(wrong, conf, -1.0)  # right answers never enter the top-k of mistakes
        rows = torch.stack([indices.to(conf.device), targets, pred], 1)  # (B, 3)
        allc, allr = torch.cat([self.conf, conf]), torch.cat([self.rows, rows])
        top = allc.topk(min(self.k, allc.shape[0])).indices
        self.conf, self.rows = allc[top], allr[top]

    def result(self) -> list[dict[str, Any]]:
        return [{"index": int(r[0]), "true": int(r[1]), "pred": int(r[2]), "confidence": float(c)}
                for c, r in zip(self.conf.cpu().tolist(), self.rows.cpu().tolist(), strict=True) if c >= 0]
