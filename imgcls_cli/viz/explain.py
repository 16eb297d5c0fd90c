"""Activation maps for image files with a checkpoint: what `imgcls cam` does, callable from Python.

Preprocessing is exactly the checkpoint's evaluation pipeline (shorter side to img_size / crop_pct,
centre crop img_size, the checkpoint's mean/std), so the model sees what it was evaluated on: a
network trained at 32 px gives other answers on a 37 px input (its last stage changes from 1x1 to
2x2).  The map of the crop is placed back into the original H x W at the crop's position
(bilinear); the border the crop leaves out gets 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.decode import IMAGE_EXTS, BadImage, decode_file
from ..engine.checkpoint import Checkpoint
from ..errors import ImgclsError
from .cam import cam, resolve_layer


class UnreadableImage(ImgclsError):
    """An image file that cannot be decoded (`imgcls cam` skips and reports it)."""


@dataclass
class ClassMap:
    index: int
    name: str
    prob: float
    heat: np.ndarray  # (H, W) float32 in [0, 1], the original image's size


@dataclass
class Explanation:
    path: Path
    image: np.ndarray  # (H, W, 3) uint8
    pred: int
    pred_name: str
    pred_prob: float
    maps: list[ClassMap]
    layer: str = ""  # the layer the maps come from
    grid: tuple[int, int] = (0, 0)  # its (h, w) at the evaluated resolution
    finer: str | None = None  # the layer nearest the output with a grid above COARSE x COARSE, if `grid` is not

    def notes(self) -> list[str]:
        """One line per thing the pictures do not say themselves (a map too coarse to localise, an empty map)."""
        out = []
        h, w = self.grid
        if 0 < min(h, w) <= COARSE:
            better = f"; --layer {self.finer} gives a finer map" if self.finer else ""
            out.append(f"--layer {self.layer}: its {h}x{w} feature map is too coarse to show where the evidence"
                       f" is (each map is {h * w} cell(s), upsampled){better}")
        for m in self.maps if min(h, w) > 1 else []:  # a 1x1 map is flat for every class: said above
            if not m.heat.any():
                out.append(f"{self.path.name}: the map of class {m.name!r} is all zero: no region of --layer"
                           f" {self.layer} raises its score (the positive part of the map is empty; with two classes"
                           f" the evidence for one is the evidence against the other)")
        return out


COARSE = 2  # a feature map of at most 2x2 cells cannot localise anything


def feature_grids(model: torch.nn.Module, x: torch.Tensor, layer: str) -> tuple[tuple[int, int], str | None]:
    """(h, w) of `layer`'s output for input `x`, and the finer layer to suggest when that is at most COARSE:
    the one nearest the output, among the layers before `layer` in its parent (ResNet: layer3, layer2, ...) and
    `layer`'s own children (VGG/MobileNet `features.N`), whose output is a feature map above COARSE x COARSE."""
    parent, _, leaf = layer.rpartition(".")
    pmod = model.get_submodule(parent) if parent else model
    before = []
    for n, _ in pmod.named_children():
        if n == leaf:
            break
        before.append(f"{parent}.{n}" if parent else n)
    inner = [f"{layer}.{n}" for n, _ in model.get_submodule(layer).named_children()]
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name in [*before, *inner, layer]:
        def hook(_m, _i, out, name=name):  # noqa: ANN001
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape)
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(x[:1])
    finally:
        for h in handles:
            h.remove()
    grid = shapes.get(layer, (0, 0, 0, 0))
    grid = (grid[-2], grid[-1]) if len(grid) == 4 else (0, 0)
    finer = None
    if 0 < min(grid) <= COARSE:
        ok = [n for n in (*before, *inner) if len(shapes.get(n, ())) == 4 and min(shapes[n][-2:]) > COARSE]
        finer = ok[-1] if ok else None
    return grid, finer


