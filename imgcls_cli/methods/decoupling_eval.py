"""Evaluation-time classifiers of Decoupling: tau-normalisation and nearest class mean (NCM).

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020,
arXiv:1910.09217, section 4.2:
- tau-norm: w~_i = w_i / ||w_i||^tau, bias dropped; tau = 1 is plain L2 normalisation, tau = 0 the
  bias-free original classifier.  `auto` picks tau on the checkpoint's validation split over
  0, 0.1, ..., 2 by mean per-class accuracy (ties: the smaller tau) and reports the choice.
- NCM: class means of the L2-normalised training embeddings (the input of the final classifier,
  `models.build.forward_with_features`), eval transforms, the (long-tailed) training split.  `ncm`
  ranks classes by Euclidean distance of the normalised embedding to each mean (the official code's
  default `cl2n` + L2); `ncm-cosine` by cosine similarity.
Both replace only the final linear layer; the transforms returned here receive (logits, features)
(`wants_features`), so tau-norm is computed exactly on the features, not undone from the logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImgclsError

TAUS = [round(0.1 * i, 1) for i in range(21)]  # 0.0 .. 2.0
NCM_METRICS = {"ncm": "euclidean", "ncm-cosine": "cosine"}


class TauNorm:
    """logits = x W~^T with w~_i = w_i / ||w_i||^tau (bias dropped)."""

    wants_features = True

    def __init__(self, weight: torch.Tensor, tau: float):
        norms = weight.float().norm(dim=1, keepdim=True).clamp_min(1e-12)  # (C, 1)
        self.weight, self.tau = weight.float() / norms.pow(tau), tau  # (C, D)

    def __call__(self, logits: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return F.linear(feats.float(), self.weight.to(feats.device))  # (B, C)


class NearestClassMean:
    """Nearest mean of the L2-normalised training embeddings; logits = -distance or cosine."""

    wants_features = True

    def __init__(self, means: torch.Tensor, metric: str):
        self.means, self.metric = means, metric  # (C, D), NaN rows for classes without training images

    def __call__(self, logits: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        f = F.normalize(feats.float(), dim=1)  # (B, D)
        mu = self.means.to(f.device)
        present = ~torch.isnan(mu).any(1)  # (C,)
        mu = torch.nan_to_num(mu)
        z = f @ F.normalize(mu, dim=1).T if self.metric == "cosine" else -torch.cdist(f, mu)  # (B, C)
        return z.masked_fill(~present, float("-inf"))


def linear_weight(model: nn.Module, option: str = "--tau-norm") -> torch.Tensor:
    from ..models.build import get_classifier

    cls = get_classifier(model)
    if not isinstance(cls, nn.Linear):
        raise ImgclsError(f"{option}: needs a linear classifier; this checkpoint's is {type(cls).__name__}"
                          " (cosine heads are already normalised; LWS is an alternative to tau-norm)")
    return cls.weight.detach()


@torch.no_grad()
def collect_features(ckpt: Any, loader: Any, norm: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float32 on the CPU, targets (N,)) of every readable image the loader yields."""
    from ..engine.device import autocast
    from ..models.build import forward_with_features

    cfg = ckpt.config
    feats, targets = [], []
    for batch in loader:
        if batch["images"] is None:
            continue
        with autocast(device, cfg.train):
            _, f = forward_with_features(ckpt.model, norm(batch["images"]))  # (B, D)
        feats.append(f.float().cpu())
        targets.append(batch["targets"])
    if not feats:
        raise ImgclsError("no readable images to compute features from")
    return torch.cat(feats), torch.cat(targets)


def mean_class_acc(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    correct = (logits.argmax(1) == targets).double()  # (N,)
    per = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, targets, correct)
    n = torch.bincount(targets, minlength=num_classes).double()
    return float((per[n > 0] / n[n > 0]).mean() * 100)


