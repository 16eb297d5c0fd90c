"""The fast data path is the old one, bit for bit: TrainCompose vs A.Compose, planar samples, shared-memory
collation, the one-pass CPU normaliser, and the os-level file read."""

from __future__ import annotations

import random
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from imgcls_cli.config import load_components
from imgcls_cli.data.dataset import ImageDataset, collate, to_planar
from imgcls_cli.data.decode import BadImage, decode_file, read_file
from imgcls_cli.data.loader import DeviceNormalizer
from imgcls_cli.data.sources import ArraySource
from imgcls_cli.data.transforms import TrainCompose, train_transform


def _run(tf: A.Compose, img: np.ndarray, seed: int) -> np.ndarray:
    tf.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return tf(image=img)["image"]


@pytest.mark.parametrize("autoaugment", [None, "imagenet", "randaugment"])
@pytest.mark.parametrize(("size", "shape", "hflip", "jitter"), [(32, (32, 32, 3), 0.5, 0.0),
                                                                 (24, (61, 45, 3), 0.5, 0.3),
                                                                 (16, (40, 50, 3), 0.0, 0.0),
                                                                 (20, (30, 30, 3), 1.0, 0.0)])
def test_train_compose_equals_albumentations_compose(autoaugment, size, shape, hflip, jitter) -> None:
    load_components()
    fast = train_transform(size, (0.08, 1.0), (3 / 4, 4 / 3), hflip, jitter, autoaugment)
    assert isinstance(fast, TrainCompose)
    ref = A.Compose(list(fast.transforms), seed=0)  # the same transform objects, albumentations' own call
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for seed in range(60):
        a, b = _run(fast, img, seed), _run(ref, img, seed)
        assert a.shape == (size, size, 3) and np.array_equal(a, b), seed


def test_train_compose_crop_boxes_follow_the_random_resized_crop_distribution() -> None:
    # crop area fraction uniform-ish in scale, and both flip outcomes, over many seeds (same draws as albumentations)
    fast = train_transform(8, (0.2, 1.0), (3 / 4, 4 / 3), 0.5)
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :32] = 255  # left half white: the mean of the output tells the crop and the flip apart
    means = [float(_run(fast, img, s)[:, :4].mean()) for s in range(400)]
    ref = A.Compose(list(fast.transforms), seed=0)
    assert means == [float(_run(ref, img, s)[:, :4].mean()) for s in range(400)]
    assert 0.3 < np.mean(np.array(means) > 127) < 0.7


def test_train_compose_falls_back_for_other_inputs() -> None:
    fast = train_transform(8, (0.5, 1.0), (3 / 4, 4 / 3), 0.5)
    gray = np.random.default_rng(1).integers(0, 256, (20, 20, 1), dtype=np.uint8)
    ref = A.Compose(list(fast.transforms), seed=0)
    assert np.array_equal(_run(fast, gray, 3), _run(ref, gray, 3))
    f32 = gray.astype(np.float32) / 255
    assert np.array_equal(_run(fast, f32, 3), _run(ref, f32, 3))


def test_dataset_samples_are_planar_contiguous_and_equal_to_the_permuted_image() -> None:
    imgs = np.random.default_rng(2).integers(0, 256, (5, 12, 10, 3), dtype=np.uint8)
    ds = ImageDataset(ArraySource(imgs, np.arange(5) % 2), None)
    for i in range(5):
        t = ds[i][0]
        assert t.is_contiguous() and torch.equal(t, torch.from_numpy(imgs[i]).permute(2, 0, 1))
    view = imgs[0][:, ::-1]  # negative stride: the generic path
    assert np.array_equal(to_planar(view), view.transpose(2, 0, 1))


def test_collate_in_a_worker_stacks_into_shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    # no real worker processes here: forking a test process that loaded other native libraries can hang
    imgs = np.random.default_rng(3).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    ds = ImageDataset(ArraySource(imgs, np.arange(4) % 3), train_transform(6, (0.5, 1.0), (3 / 4, 4 / 3), 0.5))
    items = [ds[(i, 0)] for i in range(4)]
    plain = collate(items)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    shared = collate(items)
    assert shared["images"].is_shared() and not plain["images"].is_shared()
    assert torch.equal(plain["images"], shared["images"]) and torch.equal(plain["targets"], shared["targets"])
    assert torch.equal(plain["images"][1], items[1][0])
    one = collate([items[0], (None, 1, 1, "bad")])
    assert one["images"].shape == (1, 3, 6, 6) and one["bad"] == [(1, "bad")]


@pytest.mark.parametrize("shape", [(3, 3, 5, 7), (2, 3, 32, 32), (5, 3, 224, 224)])
def test_cpu_normaliser_one_pass_matches_the_torch_formula(shape) -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    norm = DeviceNormalizer(mean, std, torch.device("cpu"))
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    ref = (x.float() - torch.tensor(mean).view(1, 3, 1, 1) * 255) / (torch.tensor(std).view(1, 3, 1, 1) * 255)
    out = norm(x)
    assert out.dtype == torch.float32 and out.is_contiguous() and out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(norm(x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)), ref, rtol=0, atol=1e-5)


def test_read_file_returns_the_bytes_and_names_the_error(tmp_path: Path) -> None:
    p = tmp_path / "a.bin"
    data = bytes(range(256)) * 3000
    p.write_bytes(data)
    assert read_file(p) == data and read_file(str(p)) == data
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert read_file(tmp_path / "empty.jpg") == b""
    with pytest.raises(BadImage, match="cannot read"):
        decode_file(tmp_path / "missing.jpg")


