"""Device selection, autocast and thread settings."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

from ..errors import ImgclsError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ImgclsError(f"--device {name!r}: not a device (valid: auto, cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ImgclsError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    if dev.type == "cuda" and dev.index is None:  # plain "cuda": this process's GPU (torchrun sets LOCAL_RANK)
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ImgclsError(f"--device {name}: MPS is not available on this machine")
    return dev


def autocast(device: torch.device, tc: Any):
    """Autocast as the train config `tc` asks: `amp` (bf16/fp16) on CUDA, `cpu_amp` (bf16) on the CPU."""
    if device.type == "cuda" and tc.amp:
        return torch.autocast("cuda", dtype=torch.bfloat16 if tc.amp_dtype == "bf16" else torch.float16)
    if device.type == "cpu" and tc.cpu_amp:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def place_model(model: torch.nn.Module, tc, device: torch.device) -> None:
    """Move the model to its device and memory format; on the CPU, trim all-padding conv taps (exact)."""
    model.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    if tc.trim_convs and device.type == "cpu":  # measured on the CPU only (docs/benchmarks.md)
        from ..models.trimmed_conv import trim_convs

        trim_convs(model)


def setup_backends(device: torch.device, deterministic: bool, fuse_attention: bool = True) -> None:
    from ..models.attention import fused

    fused.set_enabled(fuse_attention and not deterministic)  # compiled gate regions (CUDA only)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
