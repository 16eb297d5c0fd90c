"""ArcFace and center loss against their papers' formulas, plus short real trainings on digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import imgcls_cli as ic
from imgcls_cli.config import build_config
from imgcls_cli.errors import ImgclsError
from imgcls_cli.losses.arcface import margin_cosine


def paper_arcface(cos: torch.Tensor, y: torch.Tensor, s: float, m: float, easy: bool = False) -> torch.Tensor:
    """Eq. 3 of Deng et al. with theta = acos(cos) in float64, the insightface fallback, mean over the batch."""
    cos = cos.double()
    theta = torch.acos(cos)
    ct = cos.gather(1, y[:, None])[:, 0]
    tt = theta.gather(1, y[:, None])[:, 0]
    if easy:
        target = torch.where(ct > 0, torch.cos(tt + m), ct)
    else:
        target = torch.where(tt + m < math.pi, torch.cos(tt + m), ct - m * math.sin(math.pi - m))
    logits = s * cos.scatter(1, y[:, None], target[:, None])
    return (torch.logsumexp(logits, 1) - logits.gather(1, y[:, None])[:, 0]).mean()


def test_arcface_equals_paper_formula_both_branches() -> None:
    g = torch.Generator().manual_seed(0)
    m = 0.5
    cos = torch.rand(64, 10, generator=g) * 2 - 1
    y = torch.randint(0, 10, (64,), generator=g)
    cos[:32].scatter_(1, y[:32, None], torch.full((32, 1), -0.95))  # theta + m > pi: fallback branch
    ct, th = cos.gather(1, y[:, None]), math.cos(math.pi - m)
    assert (ct[:32] <= th).all() and (ct[32:] > th).sum() > 20  # both branches of the threshold occur
    loss = ic.build_loss("arcface", num_classes=10, s=30.0, m=m)
    torch.testing.assert_close(loss(cos, y).double(), paper_arcface(cos, y, 30.0, m), rtol=1e-5, atol=1e-5)
    for half in (slice(0, 32), slice(32, 64)):
        torch.testing.assert_close(loss(cos[half], y[half]).double(), paper_arcface(cos[half], y[half], 30.0, m),
                                   rtol=1e-5, atol=1e-5)
    # the two branches really differ: without the fallback the fallback rows would get cos(theta + m)
    t = torch.tensor([-0.95])
    assert not torch.allclose(margin_cosine(t, m), torch.cos(torch.acos(t) + m))


def test_arcface_easy_margin_and_zero_margin() -> None:
    g = torch.Generator().manual_seed(1)
    cos = torch.rand(40, 5, generator=g) * 2 - 1
    y = torch.randint(0, 5, (40,), generator=g)
    easy = ic.build_loss("arcface", num_classes=5, s=16.0, m=0.4, easy_margin=True)
    torch.testing.assert_close(easy(cos, y).double(), paper_arcface(cos, y, 16.0, 0.4, easy=True), rtol=1e-5, atol=1e-5)
    plain = ic.build_loss("arcface", num_classes=5, s=16.0, m=0.0)  # m = 0: scaled softmax CE on cosines
    torch.testing.assert_close(plain(cos, y), F.cross_entropy(16.0 * cos, y), rtol=1e-5, atol=1e-6)


def test_arcface_gradients_finite_at_plus_minus_one() -> None:
    cos = torch.tensor([[1.0, -1.0, 0.3], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0, 2])
    for easy in (False, True):
        loss = ic.build_loss("arcface", num_classes=3, s=64.0, m=0.5, easy_margin=easy)
        (gr,) = torch.autograd.grad(loss(cos, y), cos)
        assert torch.isfinite(gr).all()
        soft = F.one_hot(y, 3).float() * 0.7 + 0.1
        (gs,) = torch.autograd.grad(loss(cos, soft), cos)
        assert torch.isfinite(gs).all()


def test_arcface_label_smoothing_and_soft_targets() -> None:
    g = torch.Generator().manual_seed(2)
    cos = torch.rand(16, 6, generator=g) * 2 - 1
    y = torch.randint(0, 6, (16,), generator=g)
    loss = ic.build_loss("arcface", num_classes=6, s=30.0, m=0.5, label_smoothing=0.1)
    z = loss.margin_logits(cos, y)  # margin on the target, then smoothed CE
    q = F.one_hot(y, 6).float() * 0.9 + 0.1 / 6
    torch.testing.assert_close(loss(cos, y), (-(q * F.log_softmax(z, 1)).sum(1)).mean(), rtol=1e-5, atol=1e-5)
    # one-hot soft targets give the hard-label loss; a Mixup pair gives lam * L(a) + (1 - lam) * L(b)
    torch.testing.assert_close(loss(cos, F.one_hot(y, 6).float()), loss(cos, y), rtol=1e-5, atol=1e-5)
    y2 = torch.roll(y, 1)
    soft = 0.3 * F.one_hot(y, 6).float() + 0.7 * F.one_hot(y2, 6).float()
    per = ic.build_loss("arcface", num_classes=6, s=30.0, m=0.5, label_smoothing=0.1)
    expect = torch.stack([0.3 * per(cos[i:i + 1], y[i:i + 1]) + 0.7 * per(cos[i:i + 1], y2[i:i + 1])
                          for i in range(16)]).mean()
    torch.testing.assert_close(loss(cos, soft), expect, rtol=1e-5, atol=1e-5)
    big = torch.ones(4, 6)  # s = 64 and cos = 1 everywhere: no overflow or cancellation
    assert torch.isfinite(ic.build_loss("arcface", num_classes=6)(big, F.one_hot(y[:4], 6).float()))


def test_center_loss_zero_at_centres_and_quadratic() -> None:
    loss = ic.build_loss("center", num_classes=4, feat_dim=3)
    assert list(dict(loss.named_parameters())) == ["centers"] and loss.centers.shape == (4, 3)
    y = torch.tensor([0, 1, 2, 3, 1])
    c = loss.centers.detach()
    assert loss(c[y], y).item() == 0.0
    d = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    l1, l2 = loss(c[y] + d, y), loss(c[y] + 2 * d, y)
    torch.testing.assert_close(l1, 0.5 * d.pow(2).sum(1).mean())  # 1/2 mean_i ||x_i - c_{y_i}||^2
    torch.testing.assert_close(l2, 4 * l1)


def test_center_grad_scaled_by_inverse_lambda_with_accumulation() -> None:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(8, 3, generator=g), torch.randint(0, 4, (8,), generator=g)
    raw = ic.build_loss("center", num_classes=4, feat_dim=3)
    scaled = ic.build_loss("center", num_classes=4, feat_dim=3, weight=0.01)
    (0.01 * raw(x, y)).backward()
    (0.01 * scaled(x, y)).backward()
    (0.01 * scaled(x, y)).backward()  # a second micro-batch accumulates, each scaled once
    torch.testing.assert_close(scaled.centers.grad, 2 * raw.centers.grad / 0.01)
    (grp,) = scaled.param_groups()
    assert grp["params"][0] is scaled.centers and grp["lr"] == 0.5 and grp["weight_decay"] == 0.0


def test_center_paper_update_rule() -> None:
    loss = ic.build_loss("center", num_classes=3, feat_dim=2, update="paper", alpha=0.5)
    assert loss.param_groups() == [] and not loss.centers.requires_grad
    c0 = loss.centers.detach().clone()
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]], requires_grad=True)
    y = torch.tensor([0, 0, 2])
    loss(x, y).backward()
    assert x.grad is not None
    loss.after_step()
    exp = c0.clone()
    exp[0] -= 0.5 * ((c0[0] - x[0]) + (c0[0] - x[1])).detach() / 3  # n_0 = 2
    exp[2] -= 0.5 * (c0[2] - x[2]).detach() / 2  # n_2 = 1; class 1 absent: unchanged
    torch.testing.assert_close(loss.centers.detach(), exp)


def test_config_refuses_center_with_mixup_and_bad_options() -> None:
    with pytest.raises(ImgclsError, match="Mixup/CutMix"):
        build_config(None, {"loss.name": "center", "aug.mixup": 0.2})
    build_config(None, {"loss.name": "arcface", "aug.cutmix": 1.0})  # ArcFace has a soft-target form
    with pytest.raises(ImgclsError, match="center_update"):
        ic.build_loss("center", num_classes=3, feat_dim=2, update="adam")
    with pytest.raises(ImgclsError, match="arcface"):
        ic.build_loss("arcface", num_classes=3)(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
