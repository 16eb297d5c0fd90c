"""Fine-grained methods: B-CNN (`--head bilinear`) and WS-DAN (`--method wsdan`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import imgcls_cli as ic
from imgcls_cli.config import build_config
from imgcls_cli.errors import ImgclsError
from imgcls_cli.models.bilinear import BilinearCNN, bilinear_pool
from imgcls_cli.models.build import forward_with_features, meta
from imgcls_cli.models.wsdan import WSDAN, crop_boxes, crop_resize, drop_masks, upsample_maps

from .conftest import quick_overrides


def ref_bilinear(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2015 written out: B = (1/HW) sum_l x_l y_l^T, sign(B) sqrt|B|, L2-normalise."""
    hw = x.shape[2] * x.shape[3]
    b = torch.einsum("bchw,bdhw->bcd", x.double(), y.double()) / hw  # (B, C1, C2)
    b = b.flatten(1)
    b = torch.sign(b) * torch.sqrt(b.abs())
    return (b / b.norm(dim=1, keepdim=True)).float()


def test_bilinear_pool_equals_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 8, 5, 6, generator=g), torch.randn(3, 4, 5, 6, generator=g)
    torch.testing.assert_close(bilinear_pool(x, y, eps=0.0), ref_bilinear(x, y), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bilinear_pool(x), ref_bilinear(x, x), rtol=1e-3, atol=1e-5)  # default eps 1e-8
    out = bilinear_pool(x, y)
    assert out.shape == (3, 32) and torch.allclose(out.norm(dim=1), torch.ones(3))
    with pytest.raises(ImgclsError, match="bilinear"):
        bilinear_pool(x, torch.randn(3, 4, 4, 6))


def test_bcnn_model_logits_equal_formula_and_metadata():
    torch.manual_seed(0)
    model = ic.build_model("resnet20", 5, head="bilinear").eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.features(x)  # (2, 64, 8, 8)
    expected = F.linear(ref_bilinear(feats, feats), model.fc.weight, model.fc.bias)
    torch.testing.assert_close(model(x), expected, rtol=1e-3, atol=1e-5)
    info = meta(model)
    assert info["head"] == info["classifier"] == "fc" and info["feat_dim"] == 64 * 64
    assert info["cam_layer"] == "features.layer3" and model.fc.in_features == 64 * 64
    _, emb = forward_with_features(model, x)
    assert emb.shape == (2, 4096)
    cam = ic.cam(model, x, method="gradcam")  # Grad-CAM works through the bilinear head
    assert cam.shape == (2, 32, 32) and 0 <= float(cam.min()) and float(cam.max()) <= 1


def test_symmetric_vs_two_stream_shapes():
    sym = ic.build_model("resnet20", 4, head="bilinear")
    two = ic.build_model("resnet20", 4, head="bilinear", head_options={"two_stream": True})
    assert two.features2 is not None and sym.features2 is None
    assert two.fc.in_features == sym.fc.in_features == 64 * 64
    assert two.features2.conv1.weight is not two.features.conv1.weight  # separate weights
    x = torch.randn(2, 3, 32, 32)
    assert sym(x).shape == two(x).shape == (2, 4)
    # any second trunk: C1 x C2 features
    net = BilinearCNN(nn.Conv2d(3, 6, 3, padding=1), 6, 3, features2=nn.Conv2d(3, 5, 3, padding=1)).eval()
    assert net.fc.in_features == 30 and net(torch.randn(2, 3, 9, 9)).shape == (2, 3)
    a, b = net.features(x), net.features2(x)
    torch.testing.assert_close(net(x), F.linear(ref_bilinear(a, b), net.fc.weight, net.fc.bias), rtol=1e-3, atol=1e-5)


