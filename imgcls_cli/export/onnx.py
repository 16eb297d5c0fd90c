"""ONNX export with the TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`).

The dynamo exporter was tried with torch 2.14: about 25x slower per model and its opset
conversion failed for ResNets, so the TorchScript-based one is used.  The batch axis is dynamic;
the spatial size is the training resolution.  ONNX has no general AdaptiveAvgPool, and the
exporter refuses one whose output does not divide its input (VGG's 7x7 pool at 32-px input), so
such pools are replaced, for the export only, by the exact same linear map written as two
matrix products (`FixedAdaptiveAvgPool`).
"""

from __future__ import annotations

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
    suffix = ".onnx"
    opsets = range(MIN_OPSET, MAX_OPSET + 1)

    def export(self, model: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, str],
               opset: int | None) -> None:
        import onnx

        replace_uneven_pools(model, example)
        # eval(): the exporter restores the wrapper's mode afterwards, recursively, and verify() runs `model`
        torch.onnx.export(ImagesOnly(model).eval(), (example,), str(out), dynamo=False, input_names=["images"],
                          output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=DEFAULT_OPSET if opset is None else opset, do_constant_folding=True)
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


FORMATS.add("onnx", OnnxExporter())
