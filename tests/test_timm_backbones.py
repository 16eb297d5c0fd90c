"""`--backbone timm/<name>` (imgcls[timm]): timm's own model, imgcls's heads, weights from a local timm file, timm's
attn_layer, CAM, export, and one-line refusals.  Tiny timm test models (`test_resnet` 0.37 M parameters, ...), no
downloads (pretrained=False; weights come from a state dict saved to tmp)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

timm = pytest.importorskip("timm")

import imgcls_cli as ic  # noqa: E402
from imgcls_cli.errors import ImgclsError  # noqa: E402
from imgcls_cli.models.build import build_model, forward_with_features  # noqa: E402
from imgcls_cli.registry import BACKBONES  # noqa: E402

TINY = ["test_resnet", "test_convnext", "test_efficientnet"]  # classifier keys: fc, head.fc, classifier
QUICK = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8", "--workers", "0", "--device", "cpu",
         "--no-progress"]


def _x(b: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(0))  # (B, 3, S, S)


@pytest.mark.parametrize("name", TINY)
def test_timm_weights_file_gives_timms_own_logits(name: str, tmp_path: Path) -> None:
    """A timm state dict saved to a file and loaded through --weights reproduces timm's forward, head included."""
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, num_classes=4).eval()
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    model = build_model(f"timm/{name}", 4, weights=tmp_path / "w.pth").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(_x()), ref(_x()), rtol=1e-5, atol=1e-6)
    assert BACKBONES.meta(f"timm/{name}")["stages"]  # timm's feature_info, for `imgcls stats`


def test_timm_weights_with_another_class_count_replace_the_head_only(tmp_path: Path) -> None:
    ref = timm.create_model("test_convnext", pretrained=False, num_classes=1000).eval()
    torch.save(ref.state_dict(), tmp_path / "in1k.pth")
    model = build_model("timm/test_convnext", 3, weights=tmp_path / "in1k.pth").eval()
    from imgcls_cli.models import build

    assert any("head replaced" in line for line in build.log_messages), build.log_messages
    with torch.no_grad():
        logits, emb = forward_with_features(model, _x())
        torch.testing.assert_close(emb, ref.forward_head(ref.forward_features(_x()), pre_logits=True))
    assert logits.shape == (2, 3)


@pytest.mark.parametrize("attn,timm_cls", [("se", "SEModule"), ("cbam", "CbamModule")])
def test_attention_uses_timms_attn_layer_with_imgcls_options(attn: str, timm_cls: str) -> None:
    model = build_model("timm/test_resnet", 3, attn=attn, attn_options={"reduction": 4, "nonlocal_blocks": 1,
                                                                         "cbam_kernel": 7})
    mods = [m for m in model.modules() if type(m).__name__ == timm_cls]
    blocks = [m for m in model.modules() if type(m).__name__ in ("BasicBlock", "Bottleneck")]
    assert len(mods) == len(blocks) > 0  # one per residual block, as in the SE / CBAM papers
    plain = sum(p.numel() for p in build_model("timm/test_resnet", 3).parameters())
    assert sum(p.numel() for p in model.parameters()) > plain
    fc1 = mods[0].fc1 if attn == "se" else mods[0].channel.fc1
    assert fc1.out_channels == fc1.in_channels // 4  # --reduction 4 reached timm (rd_ratio 1/4)
    assert model(_x()).shape == (2, 3)


def test_attention_timm_cannot_place_is_refused_in_one_line() -> None:
    from imgcls_cli.cli.app import app

    for args, needle in ((["--backbone", "timm/test_convnext", "--attn", "se"], "--attn se: timm/test_convnext takes"
                          " no attn_layer"),
                         (["--backbone", "timm/test_resnet", "--attn", "coord"], "--attn coord: not available for"
                          " timm backbones"),
                         (["--backbone", "timm/resnet5O"], "did you mean timm/resnet50")):
        r = CliRunner().invoke(app, ["train", *args, *QUICK, "--out", "bad"])
        assert r.exit_code == 2 and needle in " ".join(r.output.split()) and "Traceback" not in r.output, r.output


