"""Class activation maps: CAM, Grad-CAM, Grad-CAM++ and LayerCAM.

Papers:
- CAM: Zhou, Khosla, Lapedriza, Oliva, Torralba, "Learning Deep Features for Discriminative
  Localization", CVPR 2016, arXiv:1512.04150 (eq. 2: M_c(x, y) = sum_k w_k^c f_k(x, y)).
- Grad-CAM: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
  Localization", ICCV 2017, arXiv:1610.02391 (eq. 1: alpha_k^c = mean_ij dy^c/dA^k_ij; eq. 2:
  L = ReLU(sum_k alpha_k^c A^k)).
- Grad-CAM++: Chattopadhyay et al., "Grad-CAM++: Improved Visual Explanations for Deep
  Convolutional Networks", WACV 2018, arXiv:1710.11063 (eq. 19, the closed form with exp(y^c)).
- LayerCAM: Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
  Localization", IEEE TIP 2021 (eq. 6: ReLU(sum_k ReLU(dy^c/dA^k) * A^k)).

Structure follows pytorch-grad-cam's `BaseCAM`: a base class captures the target layer's
activations (a forward hook released by a context manager after every call) and each variant
overrides one hook, `combine(acts, grads)`.  A registered CAM method is any callable
`(model, images, target, layer) -> (B, h, w)` raw maps, so other families (e.g. WS-DAN attention
maps) register theirs the same way.

Deliberate deviations from pytorch-grad-cam (numerically the same maps):
- gradients are taken with `torch.autograd.grad` with respect to the captured activation only: no
  parameter `.grad` is written and backward stops at the target layer (the reference backpropagates
  to the input and fills every parameter's gradient);
- maps are upsampled (bilinear, half-pixel centres, as cv2.resize) and min-max normalised once, on
  the device, instead of normalise -> resize -> normalise on the CPU (an affine difference only).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImgclsError
from ..registry import CAM_METHODS

Target = int | Sequence[int] | torch.Tensor | None


def layer_choices(model: nn.Module, default: str | None) -> list[str]:
    """Names offered in error messages: the default layer, top-level children, the default's children."""
    names = [default] if default else []
    names += [n for n, _ in model.named_children()]
    if default:
        with contextlib.suppress(AttributeError):
            names += [f"{default}.{n}" for n, _ in model.get_submodule(default).named_children()]
    return list(dict.fromkeys(names))


def default_layer(model: nn.Module) -> str | None:
    meta = getattr(model, "imgcls", None)
    return meta.get("cam_layer") if isinstance(meta, dict) else None


def resolve_layer(model: nn.Module, layer: str | None) -> str:
    default = default_layer(model)
    name = layer or default
    if not name:
        valid = ", ".join(layer_choices(model, None))
        raise ImgclsError(f"--layer: required for a model not built by imgcls; valid: {valid}")
    try:
        model.get_submodule(name)
    except AttributeError:
        raise ImgclsError(f"--layer: no layer {name!r} in this model; valid: {', '.join(layer_choices(model, default))}"
                          ) from None
    return name


