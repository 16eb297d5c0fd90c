"""Model statistics: parameters, FLOPs/MACs, a per-stage table and measured latency.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` for one image at the training
resolution; it counts a multiply-add as 2 FLOPs for convolutions and matrix products (and ignores
BN, activations and pooling), so we report MACs = FLOPs / 2, the figure papers and torchvision
quote as "GFLOPS" (ResNet-50 at 224 px: 4.09 GMACs).  Latency is measured on this machine: batch
1, `warmup` untimed runs, then the median (and 90th percentile) of `runs` timed forward passes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ImgclsError
from ..registry import BACKBONES


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


def _stage_paths(model: nn.Module) -> list[str]:
    """The backbone's stages (registry metadata) and the head, as far as they exist in `model`."""
    meta = getattr(model, "imgcls", None) or {}
    stages = list(BACKBONES.meta(meta["backbone"]).get("stages", [])) if meta.get("backbone") in BACKBONES else []
    paths = [p for p in stages + [meta.get("head", "")] if p]
    if not paths:  # not built by imgcls: the top-level children
        return [n for n, _ in model.named_children()]
    out = []
    for p in paths:
        try:
            model.get_submodule(p)
            out.append(p)
        except AttributeError:
            continue
    return out


def stage_table(model: nn.Module, img_size: int, device: torch.device) -> tuple[list[dict[str, Any]], int]:
    """Per stage: parameters, MACs and output shape for one image; plus the total FLOPs."""
    paths = _stage_paths(model)
    shapes: dict[str, list[int]] = {}
    hooks = []
    for p in paths:
        def grab(_m: nn.Module, _a: Any, y: Any, p: str = p) -> None:
            if isinstance(y, torch.Tensor):
                shapes[p] = list(y.shape[1:])  # (C, H, W) or (C,)
        hooks.append(model.get_submodule(p).register_forward_hook(grab))
    x = torch.zeros(1, 3, img_size, img_size, device=device)  # (1, 3, S, S)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    counts = fc.get_flop_counts()
    root = type(model).__name__
    total_flops = int(fc.get_total_flops())
    total_params = sum(p.numel() for p in model.parameters())
    rows, flops_seen, params_seen = [], 0, 0
    for p in paths:
        f = int(sum(counts.get(f"{root}.{p}", {}).values()))
        n = sum(q.numel() for q in model.get_submodule(p).parameters())
        rows.append({"stage": p, "params": n, "macs": f // 2, "output": shapes.get(p)})
        flops_seen, params_seen = flops_seen + f, params_seen + n
    rows.insert(0, {"stage": "(stem and rest)", "params": total_params - params_seen,
                    "macs": (total_flops - flops_seen) // 2, "output": None})
    return rows, total_flops


def measure_latency(model: nn.Module, img_size: int, device: torch.device, runs: int = 20,
                    warmup: int = 3) -> dict[str, float]:
    x = torch.zeros(1, 3, img_size, img_size, device=device)  # (1, 3, S, S); latency does not depend on values
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            sync()
            t = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "runs": runs,
            "warmup": warmup, "batch": 1, "device": str(device), "threads": torch.get_num_threads()}


def model_stats(model: nn.Module, img_size: int, device: str | torch.device = "cpu", runs: int = 20,
                warmup: int = 3) -> dict[str, Any]:
    dev = torch.device(device)
    model = model.to(dev).eval()
    total, trainable = count_params(model)
    rows, flops = stage_table(model, img_size, dev)
    return {"kind": "model", "img_size": img_size, "params": total, "trainable_params": trainable,
            "flops": flops, "macs": flops // 2, "gmacs": flops / 2e9,
            "flops_note": "torch.utils.flop_counter.FlopCounterMode, batch 1; MACs = FLOPs / 2 (conv/matmul only)",
            "stages": rows, "latency": measure_latency(model, img_size, dev, runs, warmup) if runs > 0 else None}


def checkpoint_stats(path: str | Path, img_size: int | None = None, device: str = "cpu",
                     runs: int = 20) -> dict[str, Any]:
    """`imgcls stats CKPT`: model statistics at the checkpoint's training resolution."""
    from ..engine.checkpoint import load_checkpoint
    from ..engine.device import resolve_device

    dev = resolve_device(device)
    ckpt = load_checkpoint(path, dev)
    cfg = ckpt.config
    size = int(img_size or cfg.data.img_size or 224)
    try:
        out = model_stats(ckpt.model, size, dev, runs)
    except RuntimeError as e:  # too small for the network's downsampling, or too large for memory
        if img_size is None:
            raise
        first = str(e).strip().splitlines()[0][:160]
        raise ImgclsError(f"--img-size {img_size}: this model cannot run at {size}x{size} ({first})") from None
    out.update(checkpoint=str(path), backbone=cfg.model.backbone, attn=cfg.model.attn, head=cfg.model.head,
               method=cfg.train.method, num_classes=ckpt.num_classes)
    return out
