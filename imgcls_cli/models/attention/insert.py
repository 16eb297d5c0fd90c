"""Insert an attention module into a built backbone without renaming any existing parameter.

Placement (per family; `placement="block"` modules: SE, CBAM, CA):
- resnet / cifar_resnet (torchvision BasicBlock/Bottleneck): on the residual branch after the
  last BN, before the addition; the block's class becomes `AttnBasicBlock`/`AttnBottleneck`.
- vgg: after each conv stage (the ReLU before each MaxPool), so `features[:-1]` keeps it.
- mobilenet_v2 / mobilenet_v3: in each inverted residual right after the depthwise conv+BN+act.
  MobileNetV3's own SE blocks are replaced by `nn.Identity` when an attention is chosen, so every
  block has exactly one attention of the chosen kind (a clean ablation); with `--attn none` V3
  keeps its SE.  Loading V3 weights then reports the SE tensors as ignored.

Non-local (`placement="stage"`) goes after whole units (ResNet blocks, VGG conv+ReLU, inverted
residuals).  Units are grouped by resolution; the paper's res4 is the second-to-last group and
res3 the one before (ResNet: layer3/layer2; CIFAR ResNet: layer2/layer1; VGG: conv stage 4/3;
MobileNets: the stride-16/stride-8 blocks).  1 block: after the second-to-last unit of res4
("right before the last residual block").  5 blocks: 3 in res4 and 2 in res3, every other unit
counting back from the second-to-last, then the remaining units.  Every inserted module is a
child named `attn`, so state dict keys are e.g. `layer3.4.attn.theta.weight`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

from ...errors import ImgclsError
from ...registry import ATTENTION
from . import fused

MakeAttn = Callable[[int], nn.Module]
Unit = tuple[nn.Module, int]  # (module after which a non-local block may go, its output channels)


class AttnBasicBlock(BasicBlock):
    """torchvision BasicBlock with `self.attn` on the residual branch before the addition."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        identity = x if self.downsample is None else self.downsample(x)
        return fused.residual(self.attn, out, identity, self.bn2)  # relu(attn(bn2(out)) + identity), fused on CUDA


