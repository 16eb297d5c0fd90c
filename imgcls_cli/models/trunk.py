"""The convolutional trunk of a built backbone: everything up to the last conv feature map.

Fine-grained heads (bilinear pooling, WS-DAN attention pooling) need the (B, C, H, W) feature map,
not the pooled vector, so they take the trunk of a model built by `build_model` (after weights
and attention were applied) and drop its pooling and classifier.  One extractor per backbone
family, looked up in a dict (a new family adds one entry).  Each returns the trunk and the dotted
path, inside the trunk, of the module whose output the CAM methods should hook.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ImgclsError


def _children(model: nn.Module, names: list[str]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((n, getattr(model, n)) for n in names))


def _resnet(model: nn.Module) -> tuple[nn.Module, str]:
    # torchvision ResNet without avgpool/fc: layer4 output, stride 32
    return _children(model, ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]), "layer4"


def _cifar_resnet(model: nn.Module) -> tuple[nn.Module, str]:
    return _children(model, ["conv1", "bn1", "relu", "layer1", "layer2", "layer3"]), "layer3"


def _vgg(model: nn.Module) -> tuple[nn.Module, str]:
    # B-CNN (Lin et al. 2015) uses relu5_3: VGG's `features` without its last max-pool.
    # Slicing keeps the indices 0..N-2, so parameter names stay `features.<i>.*` as in torchvision.
    feats = model.features
    last = feats[-1] if isinstance(feats[-1], nn.MaxPool2d) else None
    return (feats[:-1] if last is not None else feats), ""


def _features(model: nn.Module) -> tuple[nn.Module, str]:
    return model.features, ""  # MobileNetV2/V3: the last 1x1 conv block of `features`


def _timm(model: nn.Module) -> tuple[nn.Module, str]:
    from .backbones.timm_models import TimmFeatures

    return TimmFeatures(model.body), ""  # timm's forward_features: the map timm would pool


TRUNKS: dict[str, Callable[[nn.Module], tuple[nn.Module, str]]] = {
    "resnet": _resnet,
    "cifar_resnet": _cifar_resnet,
    "vgg": _vgg,
    "mobilenet_v2": _features,
    "mobilenet_v3": _features,
    "timm": _timm,
}


@torch.no_grad()
def feature_channels(trunk: nn.Module, size: int = 64) -> int:
    """Channels of the trunk's output, measured with one small dummy forward in eval mode."""
    was_training = trunk.training
    trunk.eval()
    try:
        p = next(trunk.parameters(), None)
        x = torch.zeros(1, 3, size, size, device=p.device if p is not None else "cpu")  # (1, 3, S, S)
        return int(trunk(x).shape[1])
    finally:
        trunk.train(was_training)


def backbone_trunk(model: nn.Module, family: str, option: str) -> tuple[nn.Module, int, str]:
    """(trunk, channels, cam path inside the trunk) of a model built by `build_model`."""
    fn = TRUNKS.get(family)
    if fn is None:
        raise ImgclsError(f"{option}: backbone family {family!r} has no conv-trunk extractor;"
                          f" valid families: {', '.join(TRUNKS)}")
    trunk, cam = fn(model)
    return trunk, feature_channels(trunk), cam
