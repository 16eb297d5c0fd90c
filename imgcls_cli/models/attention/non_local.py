"""Non-local block, embedded-Gaussian form.

Paper: Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018, arXiv:1711.07971.
Eq. (1) y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j); embedded Gaussian f = exp(theta(x_i)^T phi(x_j)),
so y = softmax(theta(x)^T phi(x)) g(x) (eq. (3)); eq. (6): z = W_z y + x.  theta, phi, g are 1x1
convs to C/2 channels; phi and g see a 2x2 max-pooled x ("subsampling", section 3.3); W_z is a
1x1 conv back to C followed by BN whose gamma and beta start at 0, so the block starts as the
identity (section 4.1).

Follows the official code (facebookresearch/video-nonlocal-net): the max pool is applied to x
before the phi and g convs, the convs are initialised N(0, 0.01) with zero bias, and the affinity
is scaled by (C/2)^-0.5 (its default `USE_SCALE`), which the paper's eq. (3) omits.  Deviations:
phi and g share one conv with 2 * C/2 outputs (split after), and the softmax-attention product is
`F.scaled_dot_product_attention` (fused / flash kernels on GPU; same maths).  Inputs smaller than
2x2 are pooled with `ceil_mode`, so 1-pixel maps still work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import ATTENTION


@ATTENTION.register("nonlocal", placement="stage", options={"nonlocal_blocks": None})
class NonLocal2d(nn.Module):
    def __init__(self, channels: int, *, inner: int | None = None, subsample: bool = True):
        super().__init__()
        self.inner = inner or max(1, channels // 2)
        self.subsample = subsample
        self.theta = nn.Conv2d(channels, self.inner, 1)
        self.phi_g = nn.Conv2d(channels, 2 * self.inner, 1)  # phi and g stacked along channels
        self.w_z = nn.Conv2d(self.inner, channels, 1)  # W_z of eq. (6)
        self.bn = nn.BatchNorm2d(channels)
        for conv in (self.theta, self.phi_g, self.w_z):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.bn.weight)  # gamma = beta = 0: the block is the identity at init
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, HW, C/2)
        src = F.max_pool2d(x, 2, ceil_mode=True) if self.subsample else x  # (B, C, H', W')
        kv = self.phi_g(src).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N', 2 * C/2)
        k, v = kv.chunk(2, dim=-1)  # (B, 1, N', C/2) each
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(theta phi^T / sqrt(C/2)) g: (B, 1, HW, C/2)
        y = y.squeeze(1).transpose(1, 2).reshape(b, self.inner, h, w)  # (B, C/2, H, W)
        return x + self.bn(self.w_z(y))  # z = W_z y + x, eq. (6)
