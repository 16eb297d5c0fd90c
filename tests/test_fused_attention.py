"""Fused attention gates (models/attention/fused.py) and the matmul/im2col forms of the gates.

The fused path only switches on for CUDA + Triton; here it is forced onto the CPU through Dynamo with
the `aot_eager` backend (the same captured graphs and autograd, no code generation), and once with
Inductor's C++ backend (slow).  What must hold: the same outputs, gradients and BatchNorm running
statistics as the eager modules, and no compiled path outside training.
"""

from __future__ import annotations

import copy

import pytest
import torch

import imgcls_cli as ic
from imgcls_cli.models.attention import fused
from imgcls_cli.models.attention.cbam import CBAM
from imgcls_cli.models.attention.coord import CoordAttention
from imgcls_cli.models.attention.se import SqueezeExcitation


def _grads(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def _close(a: dict, b: dict, tol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=k)


@pytest.mark.parametrize(("cls", "attr", "fast", "slow"), [(CBAM, "spatial", "unfold", "conv"),
                                                          (CBAM, "spatial", "stencil", "conv"),
                                                          (CoordAttention, "matmul", True, False)])
def test_matmul_forms_equal_the_conv_forms(cls, attr, fast, slow, monkeypatch) -> None:
    torch.manual_seed(0)
    m = cls(32)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)  # CBAM's BN gamma starts at 0: make every path matter
    x = torch.randn(3, 32, 9, 7, requires_grad=True)
    outs = {}
    for impl in (fast, slow):
        monkeypatch.setattr(cls, attr, impl)
        mm = copy.deepcopy(m)
        x.grad = None
        y = mm(x)
        (y * torch.randn_like(y, generator=torch.Generator().manual_seed(1))).sum().backward()
        outs[impl] = (y.detach(), x.grad.clone(), _grads(mm), dict(mm.named_buffers()))
    torch.testing.assert_close(outs[fast][0], outs[slow][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[fast][1], outs[slow][1], rtol=1e-5, atol=1e-5)
    _close(outs[fast][2], outs[slow][2], 1e-4)
    _close(outs[fast][3], outs[slow][3])


def test_se_matches_the_paper_formula() -> None:
    torch.manual_seed(0)
    m = SqueezeExcitation(32, reduction=4)
    x = torch.randn(2, 32, 5, 6)
    z = x.mean((2, 3))
    s = torch.sigmoid(torch.relu(z @ m.fc1.weight.flatten(1).T + m.fc1.bias) @ m.fc2.weight.flatten(1).T + m.fc2.bias)
    torch.testing.assert_close(m(x), x * s[:, :, None, None])


def _eager_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple:
    fused.set_enabled(False)
    try:
        return _train_step(model, x, y)
    finally:
        fused.set_enabled(True)


def _assert_same(got: tuple, ref: tuple, grad_tol: float) -> None:
    torch.testing.assert_close(got[0], ref[0], rtol=1e-4, atol=1e-4)
    _close(got[1], ref[1], grad_tol)
    _close(got[2], ref[2], 1e-5)


def _train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple:
    torch.manual_seed(1)  # MobileNet's classifier dropout draws the same mask on both sides
    out = model(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    return out.detach(), _grads(model), {k: v.clone() for k, v in model.state_dict().items() if "running" in k
                                         or "num_batches" in k}


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("attn", ["se", "cbam", "coord"])
def test_fused_path_equals_eager(backbone: str, attn: str, monkeypatch) -> None:
    monkeypatch.setattr(fused, "_BACKEND", "aot_eager")
    torch.manual_seed(0)
    model = ic.build_model(backbone, num_classes=5, attn=attn).train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])
    calls = []
    real = fused._compiled

    def spy(fn, backend):
        calls.append(fn.__name__)
        return real(fn, backend)

    monkeypatch.setattr(fused, "_compiled", spy)
    ref = _eager_step(copy.deepcopy(model), x, y)
    assert calls == []
    got = _train_step(model, x, y)
    assert calls and set(calls) <= {"_residual", "_gate"}
    assert ("_residual" in calls) == backbone.startswith("resnet")  # ResNets fuse the block tail too
    _assert_same(got, ref, 1e-4)


def test_no_fused_path_outside_training(monkeypatch) -> None:
    monkeypatch.setattr(fused, "_BACKEND", "aot_eager")
    calls = []
    monkeypatch.setattr(fused, "_compiled", lambda fn, backend: calls.append(fn) or fn)
    model = ic.build_model("resnet18", num_classes=3, attn="se")
    x = torch.randn(2, 3, 32, 32)
    model.eval()(x)  # eval mode (Grad-CAM, export, evaluation)
    with torch.no_grad():
        model.train()(x)
    assert calls == []
    model.train()(x)
    assert calls


def test_cpu_without_forcing_stays_eager(monkeypatch) -> None:
    monkeypatch.setattr(fused, "_compiled", lambda *a: pytest.fail("compiled on the CPU"))
    ic.build_model("resnet18", num_classes=3, attn="cbam").train()(torch.randn(2, 3, 32, 32)).sum().backward()


