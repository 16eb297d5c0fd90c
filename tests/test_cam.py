"""Activation maps: Grad-CAM family against pytorch-grad-cam, CAM against Grad-CAM, every model, CLI."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import imgcls_cli as ic
from imgcls_cli.config import load_components
from imgcls_cli.errors import ImgclsError
from imgcls_cli.registry import ATTENTION, BACKBONES, CAM_METHODS, METHODS
from imgcls_cli.viz.cam import count_hooks
from tests.conftest import make_folder_dataset, quick_overrides

load_components()
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

REFERENCE = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM"}


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def assert_same_maps(ours: np.ndarray, ref: np.ndarray) -> None:
    """Correlation >= 0.999 per image; a map that ReLU zeroes everywhere must be zero in both."""
    compared = 0
    for a, b in zip(ours, ref, strict=True):
        if b.max() == 0:
            assert a.max() == 0
            continue
        assert corr(a, b) >= 0.999
        compared += 1
    assert compared >= len(ref) // 2


def reference_maps(model: torch.nn.Module, layer: str, x: torch.Tensor, method: str, targets: list[int]) -> np.ndarray:
    ref_cls = getattr(pgc, REFERENCE[method])
    with ref_cls(model=model, target_layers=[model.get_submodule(layer)]) as ref:
        return ref(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])  # (B, H, W)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny resnet20 trained for one epoch on the synthetic folder: its best.pt."""
    root = tmp_path_factory.mktemp("camrun")
    data = make_folder_dataset(root / "tiny")
    ic.train(**quick_overrides(**{"data.path": str(data), "data.img_size": 32, "train.out": str(root / "run"),
                                  "train.runs_dir": str(root / "runs")}))
    return root / "run" / "best.pt"


@pytest.mark.parametrize("method", sorted(REFERENCE))
def test_matches_pytorch_grad_cam_random_resnet18(method: str) -> None:
    torch.manual_seed(0)
    model = ic.build_model("resnet18", num_classes=5).eval()
    x = torch.randn(3, 3, 64, 64)
    ours = ic.cam(model, x, method=method, target=[0, 1, 2]).numpy()
    ref = reference_maps(model, "layer4", x, method, [0, 1, 2])
    assert ours.shape == ref.shape == (3, 64, 64)
    assert_same_maps(ours, ref)


def test_matches_pytorch_grad_cam_trained_model(trained: Path) -> None:
    ckpt = ic.load_checkpoint(str(trained))
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32)
    ours = ic.cam(ckpt.model, x, method="gradcam").numpy()  # target None = top-1, as the reference does
    top1 = ckpt.model(x).argmax(1).tolist()
    ref = reference_maps(ckpt.model, "layer3", x, "gradcam", top1)
    assert_same_maps(ours, ref)


@pytest.mark.parametrize("backbone,layer", [("resnet18", "layer4"), ("resnet20", "layer3"),
                                            ("mobilenet_v2", "features"), ("resnet18", "layer3.1")])
def test_cam_equals_gradcam_up_to_scale(backbone: str, layer: str) -> None:
    torch.manual_seed(0)
    model = ic.build_model(backbone, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    t = torch.tensor([1, 4])
    if layer != "layer4" and backbone == "resnet18":  # not pooled straight into fc: CAM must refuse
        with pytest.raises(ImgclsError, match="gradcam"):
            CAM_METHODS.get("cam")(model, x, t, layer)
        return
    cam_raw = CAM_METHODS.get("cam")(model, x, t, layer)  # (B, h, w) sum_k w_k^c A_k
    grad_raw = CAM_METHODS.get("gradcam")(model, x, t, layer)  # ReLU(sum_k mean(dy/dA_k) A_k)
    hw = cam_raw.shape[1] * cam_raw.shape[2]
    torch.testing.assert_close(torch.relu(cam_raw) / hw, grad_raw, rtol=1e-4, atol=1e-6)


def test_cam_cosine_head_uses_normalised_weights() -> None:
    torch.manual_seed(0)
    model = ic.build_model("resnet18", num_classes=4, head="cosine").eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.layer4(model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x))))))))
    w = torch.nn.functional.normalize(model.fc.weight, dim=1)  # (C, D)
    expected = torch.einsum("k,bkhw->bhw", w[2], feats)  # eq. 2 with w_c / |w_c|
    got = CAM_METHODS.get("cam")(model, x, torch.tensor([2, 2]), "layer4")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(backbone="vgg11"), dict(backbone="mobilenet_v3_small"),
                                dict(backbone="resnet18", feature_dim=32), dict(backbone="resnet18", head="bilinear")])
def test_cam_explains_where_it_does_not_apply(kw: dict) -> None:
    model = ic.build_model(kw.pop("backbone"), num_classes=3, **kw)
    with pytest.raises(ImgclsError, match="use --method gradcam"):
        ic.cam(model, torch.randn(1, 3, 64, 64), method="cam")
    assert count_hooks(model) == 0
    assert ic.cam(model, torch.randn(1, 3, 64, 64), method="gradcam").isfinite().all()


