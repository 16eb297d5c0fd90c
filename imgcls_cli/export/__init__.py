"""Export a trained model to ONNX, a `torch.export` ExportedProgram or TorchScript, verified against the eager model.

Formats (registry `FORMATS`): `onnx` (torch's dynamo-based exporter, `torch.onnx.export(dynamo=True)`),
`pt2` (`torch.export.export` -> `torch.export.save`, loaded back with `torch.export.load`),
`onnx-legacy` (the TorchScript-based ONNX exporter) and `torchscript` (`torch.jit.trace`); the last two
use paths torch has deprecated and are kept for models the dynamo-based paths cannot capture.  Their
deprecation warnings are shown, not silenced.

The exported graph takes what `model.forward` takes: a normalised float32 tensor (B, 3, S, S)
with a dynamic batch axis; S is the training resolution.  Class names, normalisation (mean/std)
and S are stored in the file (ONNX `metadata_props`, `.pt2` / TorchScript extra file
`imgcls.json`), read back with `read_metadata(path)`.  After export the file is run at batch sizes 1, 2 and 7 and
compared with the eager model (rtol 1e-3, atol 1e-5); a mismatch is an error (exit 2) and leaves the
output path as it was (the file is written beside it and renamed only once verified).

What is exported is `model.forward`, which is the evaluation path of every method that does not
override `Task.eval_logits`; methods that do (e.g. WS-DAN's crop-and-refine evaluation) are
refused with the reason, as are models the exporter cannot trace.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ImgclsError
from ..registry import Registry

BATCH_SIZES = (1, 2, 7)
RTOL, ATOL = 1e-3, 1e-5
META_VERSION = "1"


class Exporter(ABC):
    """One export format: write the file, and load it back as a numpy-in, numpy-out runner."""

    suffix = ""
    extra: str | None = None  # the pip extra holding `needs` (checked before exporting)
    needs: tuple[str, ...] = ()  # modules the format imports
    opsets: tuple[int, int, int] | None = None  # (default, lowest, highest) opset for formats that take --opset
    deprecated: str | None = None  # why the format is deprecated and what to use instead (shown to the user)

    @abstractmethod
    def export(self, model: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, str],
               opset: int | None) -> None:
        """Write `model` to `out` with `meta` stored in the file."""

    @abstractmethod
    def runner(self, out: Path) -> Callable[[np.ndarray], np.ndarray]:
        """Load `out` back as a numpy-in, numpy-out function."""

    @abstractmethod
    def read_metadata(self, out: Path) -> dict[str, str]:
        """The metadata stored in `out`."""


FORMATS: Registry[Exporter] = Registry("export format", option="--format")


@dataclass
class ExportReport:
    out: Path
    format: str
    max_abs_err: dict[int, float] = field(default_factory=dict)  # batch size -> max |exported - eager|
    metadata: dict[str, str] = field(default_factory=dict)


def module_runner(module: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """A numpy-in, numpy-out runner around a loaded torch module (the TorchScript and .pt2 formats)."""

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


def _load_formats() -> None:
    from . import onnx, pt2, torchscript  # noqa: F401  (registration side effects)


def get_exporter(fmt: str, opset: int | None = None) -> Exporter:
    """The exporter for `fmt`, after checking its extra is installed and `opset` applies to it."""
    from ..extras import require

    _load_formats()
    exporter = FORMATS.get(fmt)
    if opset is not None:
        if exporter.opsets is None:
            takes = [n for n in FORMATS if FORMATS.get(n).opsets is not None]
            raise ImgclsError(f"--opset: only applies to --format {'|'.join(takes)} (got --format {fmt})")
        _, lo, hi = exporter.opsets
        if opset < lo:
            raise ImgclsError(f"--opset {opset}: --format {fmt} writes opset {lo} or newer (torch would silently keep"
                              f" {lo}); valid: {lo}..{hi}")
        if opset > hi:
            raise ImgclsError(f"--opset {opset}: newer than --format {fmt} can write; valid: {lo}..{hi}")
    if exporter.needs:
        require(exporter.extra or fmt, exporter.needs, f"--format {fmt}")
    return exporter


def check_exportable(task_cls: type, method: str) -> None:
    """Refuse methods whose evaluation logits are not `model(images)`."""
    from ..methods.base import Task

    if getattr(task_cls, "eval_logits", None) is not Task.eval_logits:
        raise ImgclsError(f"--method {method}: cannot be exported, its evaluation logits are not the model's forward"
                          f" (it overrides Task.eval_logits, e.g. multi-pass or crop-and-refine inference)")


def build_metadata(class_names: list[str], mean: tuple[float, ...], std: tuple[float, ...], img_size: int,
                   extra: dict[str, Any] | None = None) -> dict[str, str]:
    from .. import __version__

    meta = {"imgcls.version": __version__, "imgcls.meta_version": META_VERSION,
            "class_names": json.dumps(list(class_names)), "mean": json.dumps([float(v) for v in mean]),
            "std": json.dumps([float(v) for v in std]), "img_size": str(int(img_size)),
            "input": f"images: float32 (B, 3, {img_size}, {img_size}) RGB, (pixel/255 - mean) / std",
            "output": f"logits: float32 (B, {len(class_names)})"}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return meta


def verify(runner: Callable[[np.ndarray], np.ndarray], reference: Callable[[torch.Tensor], torch.Tensor],
           img_size: int, fmt: str, seed: int = 0) -> dict[int, float]:
    """Max abs error per batch size; raises ImgclsError beyond rtol/atol."""
    g = torch.Generator().manual_seed(seed)
    errs: dict[int, float] = {}
    for b in BATCH_SIZES:
        x = torch.randn(b, 3, img_size, img_size, generator=g)  # (b, 3, S, S) normalised-like input
        with torch.no_grad():
            ref = reference(x).float().numpy()  # (b, C)
        try:
            got = np.asarray(runner(x.numpy()))
        except Exception as e:  # a runtime refusing the input (e.g. a batch axis frozen to the example's size)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ImgclsError(f"--format {fmt}: exported model fails at batch {b}"
                              f" ({type(e).__name__}: {first})") from None
        if got.shape != ref.shape:
            raise ImgclsError(f"--format {fmt}: exported model gives shape {got.shape} at batch {b}, eager {ref.shape}")
        errs[b] = float(np.abs(got - ref).max())
        if not np.allclose(got, ref, rtol=RTOL, atol=ATOL):
            raise ImgclsError(f"--format {fmt}: exported model differs from the eager model at batch {b} (max abs"
                              f" error {errs[b]:.3g}, allowed rtol {RTOL} / atol {ATOL})")
    return errs


def export_model(model: nn.Module, fmt: str, out: str | Path, *, img_size: int, class_names: list[str],
                 mean: tuple[float, ...], std: tuple[float, ...], opset: int | None = None,
                 extra_meta: dict[str, Any] | None = None, describe: str = "this model") -> ExportReport:
    """Export `model.forward` (eval mode, CPU, float32) and verify it at batch sizes 1, 2, 7."""
    exporter = get_exporter(fmt, opset)
    if exporter.deprecated:
        warnings.warn(f"--format {fmt}: {exporter.deprecated}", FutureWarning, stacklevel=2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).cpu().float().eval()
    example = torch.randn(2, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))  # (2, 3, S, S)
    meta = build_metadata(class_names, mean, std, img_size, extra_meta)
    # written and verified beside `out`, then renamed: a failed export or verification leaves `out` as it was
    tmp = out.with_name(f".{out.stem}.tmp.{os.getpid()}{out.suffix}")
    try:
        try:
            with torch.no_grad():  # warnings are not silenced: torch's deprecation notices reach the user
                exporter.export(model, example, tmp, meta, opset)
        except ImgclsError:
            raise
        except Exception as e:  # exporter failures differ by op and backend; each means "cannot export this"
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ImgclsError(f"--format {fmt}: {describe} cannot be exported ({type(e).__name__}: {first})") from None
        errs = verify(exporter.runner(tmp), model, img_size, fmt)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".data").unlink(missing_ok=True)  # an exporter's external-data sidecar, if any
    return ExportReport(out=out, format=fmt, max_abs_err=errs, metadata=exporter.read_metadata(out))


def export_checkpoint(path: str | Path, fmt: str = "onnx", out: str | Path | None = None,
                      opset: int | None = None) -> ExportReport:
    """Load an imgcls checkpoint and export its model (see `export_model`)."""
    from ..engine.checkpoint import load_checkpoint
    from ..methods import task_class

    exporter = get_exporter(fmt, opset)
    ckpt = load_checkpoint(path, "cpu")
    cfg = ckpt.config
    check_exportable(task_class(cfg), cfg.train.method)
    img_size = int(cfg.data.img_size or 224)
    m = cfg.model
    desc = f"{m.backbone} + attn {m.attn} + head {m.head} (method {cfg.train.method})"
    out = Path(out) if out is not None else Path(path).with_suffix(exporter.suffix)
    if out.resolve() == Path(path).resolve():
        raise ImgclsError(f"--out {out}: is the checkpoint being exported, which the export would replace; choose"
                          f" another file (default: {Path(path).with_suffix(exporter.suffix)})")
    extra = {"backbone": m.backbone, "attn": m.attn, "head": m.head, "method": cfg.train.method,
             "checkpoint": str(path)}
    return export_model(ckpt.model, fmt, out, img_size=img_size, class_names=ckpt.class_names, mean=ckpt.mean,
                        std=ckpt.std, opset=opset, extra_meta=extra, describe=desc)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata stored in an exported file (format chosen by its suffix)."""
    _load_formats()
    p = Path(path)
    for name in FORMATS:
        if FORMATS.get(name).suffix == p.suffix:
            return get_exporter(name).read_metadata(p)
    suffixes = dict.fromkeys(FORMATS.get(n).suffix for n in FORMATS)
    raise ImgclsError(f"{p}: unknown export suffix; valid: {', '.join(suffixes)}")


__all__ = ["FORMATS", "ExportReport", "Exporter", "check_exportable", "export_checkpoint", "export_model",
           "get_exporter", "read_metadata"]
