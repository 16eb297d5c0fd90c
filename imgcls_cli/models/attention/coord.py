"""Coordinate Attention (CA).

Paper: Hou, Zhou, Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021,
arXiv:2103.02907.  Eqs. (4)-(5): average-pool along W (giving z^h, one value per row) and along H
(z^w, one per column); eq. (6): f = delta(BN(F1([z^h; z^w]))) with a shared 1x1 conv C -> mip,
mip = max(8, C / r), r = 32, delta = h_swish(x) = x * ReLU6(x + 3) / 6; eqs. (7)-(8): split f,
g^h = sigmoid(F_h(f^h)), g^w = sigmoid(F_w(f^w)); eq. (9): y = x * g^h * g^w.

Follows the official code (houqb/CoordAttention: biases on all three convs, eval-mode BN).
Deviations: the pooled strips are concatenated as (B, H + W, C) and the three 1x1 convs run as
matrix products on them (`matmul = True`; the official weight shapes are kept), which is the same
maths as the official permutes and convs; `matmul = False` runs the convs (6 % slower on an H200,
99 vs 93 ms of gate time per ResNet-50 step; benchmarks/gpu.py times both).  On CUDA the gate is a fused
region (see fused.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import ATTENTION
from .fused import FusableGate


@ATTENTION.register("coord", placement="block", options={})
class CoordAttention(FusableGate):
    matmul = True  # False: the official 1x1 convs (same function; benchmarks/gpu.py times both)

    def __init__(self, channels: int, *, reduction: int = 32):
        super().__init__()
        mip = max(8, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, 1)  # F1 of eq. (6)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()  # h_swish(x) = x * ReLU6(x + 3) / 6
        self.conv_h = nn.Conv2d(mip, channels, 1)  # F_h of eq. (7)
        self.conv_w = nn.Conv2d(mip, channels, 1)  # F_w of eq. (8)

    def gate_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.matmul:
            return self._conv_forward(x)
        h, w = x.shape[-2:]
        z = torch.cat([x.mean(3), x.mean(2)], 2).transpose(1, 2)  # (B, H + W, C): z^h of eq. (4), z^w of eq. (5)
        f = F.linear(z, self.conv1.weight.flatten(1), self.conv1.bias)  # (B, H + W, mip), F1 of eq. (6)
        f = self.act(self.bn1(f.transpose(1, 2).unsqueeze(2))).squeeze(2).transpose(1, 2)  # BN + h_swish
        f_h, f_w = f.split([h, w], 1)  # (B, H, mip), (B, W, mip)
        g_h = F.linear(f_h, self.conv_h.weight.flatten(1), self.conv_h.bias).sigmoid()  # (B, H, C), eq. (7)
        g_w = F.linear(f_w, self.conv_w.weight.flatten(1), self.conv_w.bias).sigmoid()  # (B, W, C), eq. (8)
        return x * g_h.transpose(1, 2)[:, :, :, None] * g_w.transpose(1, 2)[:, :, None, :]  # eq. (9)

    def _conv_forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        z_h = x.mean(3, keepdim=True).transpose(2, 3)  # (B, C, 1, H), eq. (4)
        z_w = x.mean(2, keepdim=True)  # (B, C, 1, W), eq. (5)
        f = self.act(self.bn1(self.conv1(torch.cat([z_h, z_w], 3))))  # (B, mip, 1, H + W), eq. (6)
        f_h, f_w = f.split([h, w], 3)  # (B, mip, 1, H), (B, mip, 1, W)
        g_h = self.conv_h(f_h.transpose(2, 3)).sigmoid()  # (B, C, H, 1), eq. (7)
        g_w = self.conv_w(f_w).sigmoid()  # (B, C, 1, W), eq. (8)
        return x * g_h * g_w  # eq. (9)