def test_bcnn_vgg_uses_relu5_3_and_loads_torchvision_weights(tmp_path: Path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(1)
    tv = nn.Module()
    tv.features = make_layers(cfgs["A"])  # torchvision's VGG-11 trunk; a features-only state dict is enough
    torch.save(tv.state_dict(), tmp_path / "vgg.pth")
    model = ic.build_model("vgg11", 3, head="bilinear", weights=tmp_path / "vgg.pth",
                           head_options={"two_stream": True})
    assert not isinstance(model.features[-1], nn.MaxPool2d) and isinstance(model.features[-1], nn.ReLU)
    assert model.fc.in_features == 512 * 512
    torch.testing.assert_close(model.features[0].weight, tv.features[0].weight)
    torch.testing.assert_close(model.features2[0].weight, tv.features[0].weight)
    assert model.features(torch.randn(1, 3, 64, 64)).shape == (1, 512, 4, 4)  # stride 16, not 32


def test_bilinear_rejects_feature_dim():
    with pytest.raises(ImgclsError, match="feature-dim"):
        ic.build_model("resnet20", 3, head="bilinear", feature_dim=8)


# ------------------------------------------------------------------------------ WS-DAN
def test_crop_boxes_known_blob_padding_and_empty():
    maps = torch.zeros(3, 32, 32)
    maps[0, 10:20, 5:15] = 1.0
    maps[1, 0:4, 28:32] = 1.0  # at the corner: padding is clipped
    theta = torch.full((3,), 0.5)  # map 2 is all zero: empty mask -> whole image
    assert crop_boxes(maps, theta, 0.0).tolist() == [[5, 10, 15, 20], [28, 0, 32, 4], [0, 0, 32, 32]]
    assert crop_boxes(maps, theta, 0.1).tolist() == [[2, 7, 18, 23], [25, 0, 32, 7], [0, 0, 32, 32]]
    g = torch.Generator().manual_seed(0)
    rnd = upsample_maps(torch.rand(16, 5, 7, generator=g), (40, 24))  # (16, 40, 24)
    boxes = crop_boxes(rnd, 0.4 + 0.2 * torch.rand(16, generator=g), 0.1)
    x0, y0, x1, y1 = boxes.unbind(1)
    assert bool(((0 <= x0) & (x0 < x1) & (x1 <= 24) & (0 <= y0) & (y0 < y1) & (y1 <= 40)).all())


def test_crop_resize_matches_interpolate():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 3, 16, 20, generator=g)
    full = torch.tensor([[0, 0, 20, 16], [0, 0, 20, 16]])
    torch.testing.assert_close(crop_resize(img, full), img, rtol=1e-5, atol=1e-5)  # full box: identity
    boxes = torch.tensor([[4, 2, 14, 10], [10, 8, 20, 16]])  # 10 x 8 crops -> x2 upsampling
    out = crop_resize(img, boxes)
    assert out.shape == img.shape
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        ref = F.interpolate(img[i:i + 1, :, y0:y1, x0:x1], size=(16, 20), mode="bilinear", align_corners=False)
        # interior equal; the outermost ring may blend with pixels just outside the box (roi_align)
        torch.testing.assert_close(out[i, :, 1:-1, 1:-1], ref[0, :, 1:-1, 1:-1], rtol=1e-4, atol=1e-5)


def test_drop_masks_binary_with_the_right_area():
    ramp = torch.linspace(0, 1, 101).expand(2, 50, 101)  # (2, H, W): A* = x / 100
    keep = drop_masks(ramp, torch.tensor([0.305, 0.505]))  # keep x <= 30, x <= 50
    assert keep.shape == (2, 1, 50, 101) and set(keep.unique().tolist()) <= {0.0, 1.0}
    assert keep[0].mean().item() == pytest.approx(31 / 101) and keep[1].mean().item() == pytest.approx(51 / 101)
    low = torch.linspace(0, 1, 8).expand(1, 8, 8)  # a low-resolution ramp, upsampled and renormalised
    up = upsample_maps(low, (64, 64))
    assert float(up.min()) == 0.0 and float(up.max()) == 1.0
    assert drop_masks(up, torch.tensor([0.4])).mean().item() == pytest.approx(0.4, abs=0.05)


def _wsdan_task(tmp_path: Path, **extra: object):
    from imgcls_cli.methods.wsdan import WSDANTask

    cfg = build_config(None, quick_overrides(**{"train.method": "wsdan", "model.wsdan_maps": 4, **extra}))
    model = WSDANTask.build_model(cfg, 3)
    return WSDANTask(cfg, model, 3, [8, 8, 8]), model


