"""The image operations of the AutoAugment family on uint8 (H, W, 3) numpy arrays, with OpenCV/numpy.

Semantics and magnitudes follow torchvision's `transforms.autoaugment._apply_op` on uint8 tensors
(Cubuk et al., "AutoAugment: Learning Augmentation Strategies from Data", arXiv:1805.09501;
Cubuk et al., "RandAugment", arXiv:1909.13719; Muller & Hutter, "TrivialAugment", arXiv:2103.10158):

- geometric ops use nearest-neighbour sampling and fill 0; shears are about the top-left corner
  with factor tan(atan(m)) = m (torchvision's reading of the official (1, m, 0, 0, 1, 0) PIL
  transform), rotations are counter-clockwise about the image centre;
- colour ops blend with a degenerate image, out = clip(f * img + (1 - f) * degenerate) with
  f = 1 + magnitude, truncated to uint8 as torchvision's tensor path does;
- point operations are applied through 256-entry lookup tables (cv2.LUT), which is why this path
  is several times faster than PIL/tensor implementations.

Deliberate deviation: OpenCV's nearest-neighbour rounding differs from `grid_sample` at exact
half-pixel positions, so a few border pixels of geometric ops can differ from torchvision.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import cv2
import numpy as np

_RAMP = np.arange(256, dtype=np.float32)  # (256,)


def _lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(img, np.clip(table, 0, 255).astype(np.uint8))


def _gray(img: np.ndarray) -> np.ndarray:
    # ITU-R 601-2 luma as torchvision's rgb_to_grayscale, truncated to uint8, as float32 (H, W); computed on
    # contiguous planes (the same float32 operations in the same order as on the interleaved channels)
    r, g, b = (p.astype(np.float32) for p in cv2.split(img))
    r *= 0.2989
    g *= 0.587
    b *= 0.114
    r += g
    r += b
    return np.floor(r, out=r)


def _blend(img: np.ndarray, degenerate: np.ndarray, factor: float, img_f32: np.ndarray | None = None) -> np.ndarray:
    # factor * img + (1 - factor) * degenerate in float32, in place (no temporaries), truncated as torch's .to(uint8);
    # `img_f32` (img as float32) is consumed when given, and `degenerate` is left alone
    out = img.astype(np.float32) if img_f32 is None else img_f32
    out *= factor
    out += degenerate * (1.0 - factor)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _warp(img: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Sample img at inverse @ (x, y, 1) for every output pixel (pixel centres at integer coordinates)."""
    h, w = img.shape[:2]
    return cv2.warpAffine(img, inverse.astype(np.float64), (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def shear_x(img: np.ndarray, m: float) -> np.ndarray:
    # x_in = x_out + m * (y_out + 1/2): shear about the top-left corner (pixel centre 0 sits at 1/2)
    return _warp(img, np.array([[1.0, m, 0.5 * m], [0.0, 1.0, 0.0]]))


def shear_y(img: np.ndarray, m: float) -> np.ndarray:
    return _warp(img, np.array([[1.0, 0.0, 0.0], [m, 1.0, 0.5 * m]]))


def translate_x(img: np.ndarray, m: float) -> np.ndarray:
    return _warp(img, np.array([[1.0, 0.0, -float(int(m))], [0.0, 1.0, 0.0]]))


def translate_y(img: np.ndarray, m: float) -> np.ndarray:
    return _warp(img, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -float(int(m))]]))


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    fwd = cv2.getRotationMatrix2D(((w - 1) * 0.5, (h - 1) * 0.5), degrees, 1.0)  # counter-clockwise, (2, 3)
    return _warp(img, cv2.invertAffineTransform(fwd))


def brightness(img: np.ndarray, m: float) -> np.ndarray:
    return _lut(img, np.floor(_RAMP * (1.0 + m)))  # blend with black


def color(img: np.ndarray, m: float) -> np.ndarray:
    return _blend(img, _gray(img)[..., None], 1.0 + m)  # blend with the grey image


def contrast(img: np.ndarray, m: float) -> np.ndarray:
    f = 1.0 + m
    return _lut(img, np.floor(f * _RAMP + (1.0 - f) * float(_gray(img).mean())))  # blend with the mean grey


def sharpness(img: np.ndarray, m: float) -> np.ndarray:
    # degenerate = 3x3 smoothing [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded; the one-pixel border keeps the input
    kernel = np.ones((3, 3), np.float32)
    kernel[1, 1] = 5.0
    f = img.astype(np.float32)
    degenerate = cv2.filter2D(f, -1, kernel / 13.0, borderType=cv2.BORDER_REFLECT)
    inner = degenerate[1:-1, 1:-1]
    np.round(inner, out=inner)
    degenerate[0], degenerate[-1], degenerate[:, 0], degenerate[:, -1] = f[0], f[-1], f[:, 0], f[:, -1]
    return _blend(img, degenerate, 1.0 + m, img_f32=f)


def posterize(img: np.ndarray, bits: float) -> np.ndarray:
    mask = (0xFF << (8 - int(bits))) & 0xFF
    return np.bitwise_and(img, np.uint8(mask))


