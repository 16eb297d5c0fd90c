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
from tests.conftest import quick_overrides


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


def test_separation_stats_and_projection_against_reference() -> None:
    from sklearn.decomposition import PCA

    from imgcls_cli.stats.features import project_2d, separation_stats

    g = torch.Generator().manual_seed(4)
    labels = torch.arange(3).repeat_interleave(20)  # (60,)
    feats = torch.randn(60, 5, generator=g) + 4.0 * torch.randn(3, 5, generator=g)[labels]  # (60, 5)
    st = separation_stats(feats, labels)
    mu = [feats[labels == c].double().mean(0) for c in range(3)]
    intra = sum(float((feats[i].double() - mu[int(labels[i])]).norm()) for i in range(60)) / 60
    inter = sum(float((mu[a] - mu[b]).norm()) for a in range(3) for b in range(a + 1, 3)) / 3
    assert st["intra"] == pytest.approx(intra) and st["inter"] == pytest.approx(inter)
    assert st["ratio"] == pytest.approx(intra / inter)
    xy, explained = project_2d(feats)
    ref = PCA(n_components=2).fit(feats.double().numpy())
    ref_xy = torch.from_numpy(ref.transform(feats.double().numpy())).float()
    torch.testing.assert_close(xy.abs(), ref_xy.abs(), rtol=1e-4, atol=1e-4)  # equal up to the sign of each axis
    assert explained == pytest.approx(ref.explained_variance_ratio_.tolist(), rel=1e-5)
    two = feats[:, :2]
    assert torch.equal(project_2d(two)[0], two)


def test_plot_features_from_checkpoint(tiny_folder) -> None:
    from imgcls_cli.stats.features import plot_features

    r = ic.train(**quick_overrides(**{"data.path": str(tiny_folder), "model.feature_dim": 2, "loss.name": "center",
                                      "train.tensorboard": False, "data.img_size": 16, "train.steps_per_epoch": 1}))
    stats = plot_features(r.run_dir / "best.pt", "emb.png")
    assert stats["feature_dim"] == 2 and stats["projection"] == "identity" and not stats["normalized"]
    assert stats["num_points"] == 12 and 0 < stats["ratio"] < float("inf")
    from PIL import Image

    assert Image.open("emb.png").size[0] > 100


# ---- real training on digits (16 px resnet20; settings and numbers measured, see the report) --------------
DIGITS = {"data.path": "digits", "data.img_size": 16, "train.batch_size": 64, "train.tensorboard": False,
          "data.select_split": "auto",  # best.pt on val, reported on test
          # the SGD settings these numbers were measured with (the defaults before engine/recipe.py)
          "optim.name": "sgd", "optim.lr": 0.1, "optim.weight_decay": 5e-4, "optim.warmup_epochs": 0.0,
          "aug.preset": "random_resized_crop"}
SETTINGS = {
    "ce": {"train.epochs": 3},
    # the paper's update rule with a strong lambda: the feature-space effect is visible after 3 epochs
    "center": {"train.epochs": 3, "loss.center_weight": 0.1, "loss.center_update": "paper"},
    # from scratch, ArcFace (m = 0.5) converges slowly with SGD on 1.4k images; s = 30 and AdamW are stable
    "arcface": {"train.epochs": 6, "loss.arcface_s": 30.0, "optim.name": "adamw", "optim.lr": 0.002,
                "optim.weight_decay": 0.05},
}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    done: dict[str, object] = {}

    def get(loss: str):
        if loss not in done:
            out = tmp_path_factory.mktemp(f"digits_{loss}")
            done[loss] = ic.train(**quick_overrides(**{**DIGITS, **SETTINGS[loss], "loss.name": loss,
                                                       "train.out": str(out / "run")}))
        return done[loss]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ce", "center", "arcface"])
def test_training_on_digits_reaches_90(digits_run, loss: str) -> None:
    r = digits_run(loss)
    assert r.best_top1 >= 90.0, f"{loss}: {r.best_top1:.1f}% validation top-1"
    assert r.final["split"] == "test" and r.final["top1"] >= 90.0, f"{loss}: {r.final['top1']:.1f}% test top-1"
    if loss == "arcface":  # evaluation runs on the cosine logits of the rebuilt cosine head
        from imgcls_cli.engine.eval_api import evaluate_checkpoint
        from imgcls_cli.models.build import get_classifier
        from imgcls_cli.models.heads import CosineHead

        ev = evaluate_checkpoint(r.run_dir / "best.pt", device="cpu")
        assert isinstance(get_classifier(ev.ckpt.model), CosineHead)
        assert ev.summary["top1"] == pytest.approx(r.final["top1"])


@pytest.mark.slow
def test_center_loss_tightens_classes_relative_to_ce(digits_run) -> None:
    from imgcls_cli.stats.features import plot_features

    ce = plot_features(digits_run("ce").run_dir / "best.pt", "ce.png", normalize=False)
    center = plot_features(digits_run("center").run_dir / "best.pt", "center.png", normalize=False)
    assert ce["feature_dim"] == center["feature_dim"] == 64 and ce["projection"] == "pca"
    # measured (seeds 0/1/2): CE 0.289/0.302/0.314, center 0.247/0.265/0.266
    assert center["ratio"] < 0.95 * ce["ratio"], (center["ratio"], ce["ratio"])
