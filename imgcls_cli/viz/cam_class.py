"""CAM from the classifier weights (registered as "cam").

Paper: Zhou, Khosla, Lapedriza, Oliva, Torralba, "Learning Deep Features for Discriminative
Localization", CVPR 2016, arXiv:1512.04150.  For a network whose last feature map f_k(x, y) is
global-average-pooled straight into a linear classifier, eq. 2: M_c(x, y) = sum_k w_k^c f_k(x, y).
No ReLU (as in the paper); `cam()` min-max normalises the map for display.

Where it applies is checked on the actual forward pass, not by family name: the classifier's input
must equal the spatial mean of the layer's output.  That holds for ResNets, CIFAR ResNets and
MobileNetV2 (with or without attention, dropout in eval is the identity) and fails, with a plain
message, for VGG (three fully connected layers), MobileNetV3 (a hidden linear layer), a
`feature_dim` projection and bilinear pooling.

Cosine head (ArcFace): logits_c = <x/|x|, w_c/|w_c|> with x the pooled feature, so the class map
uses the L2-normalised weights w_c/|w_c|; the per-image factor 1/|x| is a positive constant that
min-max normalisation removes.  Deviation: the bias of a linear classifier is left out (a constant
per class, as in the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImgclsError
from ..models.build import get_classifier, meta
from ..models.heads import CosineHead
from ..registry import CAM_METHODS


def class_weights(classifier: nn.Module) -> torch.Tensor:
    """(C, D) weights the pooled feature is multiplied by."""
    if isinstance(classifier, CosineHead):
        return F.normalize(classifier.weight.detach().float(), dim=1)  # (C, D) unit rows
    if isinstance(classifier, nn.Linear):
        return classifier.weight.detach().float()  # (C, D)
    raise ImgclsError(f"--method cam: the classifier is a {type(classifier).__name__}, not a linear or cosine layer;"
                      " use --method gradcam (works for every model)")


@CAM_METHODS.register("cam")
@torch.no_grad()
def class_activation_map(model: nn.Module, images: torch.Tensor, target: torch.Tensor | None,
                         layer: str) -> torch.Tensor:
    from .cam import capture  # late: cam.py imports this module

    info = meta(model)
    classifier = get_classifier(model)
    store: dict[str, torch.Tensor] = {}

    def grab(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        store["feat"] = args[0]

    handle = classifier.register_forward_pre_hook(grab)
    try:
        with capture(model, layer, need_grad=False) as acts_store:
            logits = model(images)  # (B, C)
    finally:
        handle.remove()
    acts = acts_store["acts"].float()  # (B, K, h, w)
    feat = store["feat"].float()  # (B, D)
    gap = acts.mean(dim=(2, 3))  # (B, K)
    why = ""
    if feat.dim() != 2 or feat.shape[1] != gap.shape[1]:
        why = f"the classifier sees {tuple(feat.shape[1:])} features, the layer has {gap.shape[1]} channels"
    elif not torch.allclose(feat, gap, rtol=1e-3, atol=1e-4 * float(gap.abs().max().clamp_min(1e-6))):
        why = "the classifier's input is not the global average of that layer"
    if why:
        raise ImgclsError(
            f"--method cam: applies only where --layer {layer} is global-average-pooled straight into a linear"
            f" classifier; in this {info.get('family', '')} model {why} (e.g. VGG's 3-layer classifier, a"
            f" feature_dim projection, bilinear pooling); use --method gradcam")
    idx = logits.argmax(1) if target is None else target.to(logits.device)  # (B,)
    w = class_weights(classifier)[idx]  # (B, K)
    return torch.einsum("bk,bkhw->bhw", w, acts)  # (B, h, w) eq. 2