def test_missing_timm_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from imgcls_cli.cli.app import app

    monkeypatch.setattr(BACKBONES, "_resolved", {})  # forget names resolved by earlier tests
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    r = CliRunner().invoke(app, ["train", "--backbone", "timm/resnet50", *QUICK])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    line = " ".join(r.output.split())
    assert "--backbone timm/resnet50 (model.backbone): needs timm (not installed); pip install 'imgcls[timm]'" in line
    with pytest.raises(ImgclsError, match=r"pip install 'imgcls\[timm\]'"):
        ic.build_model("timm/resnet50", 3)


def test_cam_layer_is_the_last_feature_map() -> None:
    """CAM (fc-weighted sum of the map timm pools) must equal the formula; the tap sees (B, C, h, w)."""
    model = build_model("timm/test_resnet", 3).eval()
    seen = {}
    model.get_submodule(model.imgcls["cam_layer"]).register_forward_hook(lambda m, a, o: seen.setdefault("f", o))
    x = _x(2, 64)
    with torch.no_grad():
        logits = model(x)
    f = seen["f"]  # (2, C, h, w)
    assert f.ndim == 4 and f.shape[1] == model.fc.in_features
    # eq. 2 of Zhou et al.: the class score of a GAP + linear model is the mean over positions of sum_k w_k f_k
    torch.testing.assert_close(torch.einsum("ck,bkhw->bchw", model.fc.weight, f).mean((2, 3)) + model.fc.bias, logits,
                               rtol=1e-4, atol=1e-5)
    for method in ("cam", "gradcam"):
        maps = ic.cam(model, x, method=method)
        assert maps.shape == (2, 64, 64) and float(maps.min()) >= 0 and float(maps.max()) <= 1


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_timm_backbone_exports_with_parity(fmt: str, tmp_path: Path) -> None:
    from imgcls_cli.export import export_model

    rep = export_model(build_model("timm/test_resnet", 3, attn="se"), fmt, tmp_path / f"m.{fmt}", img_size=32,
                       class_names=["a", "b", "c"], mean=(0.5,) * 3, std=(0.25,) * 3)
    assert set(rep.max_abs_err) == {1, 2, 7}  # checked against the eager model inside export_model


def test_heads_and_long_tail_methods_build_on_timm() -> None:
    from imgcls_cli.config import build_config
    from imgcls_cli.methods import build_task_model

    for head in ("cosine", "bilinear"):
        assert build_model("timm/test_efficientnet", 3, head=head)(_x()).shape == (2, 3)
    lws = build_task_model(build_config(None, {"model.backbone": "timm/test_resnet", "train.method": "lws",
                                               "train.init_from": "stage1.pt"}), 3, [30, 10, 2], for_inference=True)
    assert lws(_x()).shape == (2, 3)
    with pytest.raises(ImgclsError, match="--method bbn supports"):
        build_config(None, {"model.backbone": "timm/test_resnet", "train.method": "bbn"})


def test_cli_train_with_timm_weights_then_eval_and_reload(tmp_path: Path) -> None:
    """The real path: --weights FILE (a timm state dict), a checkpoint that rebuilds the timm model on load."""
    from imgcls_cli.cli.app import app
    from imgcls_cli.engine.checkpoint import load_checkpoint

    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), tmp_path / "timm.pth")
    r = CliRunner().invoke(app, ["train", "--backbone", "timm/test_resnet", "--attn", "se", "--weights",
                                 str(tmp_path / "timm.pth"), "--loss", "arcface", "--img-size", "32", *QUICK,
                                 "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt.config.model.backbone == "timm/test_resnet" and ckpt.model.imgcls["family"] == "timm"
    assert ckpt.model(_x()).abs().max() <= 1 + 1e-5  # the cosine head ArcFace needs
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "run" / "best.pt"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