def test_wsdan_pooling_equals_formula_and_augment_is_valid(tmp_path: Path):
    torch.manual_seed(0)
    task, model = _wsdan_task(tmp_path)
    assert isinstance(model, WSDAN) and meta(model)["feat_dim"] == 4 * 64
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    logits, feature, maps = model(x, with_attention=True)
    feats = model.features(x)  # (4, 64, 8, 8)
    fm = torch.einsum("bmhw,bchw->bmc", maps, feats).flatten(1) / 64  # eq. 2-3, GAP of A_k * F
    fm = F.normalize(torch.sign(fm) * torch.sqrt(fm.abs()), dim=1)
    torch.testing.assert_close(feature, fm, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(logits, model.head.fc(100 * fm), rtol=1e-3, atol=1e-4)
    crops, drops = task.augment(x, maps)
    assert crops.shape == drops.shape == x.shape and bool(torch.isfinite(crops).all())
    kept = drops == x
    assert bool((kept | (drops == 0)).all())  # every pixel is either the original or dropped (0)
    frac = 1 - kept.float().mean(dim=(1, 2, 3))
    assert bool((frac > 0).all()) and bool((frac < 1).all())
    task.step = 0
    crops2, drops2 = task.augment(x, maps)  # same seed, epoch, step: the same augmentation
    torch.testing.assert_close(crops, crops2, rtol=0, atol=0)  # (assert_close returns None: never chain with `and`)
    torch.testing.assert_close(drops, drops2, rtol=0, atol=0)
    refined = model.refined_logits(x)
    assert refined.shape == (4, 3)


def test_pick_maps_follows_mass_and_centre_update():
    from imgcls_cli.methods.wsdan import FeatureCenters, pick_maps

    maps = torch.zeros(5, 3, 4, 4)
    maps[:, 2] = 1.0  # only map 2 has mass
    picked = pick_maps(maps, torch.rand(5))
    assert torch.equal(picked, maps[:, 2])
    c = FeatureCenters(2, 3, beta=0.05)
    f = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    loss = c(f, torch.tensor([0, 0, 1]))
    assert loss.item() == pytest.approx(1.0)  # centres start at 0: mean ||f||^2
    torch.testing.assert_close(c.centers, torch.tensor([[0.025, 0.025, 0], [0, 0, 0.05]]))  # beta * class mean


def test_pick_maps_probability_is_sqrt_of_mass():
    from imgcls_cli.methods.wsdan import pick_maps

    # masses 1, 4, 9, 16 (constant 2x2 maps): p ~ sqrt(mass) = 0.1, 0.2, 0.3, 0.4, whereas p ~ mass would give
    # 1/30, 4/30, 9/30, 16/30; a uniform grid of u makes the frequencies exact
    values = torch.tensor([1.0, 4.0, 9.0, 16.0]) / 4
    n = 1000
    maps = values.view(1, 4, 1, 1).expand(n, 4, 2, 2)
    picked = pick_maps(maps, (torch.arange(n) + 0.5) / n)  # (n, 2, 2)
    which = (picked[:, 0, 0].unsqueeze(1) == values).float().argmax(1)  # (n,) index of the chosen map
    freq = torch.bincount(which, minlength=4).float() / n
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), rtol=0, atol=2e-3)


