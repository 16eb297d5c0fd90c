"""The rewritten AutoAugment operations give the same pixels as the implementations they replaced, bit for bit.

The references below are the previous `augment_ops` code (numpy float32 blends with a broadcast grey, a float
lookup table for Solarize, interleaved histograms and (1, 256, C) tables for Equalize/AutoContrast, Brightness's
table built per call); they in turn are checked against torchvision in test_autoaugment.py.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imgcls_cli.data.augment_ops import OPS, magnitude_bins

_RAMP = np.arange(256, dtype=np.float32)


def _lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(img, np.clip(table, 0, 255).astype(np.uint8))


def _gray(img: np.ndarray) -> np.ndarray:
    r, g, b = (p.astype(np.float32) for p in cv2.split(img))
    r *= 0.2989
    g *= 0.587
    b *= 0.114
    r += g
    r += b
    return np.floor(r, out=r)


def _blend(img: np.ndarray, degenerate: np.ndarray, factor: float, img_f32: np.ndarray | None = None) -> np.ndarray:
    out = img.astype(np.float32) if img_f32 is None else img_f32
    out *= factor
    out += degenerate * (1.0 - factor)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _old_sharpness(img: np.ndarray, m: float) -> np.ndarray:
    kernel = np.ones((3, 3), np.float32)
    kernel[1, 1] = 5.0
    f = img.astype(np.float32)
    degenerate = cv2.filter2D(f, -1, kernel / 13.0, borderType=cv2.BORDER_REFLECT)
    inner = degenerate[1:-1, 1:-1]
    np.round(inner, out=inner)
    degenerate[0], degenerate[-1], degenerate[:, 0], degenerate[:, -1] = f[0], f[-1], f[:, 0], f[:, -1]
    return _blend(img, degenerate, 1.0 + m, img_f32=f)


def _old_autocontrast(img: np.ndarray, _m: float = 0.0) -> np.ndarray:
    c = img.shape[2]
    bounds = [cv2.minMaxLoc(p)[:2] for p in cv2.split(img)]
    lo = np.array([b[0] for b in bounds], np.float32)
    hi = np.array([b[1] for b in bounds], np.float32)
    flat = hi == lo
    scale = np.where(flat, 1.0, 255.0 / np.where(flat, 1.0, hi - lo))
    lo = np.where(flat, 0.0, lo)
    table = np.clip((_RAMP[:, None] - lo) * scale, 0, 255).astype(np.uint8)
    return cv2.LUT(img, table.reshape(1, 256, c))


def _old_equalize(img: np.ndarray, _m: float = 0.0) -> np.ndarray:
    c = img.shape[2]
    hist = np.stack([cv2.calcHist([img], [k], None, [256], [0, 256]).ravel() for k in range(c)]).astype(np.int64)
    last = 255 - np.argmax(hist[:, ::-1] != 0, axis=1)
    step = (hist.sum(1) - hist[np.arange(c), last]) // 255
    safe = np.maximum(step, 1)[:, None]
    lut = (np.cumsum(hist, axis=1) + safe // 2) // safe
    lut = np.concatenate([np.zeros((c, 1), np.int64), lut[:, :-1]], axis=1).clip(0, 255)
    lut = np.where((step == 0)[:, None], np.arange(256)[None, :], lut)
    return cv2.LUT(img, lut.T.astype(np.uint8).reshape(1, 256, c))


OLD = {
    "Brightness": lambda img, m: _lut(img, np.floor(_RAMP * (1.0 + m))),
    "Color": lambda img, m: _blend(img, _gray(img)[..., None], 1.0 + m),
    "Contrast": lambda img, m: _lut(img, np.floor((1.0 + m) * _RAMP + (1.0 - (1.0 + m)) * float(_gray(img).mean()))),
    "Sharpness": _old_sharpness,
    "Solarize": lambda img, t: _lut(img, np.where(_RAMP >= t, 255.0 - _RAMP, _RAMP)),
    "AutoContrast": _old_autocontrast,
    "Equalize": _old_equalize,
}


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    imgs = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((1, 1, 3), (2, 5, 3), (17, 23, 3), (224, 224, 3))]
    smooth = cv2.GaussianBlur(imgs[3], (0, 0), 6)  # photo-like: narrow, uneven histograms
    imgs += [smooth, (smooth // 5 + 90).astype(np.uint8), np.zeros((9, 7, 3), np.uint8),
             np.full((8, 8, 3), 255, np.uint8), smooth[3:120:2, 10:200]]  # ..., a non-contiguous view
    one_flat = smooth[:40, :40].copy()
    one_flat[..., 1] = 77  # one flat channel among normal ones
    sparse = np.zeros((30, 30, 3), np.uint8)
    sparse[::4, ::3] = (12, 200, 255)  # two values per channel
    return [*imgs, one_flat, sparse]


@pytest.mark.parametrize("name", sorted(OLD))
def test_rewritten_ops_equal_the_previous_implementation(name: str) -> None:
    if name == "Solarize":
        mags = sorted({*magnitude_bins(name, 10, 1, 1)[0].tolist(), *magnitude_bins(name, 31, 1, 1)[0].tolist(),
                       128.0, 127.5, 0.0, -3.0, 255.0, 255.5, 300.0})
    else:
        mags = sorted({*magnitude_bins("Color", 10, 1, 1)[0].tolist(), *(-magnitude_bins("Color", 31, 1, 1, True)[0]),
                       0.45, -0.3, -1e-9, -0.99})
    for img in _images():
        for m in map(float, mags):  # the policies pass Python floats (a numpy float64 made the old blends float64)
            if name == "Sharpness" and min(img.shape[:2]) < 3:
                continue
            ours, ref = OPS[name](img, m), OLD[name](img, m)
            assert ours.dtype == np.uint8 and ours.shape == img.shape, (img.shape, m)
            assert np.array_equal(ours, ref), (name, img.shape, m)


def test_solarize_equals_the_previous_table_for_every_value_and_threshold() -> None:
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)  # every uint8 value
    for t in np.linspace(-2.0, 258.0, 2601):
        assert np.array_equal(OPS["Solarize"](ramp, float(t)), OLD["Solarize"](ramp, float(t))), t


def test_ops_do_not_modify_their_input_and_results_do_not_share_work_arrays() -> None:
    img = _images()[4]
    keep = img.copy()
    first = {name: OPS[name](img, 0.45 if name != "Solarize" else 128.0) for name in OLD}
    second = {name: OPS[name](img[::-1].copy(), 0.45 if name != "Solarize" else 128.0) for name in OLD}
    assert np.array_equal(img, keep)
    for name in OLD:  # a later call reuses the scratch arrays: earlier results must be untouched
        assert np.array_equal(first[name], OLD[name](img, 0.45 if name != "Solarize" else 128.0)), name
        assert not np.shares_memory(first[name], second[name]), name
