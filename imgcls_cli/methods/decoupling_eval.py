"""Evaluation-time classifiers of Decoupling: tau-normalisation and nearest class mean (NCM).

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020,
arXiv:1910.09217, section 4.2:
- tau-norm: w~_i = w_i / ||w_i||^tau, bias dropped; tau = 1 is plain L2 normalisation, tau = 0 the
  bias-free original classifier.  `auto` picks tau over 0, 0.1, ..., 2 by mean per-class accuracy
  (ties: the smaller tau) on the run's *selection* split (`data.select_split`: a val/ apart from the
  reported test/, or the split carved out of the training images), never on the reported split.
- NCM: nearest class mean of the training embeddings (the input of the final classifier,
  `models.build.forward_with_features`; eval transforms; the (long-tailed) training split), with the
  feature transforms and distances of the official code (classifier-balancing, KNNClassifier):
  `ncm` = `cl2n` + squared L2 (the official default: subtract the mean training embedding, then
  L2-normalise, both for the class means and for each test embedding; logit = -||f - mu_c||^2),
  `ncm-l2n` (L2-normalise only), `ncm-un` (raw embeddings), `ncm-cosine` (cl2n, cosine similarity).
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
NCM_METRICS = {"ncm": ("cl2n", "l2"), "ncm-l2n": ("l2n", "l2"), "ncm-un": ("un", "l2"), "ncm-cosine": ("cl2n", "cos")}


class TauNorm:
    """logits = x W~^T with w~_i = w_i / ||w_i||^tau (bias dropped)."""

    wants_features = True

    def __init__(self, weight: torch.Tensor, tau: float):
        norms = weight.float().norm(dim=1, keepdim=True).clamp_min(1e-12)  # (C, 1)
        self.weight, self.tau = weight.float() / norms.pow(tau), tau  # (C, D)

    def __call__(self, logits: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return F.linear(feats.float(), self.weight.to(feats.device))  # (B, C)


def ncm_features(feats: torch.Tensor, feat_type: str, mean: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, D): un = as is; l2n = f / ||f||; cl2n = (f - mean) / ||f - mean||, with mean (D,) the mean
    training feature."""
    f = feats.float()
    if feat_type == "cl2n":
        f = f - mean.to(f.device)
    return f if feat_type == "un" else F.normalize(f, dim=1)


class NearestClassMean:
    """logits = -||g(f) - mu_c||^2 (l2) or cos(g(f), mu_c) (cos), g the feature transform, mu_c the class means of
    g(training embeddings)."""

    wants_features = True

    def __init__(self, means: torch.Tensor, feat_mean: torch.Tensor, feat_type: str, dist: str):
        # means (C, D), NaN rows for classes without training images; feat_mean (D,)
        self.means, self.feat_mean, self.feat_type, self.dist = means, feat_mean, feat_type, dist

    def __call__(self, logits: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        f = ncm_features(feats, self.feat_type, self.feat_mean)  # (B, D)
        mu = self.means.to(f.device)
        present = ~torch.isnan(mu).any(1)  # (C,)
        mu = torch.nan_to_num(mu)
        if self.dist == "cos":
            z = F.normalize(f, dim=1) @ F.normalize(mu, dim=1).T  # (B, C)
        else:
            z = -(f.pow(2).sum(1, keepdim=True) - 2 * f @ mu.T + mu.pow(2).sum(1)[None]).clamp_min(0)  # (B, C)
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
    """(C, D) per-class means of `feats` (already transformed); NaN for a class without images."""
    sums = torch.zeros(num_classes, feats.shape[1]).index_add_(0, targets, feats.float())  # (C, D)
    n = torch.bincount(targets, minlength=num_classes).float()[:, None]  # (C, 1)
    return torch.where(n > 0, sums / n.clamp_min(1), torch.full_like(sums, float("nan")))


def build_ncm(feats: torch.Tensor, targets: torch.Tensor, num_classes: int, classifier: str) -> NearestClassMean:
    """The NCM classifier named `classifier` from the training embeddings (N, D) and labels (N,)."""
    feat_type, dist = NCM_METRICS[classifier]
    mean = feats.float().mean(0)  # (D,) the mean training embedding (cl2n's centre)
    means = class_means(ncm_features(feats, feat_type, mean), targets, num_classes)
    return NearestClassMean(means, mean, feat_type, dist)


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
        feat_type, dist = NCM_METRICS[classifier]
        say(f"NCM ({feat_type}, {dist}): class means of {len(targets)} training embeddings")
        return build_ncm(feats, targets, ckpt.num_classes, classifier), {
            "classifier": classifier, "ncm_features": feat_type, "ncm_distance": dist}
    weight = linear_weight(ckpt.model)
    if tau_norm == "auto":
        from ..engine.eval_api import selection_loader

        cfg, loader, norm = selection_loader(ckpt, batch_size, None, dev)  # the run's selection split, never reported
        feats, targets = collect_features(ckpt, loader, norm, dev)
        tau, scores = pick_tau(weight, feats, targets)
        on = cfg.data.select_split
        say(f"tau-norm: tau = {tau:.1f} picked on the {on} selection split ({len(targets)} images, mean class acc"
            f" {scores[f'{tau:.1f}']:.2f}%)")
        return TauNorm(weight, tau), {"tau": tau, "tau_selected_on": on, "tau_search": scores}
    try:
        tau = float(tau_norm)  # type: ignore[arg-type]
    except ValueError:
        raise ImgclsError(f"--tau-norm {tau_norm!r}: give a number >= 0 (e.g. 1.0) or auto") from None
    if not tau >= 0:
        raise ImgclsError(f"--tau-norm {tau_norm!r}: give a number >= 0 (e.g. 1.0) or auto")
    return TauNorm(weight, tau), {"tau": tau}