def _combinations() -> list:
    """The first backbone of every family x every attention x linear/cosine heads.

    VGG's 120 M-parameter classifier takes seconds to initialise on a busy CPU, so its attention
    variants run with the slow tests (the plain VGG runs always).
    """
    first: dict[str, str] = {}
    for name in BACKBONES.names():
        first.setdefault(BACKBONES.meta(name)["family"], name)
    out = []
    for backbone in sorted(first.values()):
        for attn in ["none", *ATTENTION.names()]:
            for head in ("linear", "cosine"):
                slow = BACKBONES.meta(backbone)["family"] == "vgg" and attn != "none"
                out.append(pytest.param(backbone, attn, head, marks=[pytest.mark.slow] if slow else []))
    return out


@pytest.mark.parametrize("backbone,attn,head", _combinations())
def test_every_family_attention_head_gives_finite_maps(backbone: str, attn: str, head: str) -> None:
    torch.manual_seed(0)
    model = ic.build_model(backbone, num_classes=3, attn=attn, head=head)
    x = torch.randn(2, 3, 32, 32)
    for method in ("gradcam", "gradcam++", "cam"):
        try:
            maps = ic.cam(model, x, method=method)
        except ImgclsError as e:
            assert method == "cam" and "gradcam" in str(e)
            continue
        assert maps.shape == (2, 32, 32) and maps.isfinite().all()
        assert 0.0 <= float(maps.min()) and float(maps.max()) <= 1.0
        assert count_hooks(model) == 0


@pytest.mark.parametrize("method", METHODS.names())
def test_every_training_method_model_gives_maps(method: str) -> None:
    """Models of every training method (BBN, WS-DAN, ...) explain with Grad-CAM; other CAM methods
    either work or refuse with a one-line ImgclsError."""
    from imgcls_cli.config import build_config
    from imgcls_cli.methods import build_task_model

    ov = {"train.method": method, "model.backbone": "resnet20"}
    ov.update({"train.init_from": "stage1.pt"} if method in ("crt", "lws") else {})
    model = build_task_model(build_config(None, ov), 4, [8, 6, 4, 2], for_inference=True)
    x = torch.randn(2, 3, 32, 32)
    assert ic.cam(model, x, method="gradcam").isfinite().all()
    for name in CAM_METHODS.names():
        try:
            maps = ic.cam(model, x, method=name)
        except ImgclsError:
            continue
        assert maps.shape == (2, 32, 32) and maps.isfinite().all()
    assert count_hooks(model) == 0


def test_hooks_released_and_memory_flat_over_many_calls() -> None:
    torch.manual_seed(0)
    model = ic.build_model("resnet20", num_classes=10).train()
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(1, 3, 32, 32)

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is torch.Tensor or type(o) is torch.nn.Parameter)

    ic.cam(model, x)  # warm-up (lazy caches)
    before = live_tensors()
    for i in range(25):
        ic.cam(model, x, method=("gradcam", "cam", "gradcam++")[i % 3], target=i % 10)
        assert count_hooks(model) == 0
    assert live_tensors() <= before + 2
    assert all(p.grad is None for p in model.parameters())  # gradients go only to the activation
    assert [p.requires_grad for p in model.parameters()] == flags and model.training


def test_bad_layer_target_and_method() -> None:
    model = ic.build_model("resnet20", num_classes=4)
    with pytest.raises(ImgclsError, match=r"--layer: no layer 'layer9'.*valid: layer3, conv1"):
        ic.cam(model, torch.randn(1, 3, 32, 32), layer="layer9")
    with pytest.raises(ImgclsError, match="not a \\(B, C, h, w\\) feature map"):
        ic.cam(model, torch.randn(1, 3, 32, 32), layer="fc")
    assert count_hooks(model) == 0
    with pytest.raises(ImgclsError, match=r"valid: 0\.\.3"):
        ic.cam(model, torch.randn(1, 3, 32, 32), target=4)
    with pytest.raises(ImgclsError, match="--method: unknown cam method"):
        ic.cam(model, torch.randn(1, 3, 32, 32), method="gradcamm")
    a = ic.cam(model, torch.randn(2, 3, 32, 32), target=[1, 2])
    assert a.shape == (2, 32, 32)


def _odd_image(path: Path, h: int = 37, w: int = 45) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_cli_end_to_end(trained: Path, tmp_path: Path) -> None:
    from imgcls_cli.cli.app import app

    img = _odd_image(tmp_path / "odd.png")
    folder = trained.parent.parent / "tiny" / "val" / "class_1"
    r = CliRunner().invoke(app, ["cam", str(img), str(folder), "--checkpoint", str(trained), "--save-raw",
                                 "--out", "o", "--topk", "2", "--method", "gradcam++"])
    assert r.exit_code == 0, r.output
    npys = sorted(Path("o").glob("odd_gradcampp_top*.npy"))
    assert [p.name[:19] for p in npys] == ["odd_gradcampp_top1_", "odd_gradcampp_top2_"]
    for p in npys:
        raw = np.load(p)
        assert raw.shape == (37, 45) and raw.dtype == np.float32 and 0 <= raw.min() and raw.max() <= 1
    assert len(list(Path("o").glob("*.png"))) == 2 * 5 + 1  # 5 images x top-2 + the grid
    assert Path("o/grid_gradcampp.png").stat().st_size > 1000
    r = CliRunner().invoke(app, ["cam", str(img), "-c", str(trained), "--target-class", "class_2", "--method", "cam"])
    assert r.exit_code == 0, r.output
    assert Path("cam/odd_cam.png").is_file()


