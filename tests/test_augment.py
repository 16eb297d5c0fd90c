"""Augmentation end to end: seeded train pipeline, preview grid, and Mixup+CutMix training on digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imgcls_cli.config import build_config
from imgcls_cli.data.dataset import ImageDataset
from imgcls_cli.data.sources import open_data
from imgcls_cli.data.transforms import transforms_from_config
from imgcls_cli.engine.setup import resolve_config

from .conftest import quick_overrides


def _train_set(folder: Path, **aug: object) -> ImageDataset:
    ov = {"data.path": str(folder), "data.img_size": 24, **{f"aug.{k}": v for k, v in aug.items()}}
    cfg = build_config(overrides=ov)
    bundle = open_data(cfg.data)
    cfg = resolve_config(cfg, bundle, torch.device("cpu"))
    train_tf, _ = transforms_from_config(cfg, bundle)
    return ImageDataset(bundle.train, train_tf, seed=cfg.train.seed)


def test_train_pipeline_with_autoaugment_is_seeded_per_sample(tiny_folder: Path) -> None:
    ds = _train_set(tiny_folder, autoaugment="imagenet", color_jitter=0.3)
    a = [ds[(i, 0)][0] for i in range(6)]
    b = [ds[(i, 0)][0] for i in reversed(range(6))][::-1]  # other order: same per-sample result
    c = [ds[(i, 1)][0] for i in range(6)]  # next epoch: different
    assert all(t.dtype == torch.uint8 and t.shape == (3, 24, 24) for t in a)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(u, v) for u, v in zip(a, c, strict=True))


def test_preview_grid_writes_a_png_with_mixing(tiny_folder: Path, tmp_path: Path) -> None:
    from PIL import Image

    from imgcls_cli.viz.preview import augmented_batch, preview_grid

    cfg = build_config(overrides={"data.path": str(tiny_folder), "data.img_size": 24, "aug.cutmix": 1.0,
                                  "aug.autoaugment": "trivialaugment"})
    images, titles = augmented_batch(cfg, n=8, seed=3)
    assert images.shape == (8, 24, 24, 3) and images.dtype == np.uint8 and len(titles) == 8
    assert "cutmix" in titles[0]
    images2, _ = augmented_batch(cfg, n=8, seed=3)
    assert np.array_equal(images, images2)
    out = preview_grid(cfg, tmp_path / "sub" / "grid.png", n=8)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_preview_without_mixing_equals_the_dataset_images(tiny_folder: Path) -> None:
    from imgcls_cli.viz.preview import augmented_batch

    cfg = build_config(overrides={"data.path": str(tiny_folder), "data.img_size": 24})
    images, titles = augmented_batch(cfg, n=4, seed=0)
    ds = _train_set(tiny_folder)
    idx = np.random.default_rng(0).choice(len(ds), size=4, replace=False)
    for k, i in enumerate(idx):
        assert np.array_equal(images[k], ds[(int(i), 0)][0].permute(1, 2, 0).numpy())
        assert titles[k] == f"class_{ds.source.labels[int(i)]}"


@pytest.mark.slow
def test_digits_with_mixup_and_cutmix_reaches_90_percent() -> None:
    import imgcls_cli

    res = imgcls_cli.train(**quick_overrides(**{
        "aug.mixup": 0.2, "aug.cutmix": 1.0, "train.epochs": 5, "train.batch_size": 32,
        "optim.name": "sgd", "optim.lr": 0.1,
        "data.img_size": 16}))
    assert res.config.aug.mixup == 0.2 and res.config.aug.cutmix == 1.0
    assert res.final["top1"] >= 90.0, res.final  # the held-out digits test split


def test_normalizer_matches_the_formula_and_leaves_its_input_alone() -> None:
    from imgcls_cli.data.loader import DeviceNormalizer

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    u8 = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    keep = u8.clone()
    x = DeviceNormalizer(mean, std, torch.device("cpu"))(u8)
    ref = (u8.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, ref)
    assert torch.equal(u8, keep)
    f = u8.float()
    DeviceNormalizer(mean, std, torch.device("cpu"))(f)
    assert torch.equal(f, keep.float())  # a float input is not normalised in place either
    # the device path (here: a uint8 batch the CPU table does not take) writes the model's memory format in one pass
    norm = DeviceNormalizer(mean, std, torch.device("cpu"))
    norm.memory_format = torch.channels_last  # as on CUDA with train.channels_last
    y = norm(u8.to(memory_format=torch.channels_last))
    torch.testing.assert_close(y, ref)
    assert y.dtype == torch.float32 and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(u8, keep)
