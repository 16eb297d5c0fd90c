"""Fused attention gates on CUDA: each gate (and, in ResNet blocks, the residual add + ReLU after it)
runs as Inductor-generated kernels instead of a chain of eager ops.

Why: SE, CBAM and Coordinate Attention are memory-bound elementwise work and reductions on full-size
feature maps.  Eager PyTorch writes every intermediate (pooled maps, gate products, masks for the
max-pool backward) to memory and reads it back; on an H200 that made SE cost 31 % and CBAM 63 % of
ResNet-50's training throughput (the same as timm's modules).  Compiling the gate region alone
(regional compilation) lets Inductor fuse the scale, the residual add and the ReLU into one pass
forward and a few passes backward, while the rest of the model stays eager.  A gate class with
`fuse_norm` also takes the block's last BatchNorm into its region (the conv output goes in; the
normalised map is computed on the fly instead of being written and read back).

When it applies: CUDA tensors, the module in training mode, autograd on, Triton available, and not
already inside an outer `torch.compile` (then the outer graph fuses it anyway).  Everywhere else
(CPU, eval, Grad-CAM, export) the eager forward runs, which is the same function.  Graphs are
compiled per input shape (`dynamic=False`: four stages of a ResNet, a few more for MobileNets) and
shared between blocks and between module instances of one class (Dynamo guards on shapes, not on
the module object).  `set_enabled(False)` (CLI: `--set train.fuse_attention=false`) turns it off.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable

import torch
from torch import nn

_ENABLED = True
_BACKEND = "inductor"  # tests use "aot_eager" on the CPU (same graphs, no code generation)
_MIN_RECOMPILE_LIMIT = 64  # shapes x gate kinds in one process (benchmarks run several models)


def set_enabled(flag: bool) -> None:
    """Turn fused gates on or off for this process (the trainer sets it from `train.fuse_attention`)."""
    global _ENABLED
    _ENABLED = bool(flag)


def _residual(attn: nn.Module, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    return torch.relu(_gate(attn, x) + identity)  # ResNet block tail: relu(gate(x) * x + identity)


def _gate(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return attn.gate_forward(x) if isinstance(attn, FusableGate) else attn(x)


@functools.cache
def _triton_ok() -> bool:
    try:
        from torch.utils._triton import has_triton

        return bool(has_triton())
    except Exception:  # noqa: BLE001  (an unusual build: just stay eager)
        return False


@functools.cache
def _compiled(fn: Callable, backend: str) -> Callable:
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"  # renamed in torch 2.6
    setattr(cfg, name, max(getattr(cfg, name), _MIN_RECOMPILE_LIMIT))
    return torch.compile(fn, backend=backend, dynamic=False)


def _use_fused(attn: nn.Module, x: torch.Tensor) -> bool:
    if not (_ENABLED and isinstance(attn, FusableGate) and attn.training and torch.is_grad_enabled()):
        return False
    if torch.compiler.is_compiling():
        return False
    return (x.is_cuda and _triton_ok()) or _BACKEND != "inductor"


def _residual_norm(attn: nn.Module, bn: nn.Module, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    return torch.relu(_gate(attn, bn(x)) + identity)  # the block's last BN inside the region too


def residual(attn: nn.Module, x: torch.Tensor, identity: torch.Tensor, bn: nn.Module | None = None) -> torch.Tensor:
    """relu(attn(bn(x)) + identity), fused where possible.  x: (B, C, H, W), the last conv's output when `bn` is
    given (else the branch after its BN); identity: (B, C, H, W).  With the gate class's `fuse_norm` the BN runs
    inside the region (a plain nn.BatchNorm2d only: SyncBatchNorm communicates and stays eager)."""
    if _use_fused(attn, x):
        if bn is not None and attn.fuse_norm and type(bn) is nn.BatchNorm2d:
            return _compiled(_residual_norm, _BACKEND)(attn, bn, x, identity)
        return _compiled(_residual, _BACKEND)(attn, x if bn is None else bn(x), identity)
    return torch.relu(attn(x if bn is None else bn(x)) + identity)


class FusableGate(nn.Module, abc.ABC):
    """Base of SE, CBAM and CA: `gate_forward` is the eager maths; `forward` runs it as a compiled region
    where `_use_fused` allows (so the gate is fused wherever the module sits: ResNet, VGG, MobileNet)."""

    #: ResNet blocks: also run the block's last BatchNorm inside the fused region, so that its normalisation
    #: is computed on the fly by the gate's kernels instead of being written out and read back (one class
    #: attribute per gate kind; benchmarks/gpu.py measures both and the faster one becomes the default)
    fuse_norm: bool = False

    @abc.abstractmethod
    def gate_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gate's eager maths: (B, C, H, W) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_fused(self, x):
            return _compiled(_gate, _BACKEND)(self, x)
        return self.gate_forward(x)