@contextlib.contextmanager
def capture(model: nn.Module, layer: str, need_grad: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Record `layer`'s output; hooks, eval mode and `requires_grad` flags are restored on exit.

    With `need_grad` the parameters stop requiring gradients and the hook returns a detached copy
    of the activation that requires grad, so autograd records only the part after the layer.
    """
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _inp: Any, out: Any) -> torch.Tensor | None:
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise ImgclsError(f"--layer {layer}: its output is not a (B, C, h, w) feature map; pick a conv stage")
        if not need_grad:
            store["acts"] = out
            return None
        acts = out.detach().float().requires_grad_(True)  # (B, K, h, w) the graph starts here
        store["acts"] = acts
        return acts.clone()  # later in-place ops (ReLU, residual +=) must not touch the leaf

    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        model.eval()
        if need_grad:
            for p, _ in flags:
                p.requires_grad_(False)
        yield store
    finally:
        handle.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def pick_scores(logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """y^c per image: the pre-softmax score of the target class (top-1 when target is None)."""
    idx = logits.argmax(1) if target is None else target.to(logits.device)  # (B,)
    return logits.float().gather(1, idx.view(-1, 1)).squeeze(1)  # (B,)


class GradientCAM(ABC):
    """Base of the gradient methods: one forward, one backward to the layer, then `combine`."""

    @abstractmethod
    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """acts, grads (B, K, h, w) -> raw maps (B, h, w)."""

    def __call__(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None, layer: str) -> torch.Tensor:
        with capture(model, layer, need_grad=True) as store, torch.enable_grad():
            scores = pick_scores(model(images), target)  # (B,)
            acts = store["acts"]
            (grads,) = torch.autograd.grad(scores.sum(), acts)  # images are independent: sum is per-image
            return self.combine(acts.detach(), grads).detach()


class GradCAM(GradientCAM):
    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        alpha = grads.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1) eq. 1
        return F.relu((alpha * acts).sum(1))  # (B, h, w) eq. 2


class GradCAMPlusPlus(GradientCAM):
    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2 = grads.pow(2)
        g3 = g2 * grads
        sum_a = acts.sum(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
        a = g2 / (2 * g2 + sum_a * g3 + 1e-6)  # eq. 19, alpha_ij^kc
        a = torch.where(grads != 0, a, torch.zeros_like(a))
        w = (a * F.relu(grads)).sum(dim=(2, 3), keepdim=True)  # (B, K, 1, 1) eq. 9 / 10
        return F.relu((w * acts).sum(1))  # (B, h, w)


class LayerCAM(GradientCAM):
    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return F.relu((F.relu(grads) * acts).sum(1))  # (B, h, w) eq. 6


CAM_METHODS.add("gradcam", GradCAM())
CAM_METHODS.add("gradcam++", GradCAMPlusPlus())
CAM_METHODS.add("layercam", LayerCAM())
from . import cam_class  # noqa: E402,F401  (registers "cam": classifier-weight CAM)


def resolve_target(target: Target, batch: int, num_classes: int, option: str = "target") -> torch.Tensor | None:
    if target is None:
        return None
    try:
        t = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None or t.dtype == torch.bool or t.is_floating_point() or t.is_complex():  # 2.7 is not class 2
        raise ImgclsError(f"{option}: expected a class index (int) or one per image, got {target!r}")
    t = t.long().flatten()  # (B,) or (1,)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ImgclsError(f"{option}: give one class or one per image ({batch}), got {t.numel()}")
    if (t < 0).any() or (t >= num_classes).any():
        raise ImgclsError(f"{option}: class index out of range; valid: 0..{num_classes - 1}")
    return t


def normalise(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) raw -> (B, H, W) bilinear upsampled, min-max scaled to [0, 1] per image."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]  # (B, H, W)
    lo = up.amin(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    hi = up.amax(dim=(1, 2), keepdim=True)
    return ((up - lo) / (hi - lo + 1e-7)).clamp_(0, 1)


def cam(model: nn.Module, images: torch.Tensor, method: str = "gradcam", target: Target = None,
        layer: str | None = None) -> torch.Tensor:
    """Activation maps (B, H, W) in [0, 1] for normalised images (B, 3, H, W) at their resolution.

    target: None = each image's top-1 class, an int for all images, or one class per image.
    layer: dotted module name; None = `model.imgcls["cam_layer"]` (the last convolutional stage).
    """
    from ..config import load_components

    load_components()
    fn = CAM_METHODS.get(method)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 \
            or not images.is_floating_point():
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ImgclsError(f"images: expected a normalised float tensor (B, 3, H, W), got {got}")
    name = resolve_layer(model, layer)
    meta = getattr(model, "imgcls", None)
    num_classes = meta.get("num_classes") if isinstance(meta, dict) else None
    t = resolve_target(target, images.shape[0], num_classes or 2**62)
    raw = fn(model, images, t, name)  # (B, h, w)
    return normalise(raw, (images.shape[-2], images.shape[-1]))


def count_hooks(model: nn.Module) -> int:
    """Forward/backward hooks left on any submodule (0 after every `cam` call)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())