@pytest.mark.slow
@pytest.mark.parametrize("fuse_norm", [False, True])
def test_fused_path_with_inductor_codegen(fuse_norm: bool, monkeypatch) -> None:
    """The real code generator (C++ on the CPU; Triton on CUDA uses the same graphs), with and without the
    block's BN in the region (Inductor's own batch-norm lowering, running statistics included)."""
    pytest.importorskip("torch._inductor")
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler for Inductor's CPU backend")
    monkeypatch.setattr(fused, "_BACKEND", "inductor")
    monkeypatch.setattr(fused, "_use_fused", lambda attn, x: isinstance(attn, fused.FusableGate) and attn.training
                        and torch.is_grad_enabled() and not torch.compiler.is_compiling())
    monkeypatch.setattr(CBAM, "fuse_norm", fuse_norm)
    torch.manual_seed(0)
    block = ic.build_model("resnet18", num_classes=4, attn="cbam").train()
    ref_model = copy.deepcopy(block)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    ref = _eager_step(ref_model, x, y)
    got = _train_step(block, x, y)
    _assert_same(got, ref, 1e-3)


def test_whole_model_compile_traces_the_eager_gates(monkeypatch) -> None:
    """Inside an outer torch.compile the gates are traced as eager code (no nested compiled region)."""
    monkeypatch.setattr(fused, "_BACKEND", "aot_eager")
    calls = []
    real = fused._compiled
    monkeypatch.setattr(fused, "_compiled", lambda fn, backend: calls.append(fn.__name__) or real(fn, backend))
    torch.manual_seed(0)
    model = ic.build_model("resnet18", num_classes=4, attn="se").train()
    ref_model = copy.deepcopy(model)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    got = _train_step(torch.compile(model, backend="aot_eager"), x, y)
    assert calls == []
    torch.testing.assert_close(got[0], _eager_step(ref_model, x, y)[0], rtol=1e-4, atol=1e-4)


def test_fused_cbam_stencil_equals_the_eager_conv(monkeypatch) -> None:
    """The shift-and-add spatial conv (benchmarked against cuDNN inside the fused region) computes CBAM's gate:
    a fused stencil step gives the eager cuDNN step's outputs, gradients and BN statistics."""
    monkeypatch.setattr(fused, "_BACKEND", "aot_eager")
    torch.manual_seed(0)
    model = ic.build_model("resnet18", num_classes=4, attn="cbam").train()
    for m in model.modules():
        if isinstance(m, CBAM):
            torch.nn.init.normal_(m.bn.weight, 1.0, 0.2)  # gamma = 0 at init would hide the spatial branch
    # 64 px, batch 4: layer4's spatial BN then normalises 16 values (over 2 values, as at 32 px and batch 2, it
    # amplifies the summation-order rounding of either form to ~1e-3)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 2, 1, 3])
    ref = _eager_step(copy.deepcopy(model), x, y)
    monkeypatch.setattr(CBAM, "spatial", "stencil")
    got = _train_step(model, x, y)
    _assert_same(got, ref, 1e-4)


@pytest.mark.parametrize(("backbone", "attn"), [("resnet18", "se"), ("resnet18", "cbam"), ("resnet18", "coord"),
                                                ("resnet50", "cbam")])
def test_block_norm_inside_the_fused_region_equals_eager(backbone: str, attn: str, monkeypatch) -> None:
    """`fuse_norm`: the block's last BN (bn2 of a basic block, bn3 of a bottleneck) runs in the gate's region;
    outputs, gradients and running statistics stay those of the eager block."""
    monkeypatch.setattr(fused, "_BACKEND", "aot_eager")
    cls = type(ic.build_model(backbone, num_classes=4, attn=attn).layer1[0].attn)
    monkeypatch.setattr(cls, "fuse_norm", True)
    calls = []
    real = fused._compiled
    monkeypatch.setattr(fused, "_compiled", lambda fn, backend: calls.append(fn.__name__) or real(fn, backend))
    torch.manual_seed(0)
    model = ic.build_model(backbone, num_classes=4, attn=attn).train()
    for m in model.modules():
        if isinstance(m, CBAM):
            torch.nn.init.normal_(m.bn.weight, 1.0, 0.2)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 2, 1, 3])
    ref = _eager_step(copy.deepcopy(model), x, y)
    assert calls == []
    got = _train_step(model, x, y)
    assert set(calls) == {"_residual_norm"}
    _assert_same(got, ref, 1e-4)


def test_sync_batchnorm_stays_outside_the_region(monkeypatch) -> None:
    monkeypatch.setattr(fused, "_BACKEND", "aot_eager")
    monkeypatch.setattr(SqueezeExcitation, "fuse_norm", True)
    calls = []
    monkeypatch.setattr(fused, "_compiled", lambda fn, backend: calls.append(fn.__name__) or fn)
    block = ic.build_model("resnet18", num_classes=3, attn="se").layer1[0].train()
    block.bn2 = torch.nn.SyncBatchNorm(block.bn2.num_features)  # as convert_sync_batchnorm leaves it
    block.bn2.forward = lambda t: t  # (SyncBatchNorm needs a process group; its type is what matters here)
    block(torch.randn(2, 64, 8, 8))
    assert calls == ["_residual"]