def solarize(img: np.ndarray, threshold: float) -> np.ndarray:
    return _lut(img, np.where(_RAMP >= threshold, 255.0 - _RAMP, _RAMP))


def autocontrast(img: np.ndarray, _m: float = 0.0) -> np.ndarray:
    # per channel (v - lo) * 255 / (hi - lo) in float32, clipped and truncated, applied as a lookup table
    c = img.shape[2]
    bounds = [cv2.minMaxLoc(p)[:2] for p in cv2.split(img)] if c <= 4 else None
    lo = np.array([b[0] for b in bounds], np.float32) if bounds else img.min(axis=(0, 1)).astype(np.float32)
    hi = np.array([b[1] for b in bounds], np.float32) if bounds else img.max(axis=(0, 1)).astype(np.float32)
    flat = hi == lo
    scale = np.where(flat, 1.0, 255.0 / np.where(flat, 1.0, hi - lo))
    lo = np.where(flat, 0.0, lo)
    table = np.clip((_RAMP[:, None] - lo) * scale, 0, 255).astype(np.uint8)  # (256, C)
    return cv2.LUT(img, table.reshape(1, 256, c)) if c in (1, 3, 4) else table[img, np.arange(c)]


def equalize(img: np.ndarray, _m: float = 0.0) -> np.ndarray:
    # PIL's ImageOps.equalize (torchvision's tensor `_scale_channel`), all channels at once:
    # step = (pixels outside the last used bin) // 255; lut = (cumsum + step // 2) // step, shifted by one bin
    c = img.shape[2]
    hist = np.stack([cv2.calcHist([img], [k], None, [256], [0, 256]).ravel() for k in range(c)]).astype(np.int64)
    last = 255 - np.argmax(hist[:, ::-1] != 0, axis=1)  # (C,) index of the last non-empty bin
    step = (hist.sum(1) - hist[np.arange(c), last]) // 255  # (C,)
    safe = np.maximum(step, 1)[:, None]  # (C, 1)
    lut = (np.cumsum(hist, axis=1) + safe // 2) // safe  # (C, 256)
    lut = np.concatenate([np.zeros((c, 1), np.int64), lut[:, :-1]], axis=1).clip(0, 255)
    lut = np.where((step == 0)[:, None], np.arange(256)[None, :], lut)  # a flat channel is left unchanged
    return cv2.LUT(img, lut.T.astype(np.uint8).reshape(1, 256, c))  # per-channel table (1, 256, C)


def invert(img: np.ndarray, _m: float = 0.0) -> np.ndarray:
    return 255 - img


def identity(img: np.ndarray, _m: float = 0.0) -> np.ndarray:
    return img


OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x, "TranslateY": translate_y, "Rotate": rotate,
    "Brightness": brightness, "Color": color, "Contrast": contrast, "Sharpness": sharpness, "Posterize": posterize,
    "Solarize": solarize, "AutoContrast": autocontrast, "Equalize": equalize, "Invert": invert, "Identity": identity,
}


def magnitude_bins(op: str, num_bins: int, height: int, width: int, wide: bool = False) -> tuple[np.ndarray, bool]:
    """(magnitudes (num_bins,), signed) of an op, as torchvision's `_augmentation_space` (wide: TrivialAugment)."""
    return _space(num_bins, height, width, wide).get(op, (np.zeros(num_bins), False))


@functools.lru_cache(maxsize=64)
def _space(num_bins: int, height: int, width: int, wide: bool) -> dict[str, tuple[np.ndarray, bool]]:
    lin = np.linspace
    top = 0.99 if wide else 0.3
    level = 0.99 if wide else 0.9
    post_div = 6 if wide else 4
    table: dict[str, tuple[np.ndarray, bool]] = {
        "ShearX": (lin(0.0, top, num_bins), True),
        "ShearY": (lin(0.0, top, num_bins), True),
        "TranslateX": (lin(0.0, 32.0 if wide else 150.0 / 331.0 * width, num_bins), True),
        "TranslateY": (lin(0.0, 32.0 if wide else 150.0 / 331.0 * height, num_bins), True),
        "Rotate": (lin(0.0, 135.0 if wide else 30.0, num_bins), True),
        "Brightness": (lin(0.0, level, num_bins), True),
        "Color": (lin(0.0, level, num_bins), True),
        "Contrast": (lin(0.0, level, num_bins), True),
        "Sharpness": (lin(0.0, level, num_bins), True),
        "Posterize": (8 - np.round(np.arange(num_bins) / ((num_bins - 1) / post_div)), False),
        "Solarize": (lin(255.0, 0.0, num_bins), False),
    }
    return table


def apply_op(img: np.ndarray, op: str, magnitude: float) -> np.ndarray:
    return OPS[op](img, magnitude)


def shear_degrees(m: float) -> float:
    """The shear angle torchvision passes to F.affine for magnitude m (for tests/reference)."""
    return math.degrees(math.atan(m))