def pick_tau(weight: torch.Tensor, feats: torch.Tensor, targets: torch.Tensor) -> tuple[float, dict[str, float]]:
    scores = {}
    for tau in TAUS:
        scores[f"{tau:.1f}"] = mean_class_acc(TauNorm(weight, tau)(None, feats), targets, weight.shape[0])  # type: ignore[arg-type]
    best = max(TAUS, key=lambda t: (scores[f"{t:.1f}"], -t))
    return best, scores


def class_means(feats: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, D) means of the L2-normalised embeddings; NaN for a class without images."""
    f = F.normalize(feats, dim=1)  # (N, D)
    sums = torch.zeros(num_classes, f.shape[1]).index_add_(0, targets, f)  # (C, D)
    n = torch.bincount(targets, minlength=num_classes).float()[:, None]  # (C, 1)
    return torch.where(n > 0, sums / n.clamp_min(1), torch.full_like(sums, float("nan")))


def _train_loader(ckpt: Any, cfg: Any, bundle: Any, device: torch.device, batch_size: int | None) -> Any:
    from ..data.dataset import ImageDataset
    from ..data.loader import make_loader
    from ..data.transforms import transforms_from_config

    _, eval_tf = transforms_from_config(cfg, bundle)
    bs = batch_size or cfg.train.eval_batch_size or cfg.train.batch_size * 2
    return make_loader(ImageDataset(bundle.train, eval_tf), None, bs, cfg.data.workers, device.type == "cuda")


def eval_variant(checkpoint: str | Path, tau_norm: str | None, classifier: str = "default", *, data: str | None = None,
                 split: str | None = None, device: str = "auto", console: Any = None,
                 batch_size: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(logits transform for `evaluate_checkpoint`, extra summary keys) for --tau-norm / --classifier."""
    from ..engine.checkpoint import load_checkpoint
    from ..engine.device import resolve_device
    from ..engine.eval_api import eval_loader

    if classifier not in ("default", *NCM_METRICS):
        raise ImgclsError(f"--classifier {classifier!r}: valid: default, {', '.join(NCM_METRICS)}")
    if tau_norm is not None and classifier != "default":
        raise ImgclsError("--tau-norm and --classifier ncm both replace the classifier: give one of them")
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, dev)
    say = console.print if console is not None else (lambda *_: None)
    if classifier != "default":
        cfg, bundle, _, norm = eval_loader(ckpt, data, split, batch_size, None, dev)
        if len(bundle.train) == 0:
            raise ImgclsError(f"--classifier {classifier}: --data {cfg.data.path} has no train/ images to take the"
                              f" class means from (give a tree with train/, or the checkpoint's own data)")
        feats, targets = collect_features(ckpt, _train_loader(ckpt, cfg, bundle, dev, batch_size), norm, dev)
        metric = NCM_METRICS[classifier]
        say(f"NCM ({metric}): class means of {len(targets)} training embeddings")
        return NearestClassMean(class_means(feats, targets, ckpt.num_classes), metric), {
            "classifier": classifier, "ncm_metric": metric}
    weight = linear_weight(ckpt.model)
    if tau_norm == "auto":
        cfg, _, loader, norm = eval_loader(ckpt, data, None, batch_size, None, dev)  # the checkpoint's val split
        feats, targets = collect_features(ckpt, loader, norm, dev)
        tau, scores = pick_tau(weight, feats, targets)
        on = cfg.data.val_split
        say(f"tau-norm: tau = {tau:.1f} picked on split {on!r} (mean class acc {scores[f'{tau:.1f}']:.2f}%)")
        if split in (None, on):
            say(f"[yellow]note: tau was picked on the split it is evaluated on ({on}); pass --split to evaluate"
                " on another[/yellow]")
        return TauNorm(weight, tau), {"tau": tau, "tau_selected_on": on, "tau_search": scores}
    try:
        tau = float(tau_norm)  # type: ignore[arg-type]
    except ValueError:
        raise ImgclsError(f"--tau-norm {tau_norm!r}: give a number >= 0 (e.g. 1.0) or auto") from None
    if not tau >= 0:
        raise ImgclsError(f"--tau-norm {tau_norm!r}: give a number >= 0 (e.g. 1.0) or auto")
    return TauNorm(weight, tau), {"tau": tau}