class AttnBottleneck(Bottleneck):
    """torchvision Bottleneck with `self.attn` on the residual branch before the addition."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.conv3(out)
        identity = x if self.downsample is None else self.downsample(x)
        return fused.residual(self.attn, out, identity, self.bn3)  # relu(attn(bn3(out)) + identity), fused on CUDA


class _ThenAttn(nn.Module):
    """Mixin: run the original module, then `self.attn` (used by `_then`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(super().forward(x))


_THEN_CLASSES: dict[type, type] = {}


def _then(module: nn.Module, attn: nn.Module) -> None:
    """Make `module` apply `attn` to its output, keeping its own parameter names."""
    cls = type(module)
    if cls not in _THEN_CLASSES:
        sub = type(f"{cls.__name__}ThenAttn", (_ThenAttn, cls), {"__module__": __name__})
        globals()[sub.__name__] = sub  # importable by name, so the model still pickles
        _THEN_CLASSES[cls] = sub
    module.__class__ = _THEN_CLASSES[cls]
    module.attn = attn


# ---- per-block insertion ------------------------------------------------------------------------

_RESNET_BLOCKS: dict[type, tuple[type, str]] = {
    BasicBlock: (AttnBasicBlock, "bn2"), Bottleneck: (AttnBottleneck, "bn3"),
}


def _resnet_blocks(model: nn.Module, make: MakeAttn) -> None:
    for m in list(model.modules()):
        if type(m) in _RESNET_BLOCKS:
            cls, last_bn = _RESNET_BLOCKS[type(m)]
            m.__class__ = cls
            m.attn = make(getattr(m, last_bn).num_features)


def _vgg_blocks(model: nn.Module, make: MakeAttn) -> None:
    for relu, channels in _vgg_stage_ends(model):
        _then(relu, make(channels))


def _mobilenet_blocks(model: nn.Module, make: MakeAttn) -> None:
    for block in _inverted_residuals(model):
        body = _body(block)
        for i, m in enumerate(body):
            if isinstance(m, SqueezeExcitation):
                body[i] = nn.Identity()  # MobileNetV3's own SE gives way to the chosen attention
        dw = next(m for m in body if isinstance(m, Conv2dNormActivation) and m[0].groups > 1)
        dw.add_module("attn", make(dw[0].out_channels))  # Sequential: runs after conv, BN, activation


# ---- units for non-local blocks ------------------------------------------------------------------

def _resnet_units(model: nn.Module) -> list[list[Unit]]:
    stages = [s for s in model.children() if isinstance(s, nn.Sequential) and type(s[0]) in _RESNET_BLOCKS]
    return [[(b, getattr(b, _RESNET_BLOCKS[type(b)][1]).num_features) for b in s] for s in stages]


def _vgg_stage_ends(model: nn.Module) -> list[Unit]:
    return [g[-1] for g in _vgg_units(model)]


def _vgg_units(model: nn.Module) -> list[list[Unit]]:
    groups: list[list[Unit]] = [[]]
    channels = 0
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            channels = m.out_channels
        elif isinstance(m, nn.ReLU):
            groups[-1].append((m, channels))
        elif isinstance(m, nn.MaxPool2d):
            groups.append([])
    return [g for g in groups if g]


def _inverted_residuals(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.features if hasattr(m, "use_res_connect")]


def _body(block: nn.Module) -> nn.Sequential:
    return block.conv if hasattr(block, "conv") else block.block  # V2: .conv, V3: .block


def _mobilenet_units(model: nn.Module) -> list[list[Unit]]:
    groups: dict[int, list[Unit]] = {}
    stride = 1
    for m in model.features:
        for conv in m.modules():
            if isinstance(conv, nn.Conv2d):
                stride *= conv.stride[0]
        if hasattr(m, "use_res_connect"):
            groups.setdefault(stride, []).append((m, m.out_channels))
    return [groups[s] for s in sorted(groups)]


def _after_units(units: list[Unit], k: int, where: str, backbone: str) -> list[Unit]:
    """k units of one group, each followed by a non-local block.  One: after the second-to-last unit (Wang et al.,
    arXiv:1711.07971, Table 2a: "right before the last residual block of res4").  More: after every other unit,
    the odd ones first (the official 5-block ResNet-50 code's `idx % 2 == 1`: res3 blocks 1, 3; res4 blocks 1, 3,
    5), then the even ones where a group is short."""
    n = len(units)
    order = [max(n - 2, 0)] if k == 1 else list(range(1, n, 2)) + list(range(0, n, 2))
    if k > n:
        raise ImgclsError(f"--nonlocal-blocks: {backbone} has {n} blocks in {where}, {k} non-local blocks do not"
                          f" fit; use --nonlocal-blocks 1")
    return [units[i] for i in sorted(order[:k])]


# family -> (insert one module per block, list non-local units grouped by resolution)
FAMILIES: dict[str, tuple[Callable[[nn.Module, MakeAttn], None], Callable[[nn.Module], list[list[Unit]]]]] = {
    "resnet": (_resnet_blocks, _resnet_units),
    "cifar_resnet": (_resnet_blocks, _resnet_units),
    "vgg": (_vgg_blocks, _vgg_units),
    "mobilenet_v2": (_mobilenet_blocks, _mobilenet_units),
    "mobilenet_v3": (_mobilenet_blocks, _mobilenet_units),
}
# non-local blocks per group, counted from the last: res4 (second-to-last group), res3 (the one before)
NONLOCAL_LAYOUT: dict[int, tuple[int, ...]] = {1: (1,), 5: (3, 2)}


def insert_attention(model: nn.Module, family: str, attn: str, *, reduction: int = 16, nonlocal_blocks: int = 1,
                     cbam_kernel: int = 7) -> None:
    """Add attention `attn` to `model` (in place) where its paper puts it for this family."""
    if family not in FAMILIES:
        raise ImgclsError(f"--attn {attn}: backbone family {family!r} has no attention placement;"
                          f" supported families: {', '.join(FAMILIES)}")
    if nonlocal_blocks not in NONLOCAL_LAYOUT:
        raise ImgclsError(f"--nonlocal-blocks: {nonlocal_blocks} is not valid; use one of 1, 5")
    cls = ATTENTION.get(attn)
    info = ATTENTION.meta(attn)
    given = {"reduction": reduction, "cbam_kernel": cbam_kernel}
    # registry meta `options`: config field -> constructor keyword (None: used here, by the placement)
    kwargs = {ctor: given[opt] for opt, ctor in info.get("options", {}).items() if ctor}

    def make(channels: int) -> nn.Module:
        return cls(channels, **kwargs)

    per_block, units_of = FAMILIES[family]
    if info.get("placement", "block") == "block":
        per_block(model, make)
        return
    groups = units_of(model)
    backbone = getattr(model, "imgcls", {}).get("backbone", family)
    layout = NONLOCAL_LAYOUT[nonlocal_blocks]
    if len(groups) < len(layout) + 1:
        raise ImgclsError(f"--nonlocal-blocks {nonlocal_blocks}: {backbone} has too few stages; use 1")
    for back, k in enumerate(layout, start=2):
        where = f"stage {len(groups) - back + 1} of {len(groups)}"
        for unit, channels in _after_units(groups[-back], k, where, backbone):
            _then(unit, make(channels))
