"""Squeeze-and-Excitation (SE) block.

Paper: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507.
Eq. (2) squeeze: z = global average pool of x; eq. (3) excitation: s = sigmoid(W2 relu(W1 z)) with
W1: C -> C/r, W2: C/r -> C (r = 16); eq. (4): out = s * x (channel-wise).

The two FC layers are 1x1 convolutions with bias (as in timm's `SEModule`; numerically the same
as the paper's FC layers), so timm `seresnet*` weights map onto these by renaming `se.` -> `attn.`.
Deviation: the hidden width is max(1, C // r), so very narrow layers still get one hidden unit.
The FC layers run as matrix products on the pooled (B, C) vector (the 1x1-conv weights viewed as
matrices), and on CUDA the gate is a fused region (see fused.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import ATTENTION
from .fused import FusableGate


@ATTENTION.register("se", placement="block", options={"reduction": "reduction"})
class SqueezeExcitation(FusableGate):
    def __init__(self, channels: int, *, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)  # W1 of eq. (3)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)  # W2 of eq. (3)

    def gate_forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean((2, 3))  # (B, C), eq. (2)
        h = self.act(F.linear(z, self.fc1.weight.flatten(1), self.fc1.bias))  # (B, C/r)
        s = F.linear(h, self.fc2.weight.flatten(1), self.fc2.bias).sigmoid()  # (B, C), eq. (3)
        return x * s[:, :, None, None]  # eq. (4)