def test_cpu_normaliser_never_overwrites_a_batch_that_is_still_alive() -> None:
    norm = DeviceNormalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    xs = [torch.full((2, 3, 6, 6), v, dtype=torch.uint8) for v in (10, 200, 90, 30)]
    conv = torch.nn.Conv2d(3, 1, 3)
    out = norm(xs[0])
    kept_view, kept_np = norm(xs[1])[1:], norm(xs[2]).numpy()
    loss = conv(out).sum()  # autograd saves `out` itself
    saved = out.clone()
    del out
    for x in xs * 3:  # more batches than the pool holds
        norm(x)
    loss.backward()
    ref = conv.weight.grad.clone()
    conv.weight.grad = None
    conv(saved).sum().backward()
    assert torch.equal(conv.weight.grad, ref)
    assert torch.equal(kept_view, norm(xs[1])[1:]) and np.array_equal(kept_np, norm(xs[2]).numpy())
    a = norm(xs[3])
    ptr = a.data_ptr()
    del a
    assert norm(xs[3]).data_ptr() == ptr  # a freed batch's memory is reused


def _ref_gray(img: np.ndarray) -> np.ndarray:  # the straightforward formulas the fast ops replaced
    f = img.astype(np.float32)
    return np.floor(0.2989 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2])


def _ref_blend(img: np.ndarray, degenerate: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(factor * img.astype(np.float32) + (1.0 - factor) * degenerate, 0, 255).astype(np.uint8)


def _ref_op(name: str, img: np.ndarray, m: float) -> np.ndarray:
    import cv2

    if name == "Color":
        return _ref_blend(img, _ref_gray(img)[..., None], 1.0 + m)
    if name == "Contrast":
        f = 1.0 + m
        table = np.floor(f * np.arange(256, dtype=np.float32) + (1.0 - f) * float(_ref_gray(img).mean()))
        return cv2.LUT(img, np.clip(table, 0, 255).astype(np.uint8))
    if name == "Sharpness":
        kernel = np.ones((3, 3), np.float32)
        kernel[1, 1] = 5.0
        blurred = cv2.filter2D(img.astype(np.float32), -1, kernel / 13.0, borderType=cv2.BORDER_REFLECT)
        degenerate = img.astype(np.float32)
        degenerate[1:-1, 1:-1] = np.round(blurred[1:-1, 1:-1])
        return _ref_blend(img, degenerate, 1.0 + m)
    lo, hi = img.min(axis=(0, 1)).astype(np.float32), img.max(axis=(0, 1)).astype(np.float32)
    flat = hi == lo
    scale = np.where(flat, 1.0, 255.0 / np.where(flat, 1.0, hi - lo))
    return np.clip((img.astype(np.float32) - np.where(flat, 0.0, lo)) * scale, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["Color", "Contrast", "Sharpness", "AutoContrast"])
def test_fast_colour_ops_are_bit_identical_to_the_plain_formulas(name: str) -> None:
    from imgcls_cli.data.augment_ops import apply_op

    rng = np.random.default_rng(4)
    imgs = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((32, 32, 3), (17, 23, 3), (96, 80, 3), (1, 1, 3))]
    imgs.append(np.dstack([np.full((8, 8), 3, np.uint8), imgs[0][:8, :8, 1], np.full((8, 8), 255, np.uint8)]))
    imgs.append((imgs[2] // 4 + 60).astype(np.uint8))  # low contrast
    for img in imgs:
        for m in (-0.9, -0.3, 0.0, 0.45, 0.99):
            assert np.array_equal(apply_op(img, name, m), _ref_op(name, img, m)), (img.shape, m)


@pytest.mark.parametrize("autoaugment", ["imagenet", "randaugment", "trivialaugment"])
def test_autoaugment_samples_need_no_numpy_generator_and_equal_a_seeded_one(autoaugment) -> None:
    load_components()
    imgs = np.random.default_rng(5).integers(0, 256, (40, 30, 26, 3), dtype=np.uint8)
    tf = train_transform(24, (0.08, 1.0), (3 / 4, 4 / 3), 0.5, 0.0, autoaugment)
    assert not tf.needs_numpy_rng and train_transform(24, (0.08, 1.0), (3 / 4, 4 / 3), 0.5, 0.3).needs_numpy_rng
    ds = ImageDataset(ArraySource(imgs, np.arange(40) % 2), tf, seed=3)
    fast = [ds[(i, 1)][0] for i in range(40)]  # the data set hands the transforms no numpy Generator
    tf.needs_numpy_rng = True  # as before: a seeded Generator is built per sample (and never drawn from)
    assert all(torch.equal(a, ds[(i, 1)][0]) for i, a in enumerate(fast))


def test_cpu_normaliser_is_within_1e_5_of_the_torch_formula_for_every_uint8_value() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).repeat(2, 3, 1, 1)  # every value in every channel
    ref = (x.float() - torch.tensor(mean).view(1, 3, 1, 1) * 255) / (torch.tensor(std).view(1, 3, 1, 1) * 255)
    torch.testing.assert_close(DeviceNormalizer(mean, std, torch.device("cpu"))(x), ref, rtol=0, atol=1e-5)
