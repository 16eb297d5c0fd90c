"""TrimmedConv2d (models/trimmed_conv.py): dropping all-padding kernel taps changes no result."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imgcls_cli.models.trimmed_conv import TrimmedConv2d, _live_taps, trim_convs


def test_live_taps_of_the_cases_that_matter() -> None:
    assert _live_taps(1, 3, 1, 1, 1) == (1, 2)  # 3x3 pad 1 on a 1x1 map: the centre tap only
    assert _live_taps(2, 3, 2, 1, 1) == (1, 3)  # 3x3 stride 2 pad 1 on a 2x2 map: 2 of 3 taps per axis
    assert _live_taps(2, 3, 1, 1, 1) is None  # every tap reads real input for some output
    assert _live_taps(56, 3, 1, 1, 1) is None and _live_taps(7, 1, 1, 0, 1) is None
    assert _live_taps(3, 3, 1, 1, 2) is None  # the shift would need negative padding: left to the full conv


CASES = [  # (H, W, k, stride, pad, dilation, groups)
    *[(h, w, 3, s, 1, 1, 1) for h, w, s in itertools.product((1, 2, 3), (1, 2, 5), (1, 2))],
    (1, 1, 7, 2, 3, 1, 1), (2, 3, 7, 2, 3, 1, 1), (1, 4, 5, 1, 2, 1, 1), (4, 4, 3, 1, 2, 2, 1),
    (1, 1, 3, 1, 1, 1, 4), (2, 2, 3, 2, 1, 1, 8), (3, 3, 5, 3, 4, 1, 2), (1, 6, 3, 1, 3, 3, 1),
]


@pytest.mark.parametrize("h,w,k,s,p,d,g", CASES)
def test_trimmed_conv_equals_the_full_conv_forward_and_backward(h, w, k, s, p, d, g) -> None:
    gen = torch.Generator().manual_seed(h * 100 + w * 10 + k)
    full = nn.Conv2d(8, 16, k, s, p, d, g, bias=True).double()
    trimmed = copy.deepcopy(full)
    trimmed.__class__ = TrimmedConv2d
    x = torch.randn(3, 8, h, w, generator=gen, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = full(xa), trimmed(xb)  # (3, 16, out_h, out_w)
    assert ya.shape == yb.shape
    torch.testing.assert_close(yb, ya, rtol=1e-12, atol=1e-12)
    gy = torch.randn(ya.shape, generator=gen, dtype=torch.float64)
    ya.backward(gy)
    yb.backward(gy)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(trimmed.weight.grad, full.weight.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(trimmed.bias.grad, full.bias.grad, rtol=1e-12, atol=1e-12)
    assert trimmed.weight.grad.shape == trimmed.weight.shape  # the full weight gets the gradient


def test_the_trimmed_path_runs_a_smaller_kernel_or_a_matrix_product(monkeypatch) -> None:
    seen = []
    conv2d, linear = F.conv2d, F.linear
    monkeypatch.setattr(F, "conv2d", lambda x, w, *a: seen.append(("conv", tuple(w.shape))) or conv2d(x, w, *a))
    monkeypatch.setattr(F, "linear", lambda x, w, *a: seen.append(("linear", tuple(w.shape))) or linear(x, w, *a))
    conv = TrimmedConv2d(4, 6, 3, padding=1)
    conv(torch.randn(2, 4, 1, 1))  # centre tap only, one output position: a (B, 4) x (4, 6) product
    conv(torch.randn(2, 4, 1, 5))  # rows trimmed, columns not
    conv(torch.randn(2, 4, 8, 8))  # nothing to trim
    TrimmedConv2d(4, 6, 3, stride=2, padding=1)(torch.randn(2, 4, 2, 2))  # 2x2 live taps cover the 2x2 map
    assert seen == [("linear", (6, 4)), ("conv", (6, 4, 1, 3)), ("conv", (6, 4, 3, 3)), ("linear", (6, 16))]


def test_trimmed_resnet_trains_like_the_plain_one_and_keeps_its_state_dict() -> None:
    import imgcls_cli as ic

    torch.manual_seed(0)
    plain = ic.build_model("resnet18", num_classes=10).double()  # float64: BatchNorm over 4 values amplifies noise
    trimmed = copy.deepcopy(plain)
    assert trim_convs(trimmed) == sum(type(m) is nn.Conv2d for m in plain.modules()) == 20
    assert list(trimmed.state_dict()) == list(plain.state_dict())
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.tensor([1, 2, 3, 4])  # 1x1 maps in layer4
    for m in (plain, trimmed):
        F.cross_entropy(m(x), y).backward()
    torch.testing.assert_close(trimmed(x), plain(x), rtol=1e-10, atol=1e-10)
    for (name, a), b in zip(plain.named_parameters(), trimmed.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-10, msg=name)
    fresh = ic.build_model("resnet18", num_classes=10)
    fresh.load_state_dict(trimmed.state_dict())  # checkpoints of a trimmed model load into a plain one


def test_compile_traces_the_plain_conv() -> None:
    conv = TrimmedConv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 1, 1)
    out = torch.compile(conv, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("h,s", [(1, 1), (2, 2), (1, 2), (3, 1)])
def test_channels_last_inputs_and_weights(h: int, s: int) -> None:
    full = nn.Conv2d(8, 16, 3, s, 1).double().to(memory_format=torch.channels_last)
    trimmed = copy.deepcopy(full)
    trimmed.__class__ = TrimmedConv2d
    x = torch.randn(3, 8, h, h, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(trimmed(x), full(x), rtol=1e-12, atol=1e-12)