def _recorded_augment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, steps: int):
    """Run `task.augment` `steps` times on maps whose picked map is identifiable; record what the crop and
    drop operations receive: (theta_c, theta_d, crop map index, drop map index), each (steps * B,)."""
    import imgcls_cli.methods.wsdan as wsdan_method

    seen: dict[str, list[torch.Tensor]] = {"tc": [], "td": [], "mc": [], "md": []}
    crop_boxes_, drop_masks_ = wsdan_method.crop_boxes, wsdan_method.drop_masks

    def where(maps: torch.Tensor) -> torch.Tensor:  # (B, H, W): map k peaks in the k-th quarter of the width
        return maps.flatten(1).argmax(1) % maps.shape[-1] * 4 // maps.shape[-1]  # (B,)

    def rec_crop(maps: torch.Tensor, theta: torch.Tensor, padding: float) -> torch.Tensor:
        seen["tc"].append(theta.clone())
        seen["mc"].append(where(maps))
        return crop_boxes_(maps, theta, padding)

    def rec_drop(maps: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        seen["td"].append(theta.clone())
        seen["md"].append(where(maps))
        return drop_masks_(maps, theta)

    monkeypatch.setattr(wsdan_method, "crop_boxes", rec_crop)
    monkeypatch.setattr(wsdan_method, "drop_masks", rec_drop)
    task, _ = _wsdan_task(tmp_path)
    b = 8
    maps = torch.zeros(b, 4, 4, 16)
    for k, mass in enumerate((1.0, 4.0, 9.0, 16.0)):
        maps[:, k, 1, 4 * k + 1] = mass  # one hot cell per map, far apart: its position names the map
    x = torch.rand(b, 3, 16, 64, generator=torch.Generator().manual_seed(0))
    task.on_epoch_start(0)
    for _ in range(steps):
        task.augment(x, maps)
    return tuple(torch.cat(seen[k]) for k in ("tc", "td", "mc", "md"))


def test_wsdan_thetas_are_uniform_in_the_paper_ranges(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    stats = pytest.importorskip("scipy.stats")
    theta_c, theta_d, crop_map, drop_map = _recorded_augment(monkeypatch, tmp_path, steps=100)  # 800 draws each
    assert 0.4 <= float(theta_c.min()) and float(theta_c.max()) <= 0.6  # section 3.2: theta_c ~ U(0.4, 0.6)
    assert 0.2 <= float(theta_d.min()) and float(theta_d.max()) <= 0.5  # theta_d ~ U(0.2, 0.5)
    assert stats.kstest(theta_c.numpy(), stats.uniform(0.4, 0.2).cdf).pvalue > 1e-3
    assert stats.kstest(theta_d.numpy(), stats.uniform(0.2, 0.3).cdf).pvalue > 1e-3
    assert stats.kstest(theta_c.numpy(), stats.uniform(0.4, 0.3).cdf).pvalue < 1e-6  # the test can fail
    # independent draws: neither threshold follows the other or the choice of map (|r| ~ 0.035 by chance)
    for a, b in ((theta_c, theta_d), (theta_c, crop_map), (theta_d, drop_map)):
        assert abs(np.corrcoef(a.numpy(), b.float().numpy())[0, 1]) < 0.15


def test_wsdan_augment_picks_maps_by_sqrt_mass_independently(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from scipy.stats import chisquare

    _, _, crop_map, drop_map = _recorded_augment(monkeypatch, tmp_path, steps=100)
    p = np.array([0.1, 0.2, 0.3, 0.4])  # sqrt of the masses 1, 4, 9, 16, normalised
    for picked in (crop_map, drop_map):
        counts = np.bincount(picked.numpy(), minlength=4)
        assert chisquare(counts, p * counts.sum()).pvalue > 1e-3, counts
        assert chisquare(counts, np.array([1, 4, 9, 16]) / 30 * counts.sum()).pvalue < 1e-6  # not p ~ mass
    # one map for cropping and one for dropping, drawn independently (the authors draw two per image)
    same = float((crop_map == drop_map).float().mean())
    assert same == pytest.approx(float((p ** 2).sum()), abs=0.06)


def test_wsdan_loss_is_mean_of_three_ce_plus_centre_loss(tmp_path: Path):
    torch.manual_seed(0)
    task, model = _wsdan_task(tmp_path)
    model.train()
    with torch.no_grad():
        task.centers.centers.copy_(torch.randn_like(task.centers.centers))  # centres away from 0: their norm matters
    c0 = task.centers.centers.clone()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1])
    task.on_epoch_start(0)
    out = task.train_step({"images": x, "targets": y})
    # written out: (CE(raw) + CE(crop) + CE(drop)) / 3 + sum_k ||f - c_y/|c_y| ||^2 averaged over images;
    # the same draws (step 0) give the same crops and drops
    task.step = 0
    with torch.no_grad():
        logits, feature, maps = model(x, with_attention=True)
        crops, drops = task.augment(x, maps)
        ce = [F.cross_entropy(z, y) for z in (logits, model(crops), model(drops))]
        centre = (feature - F.normalize(c0[y], dim=1)).pow(2).sum(1).mean()
    torch.testing.assert_close(out["center"], centre)
    torch.testing.assert_close(out["loss"].detach(), sum(ce) / 3 + centre)
    torch.testing.assert_close(task.centers.centers[0], c0[0] + 0.05 * (feature[0] - F.normalize(c0[0], dim=0)))


def test_wsdan_refined_logits_values():
    """Section 3.4: refined = (raw logits + logits of the crop of the MEAN map at theta 0.1, padded 5 %) / 2."""
    torch.manual_seed(0)
    net = WSDAN(nn.AvgPool2d(4), 3, 5, num_maps=2).eval()  # features: the 4x4-pooled image (B, 3, 8, 8)
    with torch.no_grad():
        # map k is channel k
        net.head.attention[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
    x = torch.zeros(2, 3, 32, 32)
    x[:, 0, 2:10, 2:10] = 1.0  # map 0: a strong blob
    x[:, 1, 12:20, 8:16] = 0.3  # map 1: a weak one (in the 0.1-threshold box of the mean map, not of map 0 alone)
    x[:, 2] = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(1))  # texture the crop changes
    with torch.no_grad():
        raw, _, maps = net(x, with_attention=True)
        mean = F.interpolate(maps.mean(1, keepdim=True), size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
        lo, hi = mean.amin((1, 2), keepdim=True), mean.amax((1, 2), keepdim=True)
        mask = (mean - lo) / (hi - lo) >= 0.1  # (B, 32, 32)
        boxes = []
        for m in mask:
            rows, cols = m.any(1).nonzero()[:, 0], m.any(0).nonzero()[:, 0]
            pad = int(0.05 * 32)
            boxes.append([max(int(cols.min()) - pad, 0), max(int(rows.min()) - pad, 0),
                          min(int(cols.max()) + 1 + pad, 32), min(int(rows.max()) + 1 + pad, 32)])
        boxes_t = torch.tensor(boxes)
        assert boxes == [[0, 0, 18, 22]] * 2  # much smaller than the image: the crop matters
        crop = net(crop_resize(x, boxes_t))
        assert float((crop - raw).abs().max()) > 0.1
        torch.testing.assert_close(net.refined_logits(x), (raw + crop) / 2, rtol=1e-5, atol=1e-5)


def _train_and_eval(tiny_folder: Path, tmp_path: Path, **extra: object):
    out = tmp_path / "run"
    res = ic.train(**quick_overrides(**{"data.path": str(tiny_folder), "data.img_size": 32, "train.out": str(out),
                                        **extra}))
    runner = CliRunner()
    from imgcls_cli.cli.app import app

    r = runner.invoke(app, ["eval", str(out / "best.pt"), "--json", str(tmp_path / "e.json"), "--device", "cpu",
                            "--workers", "0"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["top1"] == pytest.approx(res.final["top1"], abs=1e-6)  # reload reproduces training's eval
    a, b = ic.load_checkpoint(str(out / "best.pt")), ic.load_checkpoint(str(out / "best.pt"))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(a.model(x), b.model(x), rtol=0, atol=0)
    return res, a


def test_bcnn_trains_and_evaluates(tiny_folder: Path, tmp_path: Path):
    res, ckpt = _train_and_eval(tiny_folder, tmp_path, **{"model.head": "bilinear", "model.bilinear_two_stream": True})
    assert res.epochs_run == 1 and ckpt.model.features2 is not None


def test_bcnn_frozen_phase_trains_only_the_classifier(tiny_folder: Path, tmp_path: Path):
    torch.manual_seed(3)
    start = ic.build_model("resnet20", 3).state_dict()
    torch.save(start, tmp_path / "w.pth")
    res = ic.train(**quick_overrides(**{"data.path": str(tiny_folder), "data.img_size": 32,
                                       "train.out": str(tmp_path / "r"), "model.head": "bilinear",
                                       "model.weights": str(tmp_path / "w.pth"),
                                       "train.freeze_backbone_epochs": 1}))
    st = ic.load_checkpoint(str(res.run_dir / "last.pt")).model.state_dict()
    torch.testing.assert_close(st["features.conv1.weight"], start["conv1.weight"])
    torch.testing.assert_close(st["features.layer3.2.conv2.weight"], start["layer3.2.conv2.weight"])
    assert st["fc.weight"].shape == (3, 4096)


def test_wsdan_trains_and_evaluates(tiny_folder: Path, tmp_path: Path):
    res, ckpt = _train_and_eval(tiny_folder, tmp_path, **{"train.method": "wsdan", "model.wsdan_maps": 4})
    assert isinstance(ckpt.model, WSDAN)
    assert ckpt.raw["loss_modules"][0]["centers"].abs().sum() > 0  # centres moved and were saved
    maps = ic.cam(ckpt.model, torch.randn(2, 3, 32, 32), method="wsdan-attention")
    assert maps.shape == (2, 32, 32)


def test_wsdan_rejects_incompatible_options(tiny_folder: Path):
    with pytest.raises(ImgclsError, match="wsdan"):
        ic.train(**quick_overrides(**{"data.path": str(tiny_folder), "train.method": "wsdan",
                                     "model.head": "bilinear"}))
    with pytest.raises(ImgclsError, match="wsdan-attention"):
        ic.cam(ic.build_model("resnet20", 3), torch.randn(1, 3, 32, 32), method="wsdan-attention")
