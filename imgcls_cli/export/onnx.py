"""ONNX export: `onnx` with torch's dynamo-based exporter, `onnx-legacy` with the TorchScript-based one.

`onnx` (`torch.onnx.export(..., dynamo=True)`) captures the model with `torch.export` (batch a
`torch.export.Dim`) and translates it with onnxscript.  It writes opset 18 or newer: torch 2.14
implements nothing older and its down-conversion fails for ResNets (no adapter for `Pad`), after
which it keeps opset 18 with only a log line, so lower `--opset` values are refused instead.  On
this project's test models it takes 3-8 s per export on one CPU core, about 5x the TorchScript-based
exporter.  `onnx-legacy` (`dynamo=False`) is the TorchScript-based exporter torch has deprecated
(torch's DeprecationWarning is shown); it remains for models the dynamo path cannot capture and for
opsets below 18.  The batch axis is dynamic; the spatial size is the training resolution.

ONNX has no general AdaptiveAvgPool, and the exporter refuses one whose output does not divide
its input (VGG's 7x7 pool at 32-px input), so such pools are replaced, for the export only, by the
exact same linear map written as two matrix products (`FixedAdaptiveAvgPool`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.build import set_submodule
from . import FORMATS, Exporter

DEFAULT_OPSET = 17
# the TorchScript-based exporter writes opsets 7..20 (torch.onnx._constants); onnxruntime runs 7 and up
MIN_OPSET, MAX_OPSET = 7, 20


def pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in): row i averages input [floor(i*n_in/n_out), ceil((i+1)*n_in/n_out)), as PyTorch."""
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        a, b = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, a:b] = 1.0 / (b - a)
    return m


class FixedAdaptiveAvgPool(nn.Module):
    """AdaptiveAvgPool2d for one known input size: y = P_h x P_w^T."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]):
        super().__init__()
        self.register_buffer("ph", pool_matrix(in_hw[0], out_hw[0]))  # (oh, H)
        self.register_buffer("pwt", pool_matrix(in_hw[1], out_hw[1]).t().contiguous())  # (W, ow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.ph, x), self.pwt)  # (B, C, H, W) -> (B, C, oh, W) -> (B, C, oh, ow)


def replace_uneven_pools(model: nn.Module, example: torch.Tensor) -> int:
    """Swap AdaptiveAvgPool2d modules whose output does not divide their input; returns how many."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            def grab(_m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                sizes[name] = tuple(args[0].shape[-2:])
            hooks.append(mod.register_forward_pre_hook(grab))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    swapped = 0
    for name, hw in sizes.items():
        o = model.get_submodule(name).output_size
        o = (o, o) if isinstance(o, int) else tuple(hw[i] if o[i] is None else o[i] for i in range(2))
        if hw[0] % o[0] or hw[1] % o[1]:
            set_submodule(model, name, FixedAdaptiveAvgPool(hw, o))
            swapped += 1
    return swapped


class ImagesOnly(nn.Module):
    """`forward(images)` only: the TorchScript-based exporter turns a forward's optional arguments (BBN's
    `x2=None, alpha=0.5`) into extra graph inputs that a caller feeding `images` cannot supply."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)  # (B, 3, S, S) -> (B, C)


class OnnxExporter(Exporter):
    """Base of both ONNX formats: the subclass writes the graph (`_write`), this adds the metadata."""

    suffix = ".onnx"
    extra = "onnx"
    needs = ("onnx", "onnxruntime", "onnxscript")
    opsets = (DEFAULT_OPSET, MIN_OPSET, MAX_OPSET)

    @abstractmethod
    def _write(self, wrapped: nn.Module, example: torch.Tensor, out: Path, opset: int) -> None:
        """Write `wrapped` (images -> logits) as an ONNX graph at `opset`: the dynamo or the legacy exporter."""

    def export(self, model: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, str],
               opset: int | None) -> None:
        import onnx

        replace_uneven_pools(model, example)
        # eval(): the exporter restores the wrapper's mode afterwards, recursively, and verify() runs `model`
        self._write(ImagesOnly(model).eval(), example, out, opset or (self.opsets or (DEFAULT_OPSET,))[0])
        proto = onnx.load(str(out))
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        proto.doc_string = "imgcls classifier: " + meta.get("input", "")
        onnx.save(proto, str(out))

    def runner(self, out: Path) -> Callable[[np.ndarray], np.ndarray]:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])

        def run(x: np.ndarray) -> np.ndarray:
            return sess.run(["logits"], {"images": x.astype(np.float32)})[0]

        return run

    def read_metadata(self, out: Path) -> dict[str, str]:
        import onnx

        proto = onnx.load(str(out), load_external_data=False)
        return {p.key: p.value for p in proto.metadata_props}


class DynamoOnnxExporter(OnnxExporter):
    opsets = (18, 18, 23)  # torch.onnx._constants.ONNX_MAX_OPSET (torch 2.14)

    def _write(self, wrapped: nn.Module, example: torch.Tensor, out: Path, opset: int) -> None:
        batch = torch.export.Dim("batch", min=1, max=65536)
        torch.onnx.export(wrapped, (example,), str(out), dynamo=True, input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), opset_version=opset, optimize=True, verbose=False,
                          external_data=False)  # one self-contained file (the weights inline)
        import onnx

        # when strict capture fails torch falls back to a capture that may freeze the batch to the example's 2
        dim = onnx.load(str(out), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
        if not dim.dim_param:
            raise ValueError(f"the batch axis was specialised to {dim.dim_value} (shape-dependent code in forward?)")


class LegacyOnnxExporter(OnnxExporter):
    deprecated = "the TorchScript-based ONNX exporter is deprecated by torch; use --format onnx (dynamo-based)"

    def _write(self, wrapped: nn.Module, example: torch.Tensor, out: Path, opset: int) -> None:
        torch.onnx.export(wrapped, (example,), str(out), dynamo=False, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=opset, do_constant_folding=True)


FORMATS.add("onnx", DynamoOnnxExporter())
FORMATS.add("onnx-legacy", LegacyOnnxExporter())
