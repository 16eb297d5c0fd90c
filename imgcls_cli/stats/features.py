"""Embedding of the validation set in 2-D, and how compact the classes are in it.

The embedding is the input of the final classifier (`models.build.forward_with_features`).  With a
cosine head (ArcFace) it is L2-normalised first, because angles are what ArcFace shapes.  A
2-D embedding (`--feature-dim 2`, the picture of Wen et al. 2016 and Deng et al. 2019) is drawn as
is; a wider one is projected on its first two principal components (deterministic SVD of the
centred features).  The statistics are computed in the full embedding space:

    intra = mean_i ||x_i - mu_{y_i}||            (mean distance to the own class mean)
    inter = mean_{a < b} ||mu_a - mu_b||         (mean distance between class means)
    ratio = intra / inter                       (smaller: tighter, better separated classes)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.build import forward_with_features, get_classifier
from ..models.heads import CosineHead


@torch.no_grad()
def embed(model: nn.Module, loader: Any, normalize: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float32 on the CPU, labels (N,)) for every readable image of the loader."""
    feats, labels = [], []
    for batch in loader:
        if batch["images"] is None:
            continue
        _, f = forward_with_features(model, normalize(batch["images"]))  # (B, D)
        feats.append(f.float().cpu())
        labels.append(batch["targets"].cpu())
    return torch.cat(feats), torch.cat(labels)


def separation_stats(feats: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean intra-class distance, mean inter-centre distance and their ratio (see the module doc)."""
    feats = feats.double()  # (N, D)
    classes = labels.unique()  # (K,)
    mu = torch.stack([feats[labels == c].mean(0) for c in classes])  # (K, D)
    pos = torch.searchsorted(classes, labels)  # (N,) row of each sample's class in mu
    intra = (feats - mu[pos]).norm(dim=1).mean()
    k = len(classes)
    iu = torch.triu_indices(k, k, offset=1)  # (2, K(K-1)/2)
    inter = torch.cdist(mu, mu)[iu[0], iu[1]].mean() if k > 1 else torch.tensor(float("nan"))
    return {"intra": float(intra), "inter": float(inter), "ratio": float(intra / inter)}


def project_2d(feats: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """(N, D) -> (N, 2): identity for D == 2, else the first two principal components; and the
    fraction of variance each axis explains."""
    x = feats.double() - feats.double().mean(0, keepdim=True)  # (N, D) centred
    if feats.shape[1] == 2:
        var = x.var(0)
        return feats.float(), (var / var.sum().clamp_min(1e-30)).tolist()
    if feats.shape[1] < 2:
        raise ValueError(f"cannot draw a {feats.shape[1]}-d embedding in 2-D")
    _, s, vh = torch.linalg.svd(x, full_matrices=False)  # vh: (D, D) principal directions
    comps = vh[:2]  # (2, D)
    sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))  # (2, 1): deterministic sign
    comps = comps * sign
    explained = (s[:2] ** 2 / (s**2).sum().clamp_min(1e-30)).tolist()
    return (x @ comps.T).float(), explained  # (N, 2)


def draw(xy: torch.Tensor, labels: torch.Tensor, class_names: list[str], out_png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20" if k <= 20 else "turbo")
    fig, ax = plt.subplots(figsize=(7, 6))
    for c in labels.unique().tolist():
        sel = labels == c
        colour = cmap(c % 20 if k <= 20 else c / max(1, k - 1))
        ax.scatter(xy[sel, 0].numpy(), xy[sel, 1].numpy(), s=6, alpha=0.7, color=colour, label=class_names[c])
    if k <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def plot_features(checkpoint: str | Path, out_png: str | Path, data: str | None = None, split: str | None = None,
                  device: str = "cpu", max_points: int = 3000, normalize: bool | None = None,
                  seed: int = 0) -> dict[str, Any]:
    """Draw the validation embedding of a checkpoint in 2-D; return the separation statistics.

    normalize: L2-normalise the embedding first; None = only when the classifier is a cosine head.
    """
    from ..engine.checkpoint import load_checkpoint
    from ..engine.device import resolve_device
    from ..engine.eval_api import eval_loader

    dev = resolve_device(device)
    ckpt = load_checkpoint(str(checkpoint), dev)
    _, _, loader, norm = eval_loader(ckpt, data, split, None, None, dev)
    feats, labels = embed(ckpt.model, loader, norm, dev)  # (N, D), (N,)
    if normalize is None:
        normalize = isinstance(get_classifier(ckpt.model), CosineHead)
    if normalize:
        feats = torch.nn.functional.normalize(feats, dim=1)  # (N, D) on the unit sphere
    stats = separation_stats(feats, labels)
    xy, explained = project_2d(feats)  # (N, 2)
    n = feats.shape[0]
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points] if n > max_points else None
    out = Path(out_png)
    how = "identity" if feats.shape[1] == 2 else "pca"
    title = (f"{Path(checkpoint).parent.name}: {feats.shape[1]}-d embedding ({how}), "
             f"intra/inter = {stats['ratio']:.3f}")
    draw(xy if keep is None else xy[keep], labels if keep is None else labels[keep], ckpt.class_names, out, title)
    return {**stats, "num_points": n, "plotted": n if keep is None else len(keep), "feature_dim": feats.shape[1],
            "projection": how, "explained_variance": explained, "normalized": bool(normalize), "png": str(out)}
