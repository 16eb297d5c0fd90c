"""Weight initialisation shared by the models imgcls defines itself."""

from __future__ import annotations

from torch import nn


def kaiming_conv_bn_(module: nn.Module) -> None:
    """He et al. (arXiv:1502.01852) fan-out init for convs, BN to (gamma=1, beta=0), as torchvision's ResNet."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
