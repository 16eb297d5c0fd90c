"""CIFAR ResNets (ResNet-20/32/44/56/110).

Paper: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
arXiv:1512.03385, section 4.2: a 3x3 stem with 16 channels, three stages of n basic blocks with
16/32/64 channels (6n+2 layers), global average pooling and a linear classifier.  Shortcuts that
change shape use option A (stride-2 subsampling plus zero-padded channels, parameter-free), as in
the paper; ResNet-32 has 0.46 M parameters, the figure the long-tail papers quote.

The blocks are torchvision's `BasicBlock`, so attention insertion treats both ResNet kinds alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from ...registry import BACKBONES
from ..init import kaiming_conv_bn_


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by `stride`, zero-pad the extra channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, zero_init_residual: bool = False):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("CIFAR ResNet depth must be 6n+2")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = 16
        self.layer1 = self._stage(16, n, 1)
        self.layer2 = self._stage(32, n, 2)
        self.layer3 = self._stage(64, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        kaiming_conv_bn_(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        down = PadShortcut(self.inplanes, planes, stride) if stride != 1 or self.inplanes != planes else None
        layers = [BasicBlock(self.inplanes, planes, stride, down)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64, H/4, W/4)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 64)
        return self.fc(x)


def _cifar(depth: int):
    def build(num_classes: int = 10, zero_init_residual: bool = False):
        return CifarResNet(depth, num_classes, zero_init_residual)

    build.__name__ = f"resnet{depth}"
    return build


for _d in (20, 32, 44, 56, 110):
    BACKBONES.add(f"resnet{_d}", _cifar(_d), family="cifar_resnet", head="fc", cam_layer="layer3",
                  torchvision=None, stages=["layer1", "layer2", "layer3"])
