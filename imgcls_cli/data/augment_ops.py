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
import threading
from collections.abc import Callable, Sequence

import cv2
import numpy as np

_RAMP = np.arange(256, dtype=np.float32)  # (256,)
_LUMA = (np.float32(0.2989), np.float32(0.587), np.float32(0.114))  # ITU-R 601-2 as torchvision
_SMOOTH = np.ones((3, 3), np.float32)
_SMOOTH[1, 1] = 5.0
_SMOOTH /= 13.0  # PIL's SMOOTH kernel, as torchvision's adjust_sharpness
_TLS = threading.local()


def _scratch(shape: tuple[int, ...], slot: str) -> np.ndarray:
    """A float32 work array of `shape`, reused across calls (per thread).

    A fresh (224, 224, 3) float32 temporary lands above glibc's mmap threshold often enough that its page faults
    cost as much as the arithmetic; work arrays are never returned to callers.
    """
    bufs = _TLS.__dict__.setdefault("bufs", {})
    buf = bufs.get((shape, slot))
    if buf is None:
        if len(bufs) >= 16:  # a few image sizes at most in practice; bound the memory anyway
            bufs.clear()
        buf = bufs[(shape, slot)] = np.empty(shape, np.float32)
    return buf


def _lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(img, np.clip(table, 0, 255).astype(np.uint8))


def _lut_per_channel(img: np.ndarray, planes: Sequence[np.ndarray], table: np.ndarray) -> np.ndarray:
    # table (256, C) uint8; C single-channel lookups on the planes and one merge cost about 60 % of cv2.LUT with a
    # (1, 256, C) table on the interleaved image
    return cv2.merge([cv2.LUT(p, np.ascontiguousarray(table[:, k])) for k, p in enumerate(planes)]).reshape(img.shape)


def _gray(img: np.ndarray) -> np.ndarray:
    # ITU-R 601-2 luma as torchvision's rgb_to_grayscale, truncated, as float32 (H, W) (a scratch array): the same
    # float32 products and sums in the same order as on float32 channels, computed from contiguous uint8 planes
    r8, g8, b8 = cv2.split(img)
    out, tmp = _scratch(r8.shape, "gray"), _scratch(r8.shape, "gray_tmp")
    np.multiply(r8, _LUMA[0], out=out)
    np.multiply(g8, _LUMA[1], out=tmp)
    out += tmp
    np.multiply(b8, _LUMA[2], out=tmp)
    out += tmp
    return np.floor(out, out=out)


def _blend(img: np.ndarray, scaled_degenerate: np.ndarray, factor: float) -> np.ndarray:
    # factor * img + [(1 - factor) * degenerate, given] in float32, clipped and truncated as torch's .to(uint8);
    # the degenerate image must lie in [0, 255]
    out = _scratch(img.shape, "blend")
    np.multiply(img, np.float32(factor), out=out)  # == img.astype(float32) * float32(factor)
    out += scaled_degenerate
    if not 0.0 <= factor <= 1.0:  # else a convex combination of values in [0, 255]: in [0, 256) after rounding
        cv2.threshold(out, 0.0, 0.0, cv2.THRESH_TOZERO, dst=out)  # max(out, 0)
        cv2.threshold(out, 255.0, 255.0, cv2.THRESH_TRUNC, dst=out)  # min(out, 255)
    return out.astype(np.uint8)


