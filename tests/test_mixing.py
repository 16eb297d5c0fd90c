"""Mixup / CutMix (imgcls_cli.data.mixing): identities, lambda distribution, box area, loss formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imgcls_cli.config import AugConfig
from imgcls_cli.data.mixing import Mixer, cutmix_box
from imgcls_cli.losses.cross_entropy import CrossEntropy


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mixer(c: int = 5, **kw: float) -> Mixer:
    return Mixer(AugConfig(**kw), c)


def test_identical_images_unchanged_and_targets_sum_to_one() -> None:
    x = torch.randn(1, 3, 12, 20).expand(6, -1, -1, -1).contiguous()  # six copies of one image
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    for kw in ({"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 1.0, "cutmix": 1.0}):
        m = _mixer(**kw)
        for seed in range(20):
            xm, soft = m(x, y, _gen(seed))
            torch.testing.assert_close(xm, x, rtol=0, atol=1e-6)
            assert soft.shape == (6, 5)
            torch.testing.assert_close(soft.sum(1), torch.ones(6))
            assert (soft >= 0).all()


def test_mixup_lambda_follows_beta() -> None:
    stats = pytest.importorskip("scipy.stats")
    alpha = 0.4
    m = _mixer(mixup=alpha)
    lams = np.array([m.sample(4, 8, 8, _gen(1000 + s)).lam for s in range(3000)])
    res = stats.kstest(lams, stats.beta(alpha, alpha).cdf)
    assert res.pvalue > 0.001, res
    # a wrong alpha must be rejected: the test can fail
    assert stats.kstest(lams, stats.beta(1.0, 1.0).cdf).pvalue < 1e-6


def test_mixup_is_the_convex_combination() -> None:
    m = _mixer(mixup=1.0)
    x, y = torch.randn(8, 3, 6, 6), torch.arange(8) % 5
    p = m.sample(8, 6, 6, _gen(3))
    xm, soft = m.apply(x, y, p)
    assert p.kind == "mixup" and sorted(p.perm.tolist()) == list(range(8))
    torch.testing.assert_close(xm, p.lam * x + (1 - p.lam) * x[p.perm])
    expect = p.lam * F.one_hot(y, 5).float() + (1 - p.lam) * F.one_hot(y[p.perm], 5).float()
    torch.testing.assert_close(soft, expect)


@pytest.mark.parametrize("hw", [(16, 64), (48, 12), (31, 31)])
def test_cutmix_box_and_lambda_on_non_square_images(hw: tuple[int, int]) -> None:
    h, w = hw
    m = _mixer(cutmix=1.0)
    x = torch.zeros(4, 3, h, w)
    x[1::2] = 1.0  # images 0, 2 black; 1, 3 white
    y = torch.tensor([0, 1, 0, 1])
    rng = np.random.default_rng(0)
    for seed in range(200):
        p = m.sample(4, h, w, _gen(seed))
        xm, soft = m.apply(x, y, p)
        y0, y1, x0, x1 = p.box
        assert 0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w
        # lambda equals the fraction of each image's own pixels (area correction)
        own = (xm == x).all(1).float().mean((1, 2))  # (B,)
        partner_differs = (x != x[p.perm]).any(1).any(1).any(1)
        torch.testing.assert_close(own[partner_differs], torch.full_like(own[partner_differs], p.lam))
        torch.testing.assert_close(soft.sum(1), torch.ones(4))
    # an unclipped centred box has W*sqrt(1-lam) x H*sqrt(1-lam): width follows W, height follows H
    hits = 0
    for _ in range(200):
        (y0, y1, x0, x1), lam = cutmix_box(0.75, h, w, rng)
        if y0 > 0 and x0 > 0 and y1 < h and x1 < w:
            hits += 1
            assert x1 - x0 == 2 * (int(w * 0.5) // 2) and y1 - y0 == 2 * (int(h * 0.5) // 2)
            assert lam == pytest.approx(1 - (x1 - x0) * (y1 - y0) / (h * w))
    assert hits > 0


def test_cutmix_lambda_follows_beta(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lambda CutMix draws (before the area correction) is Beta(cutmix, cutmix), not the Mixup alpha."""
    stats = pytest.importorskip("scipy.stats")
    import imgcls_cli.data.mixing as mixing

    drawn: list[float] = []
    box_of = mixing.cutmix_box

    def recording_box(lam: float, height: int, width: int, rng: np.random.Generator):
        drawn.append(lam)
        return box_of(lam, height, width, rng)

    monkeypatch.setattr(mixing, "cutmix_box", recording_box)
    m = _mixer(mixup=2.0, cutmix=0.5, switch_prob=1.0)  # always CutMix, with its own alpha
    kept = [m.sample(4, 40, 40, _gen(2000 + s)) for s in range(3000)]
    lams = np.array(drawn)
    assert len(lams) == 3000 and all(p.kind == "cutmix" for p in kept)
    assert stats.kstest(lams, stats.beta(0.5, 0.5).cdf).pvalue > 1e-3
    assert stats.kstest(lams, stats.beta(1.0, 1.0).cdf).pvalue < 1e-6  # the test can fail
    # the reported lambda is the area-corrected one: 1 - |box| / (H W) >= the drawn lambda (boxes only shrink)
    for p, lam in zip(kept, lams, strict=True):
        y0, y1, x0, x1 = p.box
        assert p.lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 1600) and p.lam >= lam - 1e-12


