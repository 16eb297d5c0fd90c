"""`build_model`: backbone + optional attention + head, with torchvision-compatible weights.

Every built model carries `model.imgcls` (a plain dict): the backbone family, the dotted path of
the head (`head`), of the final classifier inside it (`classifier`), the default CAM layer and
the embedding width.  Tasks, CAM, export and stats read those paths instead of knowing families.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ImgclsError
from ..registry import ATTENTION, BACKBONES, HEADS

log_messages: list[str] = []  # the most recent load report, for the CLI to show


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = get_submodule(model, parent_path)
    if isinstance(parent, nn.Sequential) and name.isdigit():
        parent[int(name)] = module
    else:
        setattr(parent, name, module)


def meta(model: nn.Module) -> dict[str, Any]:
    m = getattr(model, "imgcls", None)
    if not isinstance(m, dict):
        raise ImgclsError("model: not built by imgcls (no head/feature metadata)")
    return m


def get_classifier(model: nn.Module) -> nn.Module:
    """The final layer mapping the embedding to logits (nn.Linear or CosineHead)."""
    return get_submodule(model, meta(model)["classifier"])


def forward_with_features(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, embedding): the embedding is the input of the final classifier."""
    store: dict[str, torch.Tensor] = {}

    def grab(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        store["f"] = args[0]

    handle = get_classifier(model).register_forward_pre_hook(grab)
    try:
        logits = model(images)
    finally:
        handle.remove()
    return logits, store["f"]


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    from ..engine.checkpoint import read_weights

    return read_weights(path)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load matching tensors; heads whose shape differs are replaced (kept at their init).

    Returns a report (lines).  Raises when the file does not fit the architecture at all.
    """
    own = model.state_dict()
    matched, skipped_shape = {}, []
    for k, v in state.items():
        if k in own:
            if own[k].shape == v.shape:
                matched[k] = v
            else:
                skipped_shape.append(k)
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in matched and k not in skipped_shape]
    head_prefix = meta(model)["head"] + "."
    bad_unexpected = [k for k in unexpected if not k.startswith(head_prefix)]
    bad_shape = [k for k in skipped_shape if not k.startswith(head_prefix)]
    if bad_shape or len(matched) < len(own) // 2:
        raise ImgclsError(
            f"--weights {source}: does not fit this architecture ({len(matched)} of {len(own)} tensors match;"
            f" e.g. {(bad_shape + bad_unexpected)[0]!r})"
        )
    model.load_state_dict(matched, strict=False)
    report = [f"loaded {len(matched)}/{len(own)} tensors from {source}"]
    if skipped_shape:
        report.append(f"head replaced (class count differs): {', '.join(skipped_shape)}")
    new = [k for k in missing if not k.endswith("num_batches_tracked")]
    if new:
        report.append(f"new (initialised, not in the file): {len(new)} tensors, e.g. {', '.join(new[:4])}")
    if unexpected:
        report.append(f"ignored (not in this model): {', '.join(unexpected[:4])}")
    return report


def _pretrained_state(tv_name: str | None, backbone: str) -> dict[str, torch.Tensor]:
    if tv_name is None:
        raise ImgclsError(f"--pretrained: no torchvision ImageNet weights exist for {backbone}; use --weights FILE")
    from torchvision.models import get_model_weights

    weights = get_model_weights(tv_name).DEFAULT
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # network errors differ by platform; all mean the same to the user
        raise ImgclsError(
            f"--pretrained: could not download {weights} ({type(e).__name__}); save the torchvision"
            f" state dict to a file elsewhere and pass --weights FILE"
        ) from None


def build_model(
    backbone: str,
    num_classes: int,
    attn: str | None = None,
    head: str = "linear",
    pretrained: bool = False,
    weights: str | Path | None = None,
    feature_dim: int | None = None,
    drop_rate: float = 0.0,
    zero_init_residual: bool = False,
    attn_options: dict[str, Any] | None = None,
    head_options: dict[str, Any] | None = None,
) -> nn.Module:
    """Build a classifier; forward(images (B,3,H,W) normalised) -> logits (B, num_classes).

    Heads registered with `wraps_model=True` (bilinear) need the conv feature map: their factory
    gets the finished backbone (weights loaded) and returns the whole model with its own metadata.
    """
    importlib.import_module("imgcls_cli.components_all")
    from ..api_checks import check_count

    check_count(num_classes, "num_classes")
    fn = BACKBONES.get(backbone)
    info = BACKBONES.meta(backbone)
    kw: dict[str, Any] = {}
    if zero_init_residual and info["family"] in ("resnet", "cifar_resnet"):
        kw["zero_init_residual"] = True
    builds_attn = bool(info.get("builds_attention")) and bool(attn) and attn != "none"
    if builds_attn:  # the backbone places attention itself at construction (timm's attn_layer)
        ATTENTION.get(attn)
        used = ATTENTION.meta(attn).get("options", {})  # the options this attention module reads
        kw.update(attn=attn, attn_options={k: v for k, v in (attn_options or {}).items() if k in used})
    model = fn(num_classes=num_classes, **kw)
    head_path = info["head"]
    old = get_submodule(model, head_path)
    in_features = old.in_features
    model.imgcls = {"backbone": backbone, "family": info["family"], "head": head_path, "classifier": head_path,
                    "cam_layer": info["cam_layer"], "feat_dim": feature_dim or in_features, "attn": attn or "none",
                    "num_classes": num_classes}
    if attn and attn != "none" and not builds_attn:
        ATTENTION.get(attn)
        from .attention.insert import insert_attention

        insert_attention(model, info["family"], attn, **(attn_options or {}))
    make_head = HEADS.get(head)
    wraps = bool(HEADS.meta(head).get("wraps_model"))
    if wraps and feature_dim:
        raise ImgclsError(f"--feature-dim: not supported with --head {head} (its embedding is the pooled feature map)")
    if not wraps and (head != "linear" or feature_dim or drop_rate):
        d = feature_dim or in_features
        cls = make_head(d, num_classes) if head != "linear" else nn.Linear(d, num_classes)
        if feature_dim or drop_rate:
            parts: OrderedDict[str, nn.Module] = OrderedDict()
            if drop_rate:
                parts["drop"] = nn.Dropout(drop_rate)
            if feature_dim:
                parts["proj"] = nn.Linear(in_features, feature_dim)
                parts["bn"] = nn.BatchNorm1d(feature_dim)
            parts["fc"] = cls
            set_submodule(model, head_path, nn.Sequential(parts))
            model.imgcls["classifier"] = head_path + ".fc"
        else:
            set_submodule(model, head_path, cls)
    sources = []
    if pretrained:
        sources.append((_pretrained_state(info.get("torchvision"), backbone), f"torchvision {backbone} ImageNet"))
    if weights is not None:
        state = _read_state_dict(weights)
        remap = info.get("remap_weights")  # the backbone's own file layout (timm names) -> this model's names
        sources.append((remap(state, model) if remap else state, str(weights)))
    log_messages.clear()
    for state, src in sources:
        log_messages.extend(load_weights(model, state, src))
    if wraps:  # weights went into the backbone above (torchvision names); now wrap it
        model = make_head(model, num_classes, drop_rate=drop_rate, **(head_options or {}))
    return model