def _warp(img: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Sample img at inverse @ (x, y, 1) for every output pixel (pixel centres at integer coordinates)."""
    # The nearest source pixel is rounded half to even, as torch's grid_sample does (cv2's INTER_NEAREST rounds
    # exact ties up, which a shear by a multiple of 0.1 hits on every fifth row), then gathered by cv2.remap.
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)  # (H, W) each
    a = inverse.astype(np.float64)
    map_x = np.rint(a[0, 0] * xs + a[0, 1] * ys + a[0, 2]).astype(np.float32)
    map_y = np.rint(a[1, 0] * xs + a[1, 1] * ys + a[1, 2]).astype(np.float32)
    return cv2.remap(img, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


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


@functools.lru_cache(maxsize=256)
def _brightness_table(m: float) -> np.ndarray:
    table = np.clip(np.floor(_RAMP * (1.0 + m)), 0, 255).astype(np.uint8)
    table.flags.writeable = False  # shared by every call with this magnitude
    return table


def brightness(img: np.ndarray, m: float) -> np.ndarray:
    return cv2.LUT(img, _brightness_table(float(m)))  # blend with black


def color(img: np.ndarray, m: float) -> np.ndarray:
    f = 1.0 + m
    gray = _gray(img)
    gray *= 1.0 - f  # blend with the grey image: (1 - f) * grey once per pixel, then replicated to the channels
    return _blend(img, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB, dst=_scratch(img.shape, "degenerate")), f)


def contrast(img: np.ndarray, m: float) -> np.ndarray:
    f = 1.0 + m
    return _lut(img, np.floor(f * _RAMP + (1.0 - f) * float(_gray(img).mean())))  # blend with the mean grey


def sharpness(img: np.ndarray, m: float) -> np.ndarray:
    # degenerate = 3x3 smoothing [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded; the one-pixel border keeps the input
    f = _scratch(img.shape, "src")
    np.copyto(f, img)
    degenerate = cv2.filter2D(f, -1, _SMOOTH, dst=_scratch(img.shape, "degenerate"), borderType=cv2.BORDER_REFLECT)
    inner = degenerate[1:-1, 1:-1]
    np.round(inner, out=inner)
    degenerate[0], degenerate[-1], degenerate[:, 0], degenerate[:, -1] = f[0], f[-1], f[:, 0], f[:, -1]
    factor = 1.0 + m
    degenerate *= 1.0 - factor
    return _blend(img, degenerate, factor)


def posterize(img: np.ndarray, bits: float) -> np.ndarray:
    mask = (0xFF << (8 - int(bits))) & 0xFF
    return np.bitwise_and(img, np.uint8(mask))


def solarize(img: np.ndarray, threshold: float) -> np.ndarray:
    # v >= threshold -> 255 - v == v ^ 255: xor with the mask of v > ceil(threshold) - 1 (all integers, exact)
    k = math.ceil(threshold)
    if k <= 0:
        return cv2.bitwise_not(img)
    if k > 255:
        return img.copy()
    _, mask = cv2.threshold(img, k - 1, 255, cv2.THRESH_BINARY)
    return cv2.bitwise_xor(img, mask, dst=mask)


def autocontrast(img: np.ndarray, _m: float = 0.0) -> np.ndarray:
    # per channel (v - lo) * 255 / (hi - lo) in float32, clipped and truncated, applied as a lookup table
    c = img.shape[2]
    planes = cv2.split(img) if c <= 4 else None
    bounds = [cv2.minMaxLoc(p)[:2] for p in planes] if planes else None
    lo = np.array([b[0] for b in bounds], np.float32) if bounds else img.min(axis=(0, 1)).astype(np.float32)
    hi = np.array([b[1] for b in bounds], np.float32) if bounds else img.max(axis=(0, 1)).astype(np.float32)
    flat = hi == lo
    scale = np.where(flat, 1.0, 255.0 / np.where(flat, 1.0, hi - lo))
    lo = np.where(flat, 0.0, lo)
    table = np.clip((_RAMP[:, None] - lo) * scale, 0, 255).astype(np.uint8)  # (256, C)
    return _lut_per_channel(img, planes, table) if planes else table[img, np.arange(c)]


def equalize(img: np.ndarray, _m: float = 0.0) -> np.ndarray:
    # PIL's ImageOps.equalize (torchvision's tensor `_scale_channel`), all channels at once:
    # step = (pixels outside the last used bin) // 255; lut = (cumsum + step // 2) // step, shifted by one bin
    planes = cv2.split(img)
    c = len(planes)
    hist = np.stack([cv2.calcHist([p], [0], None, [256], [0, 256]).ravel() for p in planes], 1).astype(np.int64)
    last = 255 - np.argmax(hist[::-1] != 0, axis=0)  # (C,) index of the last non-empty bin
    step = (hist.sum(0) - hist[last, np.arange(c)]) // 255  # (C,)
    safe = np.maximum(step, 1)  # (C,)
    lut = np.zeros((256, c), np.int64)
    np.cumsum(hist[:-1], axis=0, out=lut[1:])  # shifted by one bin: lut[0] = 0
    lut += safe // 2
    lut //= safe
    table = np.minimum(lut, 255).astype(np.uint8)  # (256, C)
    table[:, step == 0] = np.arange(256, dtype=np.uint8)[:, None]  # a flat channel is left unchanged
    return _lut_per_channel(img, planes, table)


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