def test_cutmix_box_centres_are_uniform_and_boxes_clipped() -> None:
    # r_x ~ U{0..W-1}, r_y ~ U{0..H-1} (official rand_bbox, randint), box [r - cut // 2, r + cut // 2) clipped;
    # for cut < W the centre is recoverable from the box: from the left edge unless it was clipped
    from scipy.stats import chisquare

    h, w, n = 20, 50, 6000
    rng = np.random.default_rng(0)
    cw, ch = int(w * 0.5), int(h * 0.5)  # lambda 0.75: sqrt(1 - lambda) = 0.5
    cx, cy = [], []
    for _ in range(n):
        (y0, y1, x0, x1), lam = cutmix_box(0.75, h, w, rng)
        assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
        rx = x0 + cw // 2 if x0 > 0 else x1 - cw // 2
        ry = y0 + ch // 2 if y0 > 0 else y1 - ch // 2
        assert (x0, x1) == (max(rx - cw // 2, 0), min(rx + cw // 2, w))  # clipped, not shifted inside
        assert (y0, y1) == (max(ry - ch // 2, 0), min(ry + ch // 2, h))
        assert lam == 1 - (x1 - x0) * (y1 - y0) / (h * w)
        cx.append(rx)
        cy.append(ry)
    assert min(cx) == 0 and max(cx) == w - 1 and min(cy) == 0 and max(cy) == h - 1
    assert chisquare(np.bincount(cx, minlength=w)).pvalue > 1e-3  # uniform over the W columns
    assert chisquare(np.bincount(cy, minlength=h)).pvalue > 1e-3  # and the H rows


def test_mix_prob_zero_gives_one_hot_and_unchanged_images() -> None:
    m = _mixer(mixup=1.0, cutmix=1.0, mix_prob=0.0)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    xm, soft = m(x, y, _gen(0))
    assert torch.equal(xm, x) and torch.equal(soft, F.one_hot(y, 5).float())


def test_switch_prob_chooses_between_mixup_and_cutmix() -> None:
    m = _mixer(mixup=1.0, cutmix=1.0, switch_prob=0.3)
    kinds = [m.sample(4, 8, 8, _gen(s)).kind for s in range(2000)]
    frac = kinds.count("cutmix") / len(kinds)
    assert abs(frac - 0.3) < 0.04 and kinds.count("none") == 0


def test_label_smoothing_with_mixing_matches_the_formula() -> None:
    # smoothing after mixing: (1-eps)(lam*y_a + (1-lam)*y_b) + eps/C, which by linearity is
    # lam * CE_eps(z, a) + (1 - lam) * CE_eps(z, b) with torch's own label-smoothing CE
    eps, c = 0.1, 7
    m = Mixer(AugConfig(mixup=1.0), c)
    x, y = torch.randn(16, 3, 4, 4), torch.randint(0, c, (16,), generator=_gen(1))
    p = m.sample(16, 4, 4, _gen(5))
    _, soft = m.apply(x, y, p)
    logits = torch.randn(16, c, generator=_gen(2))
    got = CrossEntropy(c, label_smoothing=eps)(logits, soft)
    expect = (p.lam * F.cross_entropy(logits, y, label_smoothing=eps)
              + (1 - p.lam) * F.cross_entropy(logits, y[p.perm], label_smoothing=eps))
    torch.testing.assert_close(got, expect)


def test_same_seed_same_mix() -> None:
    m = _mixer(mixup=0.5, cutmix=1.0)
    x, y = torch.randn(8, 3, 10, 14), torch.arange(8) % 5
    a = m(x, y, _gen(42))
    b = m(x, y, _gen(42))
    c = m(x, y, _gen(43))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_channels_last_input_stays_channels_last() -> None:
    m = _mixer(mixup=1.0)
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    xm, _ = m(x, torch.arange(4), _gen(0))
    assert xm.is_contiguous(memory_format=torch.channels_last)
