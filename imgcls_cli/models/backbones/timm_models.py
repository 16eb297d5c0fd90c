"""timm backbones (optional extra `imgcls[timm]`): `--backbone timm/<name>`, e.g. timm/resnet50, timm/convnext_tiny.

Library: R. Wightman, "PyTorch Image Models" (timm), https://github.com/huggingface/pytorch-image-models.

The model is timm's own, built with `timm.create_model(name, pretrained=False, num_classes=0)` (no
classifier; imgcls never downloads weights here), wrapped as `TimmClassifier`:

    body.forward_features(x) -> features (B, C, h, w) -> body.forward_head(pre_logits=True) -> fc

so timm's pooling and pre-logits layers (ConvNeXt's head norm) stay timm's, and `fc` is the
imgcls head that `--head`, `--feature-dim`, the losses and the long-tail methods replace or read.
`features` is an identity tap on the last feature map (the input of timm's pooling: the last stage,
plus EfficientNet's 1x1 conv head): the default CAM layer, where CAM's fc-weighted sum is exact.

`--weights FILE` takes a timm state dict (`timm.create_model(name).state_dict()`, torch.save'd):
its keys are renamed into this wrapper (`body.` prefix; timm's classifier, e.g. `fc` or `head.fc`,
becomes imgcls's `fc`, replaced when the class count differs) and loaded by `build.load_weights`.

Attention (`--attn`) uses timm's own `attn_layer` argument (ResNet-family blocks: `block_args`),
i.e. timm's SEModule / CbamModule inside every residual block, where the SE and CBAM papers put
them; imgcls's reduction / kernel options are passed on.  A model without that argument, or an
attention timm has no block module for (nonlocal goes between stages, coord is not in timm), is
refused in one line rather than built without it.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import torch
from torch import nn

from ...errors import ImgclsError
from ...registry import BACKBONES

PREFIX = "timm/"
# imgcls attention name -> (timm `get_attn` name, imgcls option -> timm keyword)
TIMM_ATTN: dict[str, tuple[str, dict[str, str]]] = {
    "se": ("se", {"reduction": "rd_ratio"}),
    "cbam": ("cbam", {"reduction": "rd_ratio", "cbam_kernel": "spatial_kernel_size"}),
}


class TimmClassifier(nn.Module):
    """A timm model without classifier (`body`) + imgcls's head (`fc`); forward(images) -> logits (B, num_classes)."""

    def __init__(self, body: nn.Module, num_classes: int):
        super().__init__()
        self.body = body
        self.features = nn.Identity()  # hook point: the last feature map (B, C, h, w)
        width = int(getattr(body, "head_hidden_size", None) or body.num_features)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(self.body.forward_features(x))  # (B, 3, H, W) -> (B, C, h, w)
        e = self.body.forward_head(f, pre_logits=True)  # (B, D): timm's pooling (+ norm / pre-logits)
        return self.fc(e)  # (B, num_classes)


class TimmFeatures(nn.Module):
    """The conv trunk of a `TimmClassifier` for heads that need the feature map (bilinear, WS-DAN)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(x)  # (B, 3, H, W) -> (B, C, h, w)


def _attn_layer(name: str, attn: str, options: dict[str, Any]) -> Any:
    import timm.layers

    if attn not in TIMM_ATTN:
        raise ImgclsError(f"--attn {attn}: not available for timm backbones (timm has no per-block {attn} module"
                          f" imgcls can place); valid with timm/{name}: none, {', '.join(TIMM_ATTN)}")
    timm_name, keys = TIMM_ATTN[attn]
    kw: dict[str, Any] = {}
    for opt, value in options.items():
        if opt not in keys:
            raise ImgclsError(f"--attn {attn}: option {opt} has no timm equivalent for timm/{name}")
        kw[keys[opt]] = 1.0 / value if opt == "reduction" else value  # timm takes the ratio 1/r
    return functools.partial(timm.layers.get_attn(timm_name), **kw)


def build_timm(name: str, num_classes: int, attn: str | None = None,
               attn_options: dict[str, Any] | None = None) -> TimmClassifier:
    import timm

    kw: dict[str, Any] = {}
    if attn and attn != "none":
        kw["block_args"] = {"attn_layer": _attn_layer(name, attn, attn_options or {})}
    try:
        body = timm.create_model(name, pretrained=False, num_classes=0, **kw)
    except TypeError as e:  # "unexpected keyword argument 'block_args'" / "multiple values for 'block_args'"
        if "block_args" not in str(e):
            raise
        raise ImgclsError(f"--attn {attn}: timm/{name} takes no attn_layer (timm's ResNet family does, e.g."
                          f" timm/resnet50); use --attn none") from None
    if kw:
        cls = kw["block_args"]["attn_layer"].func
        if not any(isinstance(m, cls) for m in body.modules()):  # accepted but unused: refuse, never ignore
            raise ImgclsError(f"--attn {attn}: timm/{name} accepted attn_layer but built no {cls.__name__};"
                              f" use --attn none")
    return TimmClassifier(body, num_classes)


def remap_timm_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm state-dict names -> `TimmClassifier` names (an imgcls-saved state dict passes through unchanged)."""
    if any(k.startswith("body.") for k in state):
        return state
    classifier = str(model.body.pretrained_cfg.get("classifier") or "")
    out = {}
    for k, v in state.items():
        head, _, leaf = k.rpartition(".")
        out[f"fc.{leaf}" if classifier and head == classifier else f"body.{k}"] = v
    return out


def _stages(name: str) -> list[str]:
    """timm's feature stages (`feature_info`) as paths in the wrapper, from a parameter-free build on `meta`."""
    import timm

    try:
        with torch.device("meta"):
            m = timm.create_model(name, pretrained=False, num_classes=0)
        return [f"body.{f['module']}" for f in getattr(m, "feature_info", [])]
    except Exception:  # stages are for `imgcls stats` only; a model that cannot build on meta lists none
        return []


def resolve(name: str) -> tuple[Any, dict[str, Any]]:
    from ...extras import require

    require("timm", ["timm"], f"--backbone {PREFIX}{name}")
    import timm

    if not name or not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(PREFIX + c for c in close)}?)" if close else ""
        raise ImgclsError(f"--backbone: unknown timm model {PREFIX}{name}{hint}; valid: timm/<name> for a name in"
                          f" timm.list_models()")

    def build(num_classes: int = 1000, attn: str | None = None, attn_options: dict[str, Any] | None = None):
        return build_timm(name, num_classes, attn, attn_options)

    build.__name__ = f"timm_{name}"
    return build, {"family": "timm", "head": "fc", "cam_layer": "features", "torchvision": None,
                   "stages": _stages(name), "builds_attention": True, "remap_weights": remap_timm_state}


BACKBONES.add_namespace(PREFIX, resolve, pattern="timm/<name>")