def test_cli_uses_latest_run_and_errors(trained: Path, tmp_path: Path) -> None:
    from imgcls_cli.cli.app import app

    img = _odd_image(tmp_path / "a.png")
    r = CliRunner().invoke(app, ["cam", str(img)])
    assert r.exit_code == 2 and "train first" in r.output
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "best.pt").write_bytes(trained.read_bytes())
    r = CliRunner().invoke(app, ["cam", str(img), "--save-raw"])
    assert r.exit_code == 0, r.output
    assert np.load("cam/a_gradcam.npy").shape == (37, 45)
    r = CliRunner().invoke(app, ["cam", str(img), "--layer", "layer9"])
    assert r.exit_code == 2 and "valid: layer3" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["cam", str(img), "--target-class", "zebra"])
    assert r.exit_code == 2 and "class_0" in r.output
    r = CliRunner().invoke(app, ["cam", str(tmp_path / "missing.jpg")])
    assert r.exit_code == 2 and "missing.jpg" in r.output


def test_cam_input_is_exactly_the_eval_crop_and_maps_back_to_its_box() -> None:
    """The model must see what evaluation fed it (a 32 px model gives other answers at 37 px)."""
    from types import SimpleNamespace

    from imgcls_cli.config import build_config
    from imgcls_cli.data.transforms import eval_transform
    from imgcls_cli.viz.explain import preprocess

    # as a checkpoint's config.yaml states it (training resolves the preset's crop): the ImageNet-style centre crop
    cfg = build_config(None, {"data.img_size": 32, "aug.preset": "random_resized_crop", "aug.eval_crop_pct": 0.875})
    ck = SimpleNamespace(config=cfg, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    img = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    x, (y0, x0, y1, x1) = preprocess(img, ck, torch.device("cpu"))
    ref = torch.from_numpy(eval_transform(32, cfg.aug.eval_crop_pct)(image=img)["image"]).permute(2, 0, 1).float()
    ref = (ref - torch.tensor(ck.mean).view(3, 1, 1) * 255) / (torch.tensor(ck.std).view(3, 1, 1) * 255)
    torch.testing.assert_close(x[0], ref)
    assert x.shape == (1, 3, 32, 32)
    # shorter side -> round(32 / 0.875) = 37: no resize here, so the box is the centre crop itself
    assert (y0, x0, y1, x1) == (2, 6, 34, 38)
    big = np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)  # 74 x 90: resized by 1/2, box scales by 2
    assert preprocess(big, ck, torch.device("cpu"))[1] == (4, 12, 68, 76)


def test_cli_names_differing_only_in_case_do_not_share_an_output(trained: Path, tmp_path: Path) -> None:
    """photo.JPG and PHOTO.png both wrote photo_gradcam.png / PHOTO_gradcam.png: one file, the first map lost,
    on case-insensitive file systems (macOS, Windows)."""
    from imgcls_cli.cli.app import app

    _odd_image(tmp_path / "photo.JPG")
    _odd_image(tmp_path / "PHOTO.png")
    r = CliRunner().invoke(app, ["cam", str(tmp_path / "photo.JPG"), str(tmp_path / "PHOTO.png"),
                                 "--checkpoint", str(trained), "--out", "o"])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in Path("o").glob("*_gradcam.png") if not p.name.startswith("grid_"))
    assert len({n.casefold() for n in names}) == 2, names


def test_cli_skips_and_reports_unreadable_files(trained: Path, tmp_path: Path) -> None:
    """Issue 25: `cam FOLDER` stopped at the first unreadable file.  Mutation caught: the error not caught
    per file (exit 2, no overlays), or caught silently (no line naming the file)."""
    from imgcls_cli.cli.app import app

    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a_broken.jpg").write_bytes(b"not a jpeg")
    _odd_image(folder / "b_ok.png")
    r = CliRunner().invoke(app, ["cam", str(folder), "--checkpoint", str(trained), "--out", "o"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "skipped unreadable image IMAGE" in out and "a_broken.jpg" in out and "skipped 1 unreadable" in out
    assert [p.name for p in Path("o").glob("*.png")] == ["b_ok_gradcam.png"]
    r = CliRunner().invoke(app, ["cam", str(folder / "a_broken.jpg"), "--checkpoint", str(trained)])
    assert r.exit_code == 2 and "none of the 1 file(s) could be read" in r.output
