"""Convolutional Block Attention Module (CBAM).

Paper: Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
arXiv:1807.06521.  Eq. (2) channel attention M_c = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))) with
a shared MLP C -> C/r -> C; eq. (3) spatial attention M_s = sigmoid(f7x7([AvgPool_c(F'); MaxPool_c(F')]))
over the channel axis; eq. (1): F' = M_c * F, F'' = M_s * F' (channel first, then spatial).

Follows the official code (Jongchan/attention-module): the MLP has biases, the spatial branch is
conv(2 -> 1, k, no bias) -> BN (momentum 0.01) -> sigmoid, and that BN's gamma starts at 0 (so the
spatial gate starts at sigmoid(0) = 0.5 everywhere).  The channel-pooled map is ordered
(max, mean) as in the official `ChannelPool`.  Deviations: the MLP layers are 1x1 convolutions
(same maths, no flatten), the two pooled vectors go through the MLP as one stacked batch, and the
hidden width is max(1, C // r).
"""

from __future__ import annotations

import torch
from torch import nn

from ...registry import ATTENTION


@ATTENTION.register("cbam", placement="block", options={"reduction": "reduction", "cbam_kernel": "kernel_size"})
class CBAM(nn.Module):
    def __init__(self, channels: int, *, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)  # shared MLP of eq. (2)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)  # f^{7x7} of eq. (3)
        self.bn = nn.BatchNorm2d(1, momentum=0.01)
        nn.init.zeros_(self.bn.weight)  # official init: spatial-gate BN gamma = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        pooled = torch.cat([x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)])  # (2B, C, 1, 1)
        mlp = self.fc2(self.act(self.fc1(pooled)))  # (2B, C, 1, 1)
        x = x * (mlp[:b] + mlp[b:]).sigmoid()  # F' = M_c(F) * F, eq. (2)
        maps = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)  # (B, 2, H, W)
        return x * self.bn(self.conv(maps)).sigmoid()  # F'' = M_s(F') * F', eq. (3)
