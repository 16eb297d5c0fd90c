"""torchvision backbones: ResNet, VGG (with and without BN), MobileNetV2/V3.

The modules are torchvision's own, so parameter names (and therefore torchvision state dicts)
match exactly when no attention is inserted.  Each registration records the family (used by the
attention inserter), the dotted path of the classification head, and the default CAM layer.
"""

from __future__ import annotations

import torchvision.models as tvm

from ...registry import BACKBONES

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
VGGS = ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


def _tv_builder(name: str):
    fn = getattr(tvm, name)

    def build(num_classes: int = 1000, **kw):
        return fn(weights=None, num_classes=num_classes, **kw)

    build.__name__ = name
    build.__doc__ = f"torchvision.models.{name} (weights are loaded separately)."
    return build


for _n in RESNETS:
    BACKBONES.add(_n, _tv_builder(_n), family="resnet", head="fc", cam_layer="layer4",
                  torchvision=_n, stages=["layer1", "layer2", "layer3", "layer4"])
for _n in VGGS:
    BACKBONES.add(_n, _tv_builder(_n), family="vgg", head="classifier.6", cam_layer="features",
                  torchvision=_n, stages=["features"])
BACKBONES.add("mobilenet_v2", _tv_builder("mobilenet_v2"), family="mobilenet_v2", head="classifier.1",
              cam_layer="features", torchvision="mobilenet_v2", stages=["features"])
for _n in ("mobilenet_v3_small", "mobilenet_v3_large"):
    BACKBONES.add(_n, _tv_builder(_n), family="mobilenet_v3", head="classifier.3", cam_layer="features",
                  torchvision=_n, stages=["features"])
