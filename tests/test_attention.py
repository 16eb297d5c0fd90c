"""Attention modules: contract over every backbone x attention pair, references, weights, export."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation

import imgcls_cli as ic
from imgcls_cli.config import load_components
from imgcls_cli.errors import ImgclsError
from imgcls_cli.models import build as build_mod
from imgcls_cli.models.attention.insert import insert_attention
from imgcls_cli.registry import ATTENTION, BACKBONES

load_components()
HEAVY = ("vgg", "resnet101", "resnet152")  # big models: still tested, marked slow
PAIRS = [
    pytest.param(b, a, marks=[pytest.mark.slow] if b.startswith(HEAVY) else [], id=f"{b}-{a}")
    for b in BACKBONES.names() for a in ATTENTION.names()
]
_PLAIN: dict[str, nn.Module] = {}


def _pair(backbone: str, attn: str) -> tuple[nn.Module, nn.Module]:
    """(plain model, same weights + attention), via the inserter `build_model` calls."""
    if backbone not in _PLAIN:
        _PLAIN.clear()  # keep one big model in memory at a time
        torch.manual_seed(0)
        _PLAIN[backbone] = ic.build_model(backbone, num_classes=10)
    plain = _PLAIN[backbone]
    model = copy.deepcopy(plain)
    torch.manual_seed(1)
    insert_attention(model, BACKBONES.meta(backbone)["family"], attn)
    return plain, model


def _nparams(m: nn.Module) -> float:
    return sum(p.numel() for p in m.parameters()) / 1e6


@pytest.mark.parametrize(("backbone", "attn"), PAIRS)
def test_contract(backbone: str, attn: str) -> None:
    plain, model = _pair(backbone, attn)
    old, new = plain.state_dict(), model.state_dict()
    own_se = tuple(n + "." for n, m in plain.named_modules() if isinstance(m, SqueezeExcitation))  # MobileNetV3
    kept = {k: v for k, v in old.items() if not k.startswith(own_se)}
    assert all(k in new and new[k].shape == v.shape for k, v in kept.items()), "existing names must not change"
    added = [k for k in new if k not in old]
    assert added and all(".attn." in k for k in added)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    if attn == "nonlocal":  # W_z's BN starts at gamma = beta = 0: the block is the identity
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x), plain.eval()(x), rtol=0, atol=1e-6)
    model.train()
    xg = x.clone().requires_grad_()
    out = model(xg)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    # gradients of the attention parameters and the input only (skips VGG's 120 M classifier weights)
    attn_params = [p for n, p in model.named_parameters() if ".attn." in n]
    grads = torch.autograd.grad(out.square().mean(), [xg, *attn_params])
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[0].abs().sum() > 0 and any(g.abs().sum() > 0 for g in grads[1:])
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert a.shape == (2, 10) and torch.equal(a, b)


@pytest.mark.parametrize(("backbone", "attn", "ref_m", "tol"), [("mobilenet_v2", "coord", 3.95, 0.01)])
def test_parameter_counts(backbone: str, attn: str, ref_m: float, tol: float) -> None:
    assert abs(_nparams(ic.build_model(backbone, 1000, attn=attn)) - ref_m) / ref_m < tol


# residual-branch output channels of every block (where SE / CBAM go)
BLOCK_CHANNELS = {
    "resnet20": [16] * 3 + [32] * 3 + [64] * 3,
    "resnet18": [64] * 2 + [128] * 2 + [256] * 2 + [512] * 2,
    "resnet50": [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3,
}


def _se_params(c: int, r: int) -> int:
    h = max(1, c // r)  # W1: C -> C/r, W2: C/r -> C, both with bias (eq. 3; timm / official code)
    return c * h + h + h * c + c


def _cbam_params(c: int, r: int, k: int) -> int:
    return _se_params(c, r) + 2 * k * k + 2  # shared MLP as SE + k x k conv 2 -> 1 without bias + BN(1) gamma, beta


@pytest.mark.parametrize(("backbone", "reduction", "kernel"), [
    ("resnet50", 16, 7), ("resnet18", 8, 3),
    ("resnet20", 3, 5),  # C // r rounds down (16 // 3 = 5)
    ("resnet20", 32, 7),  # max(1, C // r): 16 // 32 = 0 -> one hidden unit
])
def test_se_and_cbam_parameter_counts_exact(backbone: str, reduction: int, kernel: int) -> None:
    plain = sum(p.numel() for p in ic.build_model(backbone, 1000).parameters())
    opts = {"reduction": reduction, "cbam_kernel": kernel}
    se = sum(p.numel() for p in ic.build_model(backbone, 1000, attn="se", attn_options=opts).parameters())
    cbam = sum(p.numel() for p in ic.build_model(backbone, 1000, attn="cbam", attn_options=opts).parameters())
    chans = BLOCK_CHANNELS[backbone]
    assert se == plain + sum(_se_params(c, reduction) for c in chans)
    assert cbam == plain + sum(_cbam_params(c, reduction, kernel) for c in chans)
    if backbone == "resnet50":  # torchvision ResNet-50; SE-ResNet-50 as timm's seresnet50; + 16 x 100 for CBAM
        assert (plain, se, cbam) == (25_557_032, 28_088_024, 28_089_624)


def test_nonlocal_positions() -> None:
    m1 = ic.build_model("resnet50", 10, attn="nonlocal")
    assert [n for n, _ in m1.named_modules() if n.endswith(".attn")] == ["layer3.4.attn"]  # before the last res4 block
    m5 = ic.build_model("resnet50", 10, attn="nonlocal", attn_options={"nonlocal_blocks": 5})
    found = sorted(n for n, _ in m5.named_modules() if n.endswith(".attn"))
    # the official 5-block layout: after res3 blocks 1, 3 and res4 blocks 1, 3, 5 (`idx % 2 == 1`)
    assert found == ["layer2.1.attn", "layer2.3.attn", "layer3.1.attn", "layer3.3.attn", "layer3.5.attn"]

    def nl(c: int) -> int:  # theta C->C/2, phi+g C->C, W_z C/2->C (with biases), BN 2C
        return (c * c // 2 + c // 2) + (c * c + c) + (c // 2 * c + c) + 2 * c

    base = _nparams(ic.build_model("resnet50", 10)) * 1e6
    assert round(_nparams(m5) * 1e6) == round(base) + 2 * nl(512) + 3 * nl(1024)
    assert round(_nparams(m1) * 1e6) == round(base) + nl(1024)
    # inner width C/2: theta maps 1024 -> 512 channels in res4
    assert m1.layer3[4].attn.theta.weight.shape == (512, 1024, 1, 1)
    with pytest.raises(ImgclsError, match="--nonlocal-blocks"):
        ic.build_model("resnet18", 10, attn="nonlocal", attn_options={"nonlocal_blocks": 5})


def test_se_matches_timm_seresnet50() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("seresnet50", pretrained=False, num_classes=10).eval()
    ours = ic.build_model("resnet50", 10, attn="se").eval()
    assert _nparams(ours) * 1e6 == sum(p.numel() for p in ref.parameters())
    ours.load_state_dict({k.replace(".se.", ".attn."): v for k, v in ref.state_dict().items()})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)


def test_cbam_matches_timm_cbam() -> None:
    pytest.importorskip("timm")
    from timm.layers.cbam import CbamModule

    torch.manual_seed(0)
    ref, ours = CbamModule(64).eval(), ATTENTION.get("cbam")(64).eval()
    nn.init.normal_(ref.spatial.conv.bn.weight)  # non-zero gate so the spatial branch matters
    nn.init.normal_(ref.spatial.conv.bn.bias)
    with torch.no_grad():
        ours.fc1.weight.copy_(ref.channel.fc1.weight)
        ours.fc2.weight.copy_(ref.channel.fc2.weight)
        ours.fc1.bias.zero_()  # timm's MLP has no bias (the official code has one)
        ours.fc2.bias.zero_()
        ours.conv.weight.copy_(ref.spatial.conv.conv.weight.flip(1))  # timm pools (mean, max), official (max, mean)
        ours.bn.load_state_dict(ref.spatial.conv.bn.state_dict())
        x = torch.randn(2, 64, 9, 7)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)
    assert (ATTENTION.get("cbam")(64).bn.weight == 0).all()  # official init: spatial-gate BN gamma = 0


def test_coord_attention_matches_paper_equations() -> None:
    torch.manual_seed(0)
    ca = ATTENTION.get("coord")(64).eval()
    nn.init.normal_(ca.bn1.running_mean)
    x = torch.randn(2, 64, 5, 7)
    # eqs. (4)-(9), written the official way with adaptive pools and permutes
    z_h = F.adaptive_avg_pool2d(x, (None, 1))  # (B, C, H, 1)
    z_w = F.adaptive_avg_pool2d(x, (1, None)).permute(0, 1, 3, 2)  # (B, C, W, 1)
    f = ca.conv1(torch.cat([z_h, z_w], 2))
    f = F.batch_norm(f, ca.bn1.running_mean, ca.bn1.running_var, ca.bn1.weight, ca.bn1.bias, False)
    f = f * F.relu6(f + 3) / 6  # h_swish
    f_h, f_w = f.split([5, 7], 2)
    want = x * torch.sigmoid(ca.conv_h(f_h)) * torch.sigmoid(ca.conv_w(f_w.permute(0, 1, 3, 2)))
    with torch.no_grad():
        torch.testing.assert_close(ca(x), want, rtol=1e-5, atol=1e-6)
    assert ca.conv1.out_channels == 8 and ATTENTION.get("coord")(1024).conv1.out_channels == 32  # max(8, C/32)


def test_nonlocal_matches_embedded_gaussian() -> None:
    torch.manual_seed(0)
    nl = ATTENTION.get("nonlocal")(16).eval()
    nn.init.normal_(nl.bn.weight)
    nn.init.normal_(nl.bn.bias)
    for conv in (nl.theta, nl.phi_g, nl.w_z):
        nn.init.normal_(conv.weight, std=0.3)
    x = torch.randn(2, 16, 6, 4)
    theta = nl.theta(x).flatten(2)  # (B, 8, 24)
    pg = nl.phi_g(F.max_pool2d(x, 2)).flatten(2)  # (B, 16, 6)
    phi, g = pg[:, :8], pg[:, 8:]
    attn = torch.softmax(theta.transpose(1, 2) @ phi / 8 ** 0.5, dim=-1)  # (B, 24, 6), eq. (3) + official scale
    y = (attn @ g.transpose(1, 2)).transpose(1, 2).reshape(2, 8, 6, 4)
    want = x + nl.bn(nl.w_z(y))  # eq. (6)
    with torch.no_grad():
        torch.testing.assert_close(nl(x), want, rtol=1e-4, atol=1e-5)


def test_torchvision_resnet50_weights_load_into_cbam(tmp_path) -> None:
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet50()
    path = tmp_path / "r50.pt"
    torch.save(tv.state_dict(), path)
    model = ic.build_model("resnet50", 1000, attn="cbam", weights=path)
    report = "\n".join(build_mod.log_messages)
    assert "new (initialised, not in the file)" in report and ".attn." in report
    own = model.state_dict()
    new = [k for k in own if k not in tv.state_dict()]
    assert new and all(".attn." in k for k in new)
    for k, v in tv.state_dict().items():
        assert torch.equal(own[k], v), k


def test_mobilenet_v3_own_se_replaced() -> None:
    m = ic.build_model("mobilenet_v3_small", 10, attn="cbam")
    assert not any(isinstance(x, SqueezeExcitation) for x in m.modules())
    assert sum(n.endswith(".attn") for n, _ in m.named_modules()) == 11  # one per inverted residual
    plain = ic.build_model("mobilenet_v3_small", 10)
    assert any(isinstance(x, SqueezeExcitation) for x in plain.modules())  # --attn none keeps V3's SE


@pytest.mark.parametrize("attn", ATTENTION.names())
def test_trace_and_onnx_export(attn: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = ic.build_model("resnet20", 10, attn=attn).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
        traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), want, rtol=1e-4, atol=1e-5)
        buf = io.BytesIO()
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["x"])
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-3, atol=1e-4)


def test_pickle_roundtrip() -> None:
    model = ic.build_model("resnet20", 10, attn="nonlocal")
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x))


def test_bad_attention_options() -> None:
    with pytest.raises(ImgclsError, match="--attn"):
        ic.build_model("resnet20", 10, attn="sse")
    from imgcls_cli.config import Config

    cfg = Config()
    with pytest.raises(ImgclsError, match="model.reduction"):
        cfg.replace(**{"model.attn": "coord", "model.reduction": 8})
    assert cfg.replace(**{"model.attn": "se", "model.reduction": 8}).model.reduction == 8


def test_cli_train_with_attention() -> None:
    from typer.testing import CliRunner

    from imgcls_cli.cli.app import app

    args = ["train", "--backbone", "resnet20", "--attn", "cbam", "--epochs", "1", "--steps-per-epoch", "2",
            "--batch-size", "16", "--workers", "0", "--device", "cpu", "--no-progress", "--out", "run1"]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(app, ["train", "--attn", "coord", "--reduction", "8"])
    assert bad.exit_code == 2 and "model.reduction" in bad.output
