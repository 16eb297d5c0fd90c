"""`imgcls export`: ONNX (dynamo and legacy exporters, run in onnxruntime), torch.export `.pt2` and TorchScript parity
for every registered combination."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from imgcls_cli.config import build_config, load_components
from imgcls_cli.engine.checkpoint import FORMAT, VERSION, atomic_save
from imgcls_cli.errors import ImgclsError
from imgcls_cli.export import check_exportable, export_model, read_metadata
from imgcls_cli.export.onnx import FixedAdaptiveAvgPool
from imgcls_cli.methods import build_task_model
from imgcls_cli.methods.base import Task
from imgcls_cli.models.build import build_model
from imgcls_cli.registry import ATTENTION, BACKBONES, HEADS, METHODS

load_components()
FORMATS = ["onnx", "pt2", "onnx-legacy", "torchscript"]
DEPRECATED = {"onnx-legacy", "torchscript"}  # export_model warns (FutureWarning); tests use them on purpose
FAST = {"resnet20", "mobilenet_v3_small"}  # the rest: slow (VGG at 32 px holds ~0.5 GB of weights)
NAMES = ["a", "b", "c"]
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _deprecation_expected(fmt: str):
    """The deprecated formats must say so (FutureWarning naming the replacement); the others must not."""
    import contextlib
    import warnings

    if fmt in DEPRECATED:
        return pytest.warns(FutureWarning, match=rf"--format {fmt}: .* deprecated by torch; use --format (onnx|pt2)")
    ctx = contextlib.ExitStack()
    ctx.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("error", message="--format", category=FutureWarning)
    return ctx


def _slow_unless(fast: bool) -> list[pytest.MarkDecorator]:
    return [] if fast else [pytest.mark.slow]


def make_checkpoint(path: Path, img_size: int = 32, names: list[str] = NAMES, **overrides: object) -> Path:
    """An untrained but complete imgcls checkpoint (what `train` writes, minus optimizer state)."""
    cfg = build_config(None, {"model.backbone": "resnet20", "data.img_size": img_size, **overrides})
    model = build_task_model(cfg, len(names), [10] * len(names), for_inference=True)
    atomic_save({"format": FORMAT, "version": VERSION, "model": model.state_dict(), "config": cfg.to_dict(),
                "class_names": list(names), "class_counts": [10] * len(names),
                "normalization": {"mean": list(MEAN), "std": list(STD)}}, path)
    return path


def _export(model: nn.Module, fmt: str, size: int = 32) -> dict[int, float]:
    with _deprecation_expected(fmt):
        rep = export_model(model, fmt, Path(f"m.{fmt}"), img_size=size, class_names=NAMES, mean=MEAN, std=STD)
    assert set(rep.max_abs_err) == {1, 2, 7}
    assert json.loads(rep.metadata["class_names"]) == NAMES and rep.metadata["img_size"] == str(size)
    return rep.max_abs_err


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("backbone", [pytest.param(b, marks=_slow_unless(b in FAST)) for b in BACKBONES.names()])
def test_every_backbone_exports_with_parity(backbone: str, fmt: str) -> None:
    _export(build_model(backbone, len(NAMES)), fmt)


COMBOS = [(b, a, h) for b in ("resnet20", "resnet18", "mobilenet_v3_small") for a in ["none", *ATTENTION.names()]
          for h in HEADS.names()]


def _fast_combo(backbone: str, attn: str, head: str, fmt: str) -> bool:
    """Fast tier: every attention module and every head once each on ResNet-20; the cross product is slow.
    `pt2` is the capture the dynamo ONNX exporter runs first, so its fast tier is the heads only (a dynamo export
    costs 3-8 s on one core)."""
    if fmt == "pt2" and attn != "none":
        return False
    return backbone == "resnet20" and (head == "linear" or attn == "none")


def _marks(backbone: str, attn: str, head: str, fmt: str) -> list:
    marks = list(_slow_unless(_fast_combo(backbone, attn, head, fmt)))
    if backbone == "mobilenet_v3_small" and head == "bilinear" and fmt == "onnx":
        # measured 2026-12-06 (torch 2.14.1): the dynamo ONNX graph differs from eager by 5.8e-4..8.1e-4 at batch 1
        # (the check allows rtol 1e-3 / atol 1e-5); not yet analysed (the bilinear head's signed square root near 0
        # amplifies reordered sums); the export is refused in one line rather than written wrong
        marks.append(pytest.mark.xfail(reason="dynamo ONNX parity 6e-4..8e-4 for mobilenet_v3_small + bilinear",
                                       strict=False))
    return marks


@pytest.mark.parametrize("backbone,attn,head,fmt",
                         [pytest.param(*c, f, marks=_marks(*c, f)) for c in COMBOS for f in FORMATS])
def test_attention_and_head_combinations_export_or_are_refused(backbone: str, attn: str, head: str, fmt: str) -> None:
    model = build_model(backbone, len(NAMES), attn=attn, head=head)  # every combination builds
    try:
        _export(model, fmt)  # parity at batch 1, 2, 7 is asserted inside export_model
    except ImgclsError as e:
        assert "cannot be exported" in str(e) and "\n" not in str(e), str(e)


def test_uneven_adaptive_pool_replacement_matches_pytorch() -> None:
    g = torch.Generator().manual_seed(0)
    for hw, out in (((1, 1), (7, 7)), ((5, 3), (7, 7)), ((10, 9), (4, 3)), ((13, 7), (7, 2))):
        x = torch.randn(2, 4, *hw, generator=g)  # (B, C, H, W)
        torch.testing.assert_close(FixedAdaptiveAvgPool(hw, out)(x), F.adaptive_avg_pool2d(x, out))


def test_cli_onnx_export_runs_in_onnxruntime_with_metadata(tmp_path: Path) -> None:
    import onnxruntime as ort

    from imgcls_cli.cli.app import app
    from imgcls_cli.engine.checkpoint import load_checkpoint

    ckpt = make_checkpoint(tmp_path / "best.pt", **{"model.attn": "se"})
    r = CliRunner().invoke(app, ["export", str(tmp_path), "--format", "onnx", "--out", "model.onnx", "--opset", "19"])
    assert r.exit_code == 0, r.output
    import onnx

    proto = onnx.load("model.onnx")
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [19]  # the opset asked for
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # a symbolic (dynamic) batch axis
    assert "max abs error" in r.output and "batch 7" in r.output
    meta = read_metadata("model.onnx")
    assert json.loads(meta["class_names"]) == NAMES and json.loads(meta["mean"]) == list(MEAN)
    assert json.loads(meta["std"]) == list(STD) and meta["img_size"] == "32" and meta["attn"] == "se"
    sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # (5, 3, 32, 32)
    with torch.no_grad():
        ref = load_checkpoint(ckpt).model(x).numpy()
    np.testing.assert_allclose(sess.run(None, {"images": x.numpy()})[0], ref, rtol=1e-3, atol=1e-5)


def test_cli_torchscript_export_loads_without_imgcls_classes(tmp_path: Path) -> None:
    from imgcls_cli.cli.app import app

    make_checkpoint(tmp_path / "c.pt", **{"model.head": "cosine"})
    r = CliRunner().invoke(app, ["export", str(tmp_path / "c.pt"), "--format", "torchscript"])
    assert r.exit_code == 0, r.output
    ts = tmp_path / "c.ts"
    files = {"imgcls.json": ""}
    module = torch.jit.load(str(ts), _extra_files=files)
    meta = json.loads(files["imgcls.json"])
    assert json.loads(meta["class_names"]) == NAMES and meta["head"] == "cosine"
    with torch.no_grad():
        logits = module(torch.randn(3, 3, 32, 32))  # (3, 3)
    assert logits.shape == (3, 3) and float(logits.abs().max()) <= 1.0 + 1e-5  # cosine logits


class _Branchy(nn.Module):
    """Data-dependent Python control flow: a trace freezes one branch, so the export is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x.mean(dim=(2, 3)))  # (B, 2)
        return z if x.shape[0] == 2 else -z


