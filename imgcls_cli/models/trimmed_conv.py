"""Convolutions that skip the kernel taps which only ever read zero padding (exact).

When a feature map is smaller than a convolution's reach, some taps of the kernel multiply padding
for every output position: a 3x3, padding-1 convolution on a 1x1 map (layer4 of an ImageNet ResNet
fed 32-px images) uses only its centre tap, and a 3x3, stride-2 one on a 2x2 map uses 2x2 of its 9.
Those taps add exact zeros to the output and get exact-zero gradients, yet oneDNN still computes
them: on the 2-core CPU sandbox the three 512x512 3x3 convolutions on 1x1 maps took 55 ms of a
275 ms ResNet-18 training step at 32 px.  `TrimmedConv2d` convolves with the live slice of the weight
and the padding shifted to match; the slice's gradient flows back into the full weight (zeros
elsewhere), so parameters, state_dict keys, optimizer state and checkpoints are unchanged.  Where a
single output position's live taps cover the whole map (both layer4 cases above) the convolution is a
matrix product and runs as one (`F.linear`): oneDNN's conv kernels were several times slower there.
Results equal the full convolution up to float summation order.

`trim_convs(model)` switches a model's plain `nn.Conv2d` layers to this class in place; the trainer
does so on the CPU (`train.trim_convs`).  It stays out of torch.compile, which sees plain convs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=4096)
def _live_taps(size: int, k: int, stride: int, pad: int, dil: int) -> tuple[int, int] | None:
    """[lo, hi) of the taps along one axis that read real input for some output; None if nothing to trim."""
    out = (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
    if out <= 0 or k == 1:
        return None
    live = [t for t in range(k) if any(0 <= o * stride - pad + t * dil < size for o in range(out))]
    if not live or (live[0] == 0 and live[-1] == k - 1):
        return None
    lo, hi = live[0], live[-1] + 1
    new_pad = pad - lo * dil
    new_out = (size + 2 * new_pad - dil * (hi - lo - 1) - 1) // stride + 1 if new_pad >= 0 else -1
    if new_out < out:  # the shifted (symmetric) padding cannot reproduce every output position
        return None
    return lo, hi


class TrimmedConv2d(nn.Conv2d):
    """An `nn.Conv2d` that drops all-padding kernel taps for the input size at hand (see module docstring)."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str) or torch.compiler.is_compiling():
            return super()._conv_forward(x, weight, bias)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = weight.shape[-2:], self.stride, self.padding, self.dilation
        th = _live_taps(x.shape[-2], kh, sh, ph, dh)
        tw = _live_taps(x.shape[-1], kw, sw, pw, dw)
        if th is None and tw is None:
            return super()._conv_forward(x, weight, bias)
        lo_h, hi_h = th or (0, kh)
        lo_w, hi_w = tw or (0, kw)
        out_h = (x.shape[-2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (x.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        w = weight[:, :, lo_h:hi_h, lo_w:hi_w]  # (C_out, C_in / groups, kh', kw'), a view of the live taps
        if (out_h, out_w) == (1, 1) and self.groups == 1 and w.shape[-2:] == x.shape[-2:] \
                and (ph - lo_h * dh, pw - lo_w * dw) == (0, 0) and (dh, dw) == (1, 1):
            # one output position whose live taps cover the whole map: a matrix product, which oneDNN's conv
            # kernels do several times slower than a GEMM at these shapes
            y = F.linear(x.flatten(1), w.reshape(w.shape[0], -1), bias)  # (B, C_out)
            return y[:, :, None, None]
        y = F.conv2d(x, w, bias, self.stride, (ph - lo_h * dh, pw - lo_w * dw), self.dilation, self.groups)
        if y.shape[-2:] != (out_h, out_w):  # the shifted padding made extra trailing positions
            y = y[..., :out_h, :out_w]
        return y  # (B, C_out, out_h, out_w)


def trim_convs(model: nn.Module) -> int:
    """Make every plain `nn.Conv2d` in `model` a `TrimmedConv2d` (in place); returns how many."""
    n = 0
    for m in model.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = TrimmedConv2d
            n += 1
    return n
