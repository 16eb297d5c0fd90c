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
hidden width is max(1, C // r); the MLP runs as matrix products on the pooled (2B, C) vectors (the
1x1-conv weights viewed as matrices).  `spatial = "unfold"` computes the 7x7 conv as im2col + one
matrix product instead of cuDNN: the same function, but measured slower on an H200 (181 vs 138 ms
of gate time per ResNet-50 step, eager, docs/benchmarks.md), so cuDNN ("conv") is the default.
`spatial = "stencil"` writes the conv as the sum of its 2 k^2 shifted, weighted copies of the padded
map: slow eager, but inside the fused region (fused.py) Inductor turns it into one pointwise kernel
forward and one multi-output reduction backward, where the cuDNN form calls three convolutions on a
2-channel map (forward, data and weight gradients) that tensor cores cannot use.  Which is faster on
a GPU is for `benchmarks/gpu.py` to say; until it has, "conv" stays the default.  On CUDA the gate
is a fused region (see fused.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import ATTENTION
from .fused import FusableGate


@ATTENTION.register("cbam", placement="block", options={"reduction": "reduction", "cbam_kernel": "kernel_size"})
class CBAM(FusableGate):
    spatial = "conv"  # or "unfold" (im2col + matmul), "stencil" (shift and add): the same function

    def __init__(self, channels: int, *, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)  # shared MLP of eq. (2)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)  # f^{7x7} of eq. (3)
        self.bn = nn.BatchNorm2d(1, momentum=0.01)
        nn.init.zeros_(self.bn.weight)  # official init: spatial-gate BN gamma = 0

    def gate_forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))])  # (2B, C)
        hid = self.act(F.linear(pooled, self.fc1.weight.flatten(1), self.fc1.bias))  # (2B, C/r), shared MLP
        mlp = F.linear(hid, self.fc2.weight.flatten(1), self.fc2.bias)  # (2B, C)
        x = x * (mlp[:b] + mlp[b:]).sigmoid()[:, :, None, None]  # F' = M_c(F) * F, eq. (2)
        maps = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)  # (B, 2, H, W)
        return x * self.bn(self._spatial(maps, b, h, w)).sigmoid()  # F'' = M_s(F') * F', eq. (3)

    def _spatial(self, maps: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        if self.spatial == "conv":
            return self.conv(maps)
        k = self.conv.kernel_size[0]
        if self.spatial == "stencil":
            return _stencil(maps, self.conv.weight, k, h, w)
        cols = F.unfold(maps, k, padding=k // 2)  # (B, 2*k*k, H*W)
        return (self.conv.weight.flatten(1) @ cols).view(b, 1, h, w)  # (1, 2kk) @ (B, 2kk, HW)


def _stencil(maps: torch.Tensor, weight: torch.Tensor, k: int, h: int, w: int) -> torch.Tensor:
    """conv2d(maps, weight, padding=k // 2) as sum_{c,i,j} weight[0, c, i, j] * padded[:, c, i:i+h, j:j+w].

    maps: (B, 2, H, W); weight: (1, 2, k, k) -> (B, 1, H, W).  Cross-correlation, as nn.Conv2d."""
    p = k // 2
    padded = F.pad(maps.float(), (p, p, p, p))  # (B, 2, H + 2p, W + 2p); fp32 sums, as the conv accumulates
    taps = weight.float()[0]  # (2, k, k)
    out = None
    for c in range(maps.shape[1]):
        for i in range(k):
            for j in range(k):
                term = padded[:, c : c + 1, i : i + h, j : j + w] * taps[c, i, j]  # (B, 1, H, W)
                out = term if out is None else out + term
    return out.to(maps.dtype)