def collect_images(inputs: list[Path]) -> list[Path]:
    """Files as given; folders expanded to their image files (recursively, sorted)."""
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise ImgclsError(f"IMAGE {p}: folder holds no images ({', '.join(sorted(IMAGE_EXTS))})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ImgclsError(f"IMAGE {p}: no such file or folder")
    if not files:
        raise ImgclsError("IMAGE: give at least one image file or folder")
    return files


def parse_class(value: str, class_names: list[str]) -> int:
    """--target-class: a class index or a class name."""
    if value in class_names:
        return class_names.index(value)
    if value.lstrip("-").isdigit():
        k = int(value)
        if 0 <= k < len(class_names):
            return k
        raise ImgclsError(f"--target-class {k}: out of range; valid: 0..{len(class_names) - 1} or a class name")
    shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
    raise ImgclsError(f"--target-class {value!r}: not a class of this checkpoint; valid: 0..{len(class_names) - 1} "
                      f"or one of {shown}")


def preprocess(image: np.ndarray, ckpt: Checkpoint, device: torch.device) -> tuple[torch.Tensor, tuple[int, ...]]:
    """uint8 (H, W, 3) -> (normalised (1, 3, S, S) as in evaluation, crop box (y0, x0, y1, x1) in the image)."""
    from types import SimpleNamespace

    import albumentations as A
    import cv2

    from ..data.transforms import eval_crop_pct

    cfg = ckpt.config
    size = cfg.data.img_size or 224
    # a trained run's config holds the resolved crop; one built without data (aug.eval_crop_pct None) gets the
    # default evaluation would give it at this size
    short = int(round(size / eval_crop_pct(cfg, SimpleNamespace(img_size=size, aug_preset=None))))
    resized = A.SmallestMaxSize(max_size=short, interpolation=cv2.INTER_LINEAR)(image=image)["image"]  # eval resize
    rh, rw = resized.shape[:2]
    top, left = (rh - size) // 2, (rw - size) // 2  # albumentations CenterCrop's offsets
    crop = np.ascontiguousarray(resized[top:top + size, left:left + size])  # (S, S, 3)
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float()  # (1, 3, S, S)
    mean = torch.tensor(ckpt.mean).view(1, 3, 1, 1) * 255.0  # (1, 3, 1, 1)
    std = torch.tensor(ckpt.std).view(1, 3, 1, 1) * 255.0
    h, w = image.shape[:2]
    sy, sx = h / rh, w / rw  # resized -> original pixel scale
    box = (round(top * sy), round(left * sx), min(h, round((top + size) * sy)), min(w, round((left + size) * sx)))
    return ((x - mean) / std).to(device), box


def explain_file(path: Path, ckpt: Checkpoint, method: str = "gradcam", classes: list[int] | None = None,
                 topk: int = 1, layer: str | None = None, device: str | torch.device = "cpu") -> Explanation:
    """Maps for one image: the given classes, else the top-k predicted classes."""
    dev = torch.device(device)
    try:
        image = decode_file(path, ckpt.config.data.decoder)
    except BadImage as e:
        raise UnreadableImage(f"IMAGE {path}: {e}") from None
    x, (y0, x0, y1, x1) = preprocess(image, ckpt, dev)
    with torch.no_grad():
        probs = ckpt.model.eval()(x).float().softmax(1)[0]  # (C,)
    pred = int(probs.argmax())
    if classes is None:
        if not 1 <= topk <= len(ckpt.class_names):
            raise ImgclsError(f"--topk {topk}: must be in 1..{len(ckpt.class_names)} (the number of classes)")
        classes = probs.topk(topk).indices.tolist()
    h, w = image.shape[:2]
    xs = x.expand(len(classes), -1, -1, -1)  # (K, 3, h, w): one pass for all requested classes
    heat = cam(ckpt.model, xs, method=method, target=classes, layer=layer)  # (K, h, w) in [0, 1]
    inner = F.interpolate(heat[:, None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[:, 0]
    heat = torch.zeros(len(classes), h, w)  # (K, H, W): 0 outside the evaluated crop
    heat[:, y0:y1, x0:x1] = inner.clamp(0, 1).cpu()  # (K, y1 - y0, x1 - x0)
    heat = heat.numpy().astype(np.float32)
    maps = [ClassMap(k, ckpt.class_names[k], float(probs[k]), heat[i]) for i, k in enumerate(classes)]
    name = resolve_layer(ckpt.model, layer)
    grid, finer = feature_grids(ckpt.model, x, name)
    return Explanation(path, image, pred, ckpt.class_names[pred], float(probs[pred]), maps, name, grid, finer)
