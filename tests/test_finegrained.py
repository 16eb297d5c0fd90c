"""Fine-grained methods: B-CNN (`--head bilinear`) and WS-DAN (`--method wsdan`)."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert summary["top1"] == pytest.approx(res.best_top1, abs=1e-6)  # reload reproduces training's eval
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