@pytest.mark.parametrize("fmt", FORMATS)
def test_mismatch_after_export_is_an_error(fmt: str, tmp_path: Path) -> None:
    """An unverified file used to be left at the output path (and replaced a file already there)."""
    kept = tmp_path / f"kept.{fmt}"
    kept.write_bytes(b"an earlier export")
    # a trace freezes the branch (caught by the check); torch.export refuses the guard on the dynamic batch
    expected = r"cannot be exported" if fmt in ("onnx", "pt2") else r"differs from the eager model at batch 1"
    for out in (tmp_path / f"b.{fmt}", kept):
        with pytest.raises(ImgclsError, match=expected), _deprecation_expected(fmt):
            export_model(_Branchy(), fmt, out, img_size=8, class_names=["x", "y"], mean=MEAN, std=STD)
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]
    assert kept.read_bytes() == b"an earlier export"


def test_methods_with_their_own_eval_logits_are_refused(tmp_path: Path) -> None:
    from imgcls_cli.methods.standard import StandardTask

    class TwoPass(StandardTask):
        def eval_logits(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
            return model(images) + model(images.flip(3))

    check_exportable(StandardTask, "standard")  # forward == eval logits: accepted
    with pytest.raises(ImgclsError, match="--method two_pass: cannot be exported"):
        check_exportable(TwoPass, "two_pass")
    refused = [m for m in METHODS.names() if METHODS.get(m).eval_logits is not StandardTask.eval_logits]
    if "wsdan" in refused:  # the registered method with a crop-and-refine evaluation, through the CLI
        from imgcls_cli.cli.app import app

        ckpt = make_checkpoint(tmp_path / "w.pt", img_size=64, **{"model.backbone": "resnet18",
                                                                   "train.method": "wsdan", "model.wsdan_maps": 4})
        r = CliRunner().invoke(app, ["export", str(ckpt)])
        assert r.exit_code == 2 and "--method wsdan: cannot be exported" in r.output, r.output


def test_bad_options_exit_2(tmp_path: Path) -> None:
    from imgcls_cli.cli.app import app

    ckpt = make_checkpoint(tmp_path / "c.pt")
    runner = CliRunner()
    for args, needle in ((["export", str(ckpt), "--format", "tflite"], "valid: onnx, onnx-legacy, pt2, torchscript"),
                         (["export", str(ckpt), "--format", "torchscript", "--opset", "13"], "--opset"),
                         (["export", str(ckpt), "--format", "pt2", "--opset", "18"], "--opset"),
                         # torch's dynamo exporter would keep opset 18 with only a log line: refused instead
                         (["export", str(ckpt), "--format", "onnx", "--opset", "17"], "--opset 17: --format onnx"
                          " writes opset 18 or newer"),
                         (["export", "missing.pt"], "missing.pt")):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output, (args, r.output)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_exportable_method_exports(fmt: str, tmp_path: Path) -> None:
    """A forward with optional arguments (BBN's x2 and alpha) must export with `images` as its only input."""
    from imgcls_cli.export import export_checkpoint

    for method in [m for m in METHODS.names() if METHODS.get(m).eval_logits is Task.eval_logits]:
        extra = {"train.init_from": "stage1.pt"} if method in ("crt", "lws") else {}
        ckpt = make_checkpoint(tmp_path / f"{method}.pt", img_size=16, **{"train.method": method, **extra})
        with _deprecation_expected(fmt):
            rep = export_checkpoint(ckpt, fmt, tmp_path / f"{method}.{fmt}")
        assert set(rep.max_abs_err) == {1, 2, 7}, method


def test_cli_pt2_export_loads_with_torch_export_alone(tmp_path: Path) -> None:
    """`.pt2` is a torch.export ExportedProgram: `torch.export.load(...).module()` runs it at any batch size."""
    from imgcls_cli.cli.app import app
    from imgcls_cli.engine.checkpoint import load_checkpoint

    ckpt = make_checkpoint(tmp_path / "p.pt", **{"model.attn": "cbam"})
    r = CliRunner().invoke(app, ["export", str(ckpt), "--format", "pt2"])
    assert r.exit_code == 0 and "batch 7" in r.output, r.output
    files = {"imgcls.json": ""}
    program = torch.export.load(str(tmp_path / "p.pt2"), extra_files=files)
    assert isinstance(program, torch.export.ExportedProgram)
    meta = json.loads(files["imgcls.json"])
    assert json.loads(meta["class_names"]) == NAMES and meta["attn"] == "cbam"
    assert read_metadata(tmp_path / "p.pt2") == meta
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(4))  # (5, 3, 32, 32): not an export size
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), load_checkpoint(ckpt).model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "onnx-legacy"])
def test_missing_onnx_extra_is_one_line(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without onnxscript (a plain `pip install imgcls`) export used to fail with a ModuleNotFoundError text."""
    import sys

    from imgcls_cli.cli.app import app

    ckpt = make_checkpoint(tmp_path / "c.pt")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now raises ImportError
    r = CliRunner().invoke(app, ["export", str(ckpt), "--format", fmt])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    line = " ".join(r.output.split())
    assert f"--format {fmt}: needs onnxscript (not installed); pip install 'imgcls[onnx]'" in line, r.output
    assert not (tmp_path / "c.onnx").exists()
    with pytest.raises(ImgclsError, match=r"pip install 'imgcls\[onnx\]'"):
        export_model(build_model("resnet20", 3), fmt, tmp_path / "m.onnx", img_size=16, class_names=NAMES,
                     mean=MEAN, std=STD)
