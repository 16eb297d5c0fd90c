"""AutoAugment family (imgcls_cli.data.autoaugment): policy tables, ops vs torchvision, determinism."""

from __future__ import annotations

import random

import albumentations as A
import numpy as np
import pytest
import torch
from torchvision.transforms import AutoAugment as TVAutoAugment
from torchvision.transforms import AutoAugmentPolicy, InterpolationMode
from torchvision.transforms.autoaugment import RandAugment as TVRandAugment
from torchvision.transforms.autoaugment import TrivialAugmentWide as TVTrivial
from torchvision.transforms.autoaugment import _apply_op

from imgcls_cli.config import load_components
from imgcls_cli.data.augment_ops import apply_op, magnitude_bins
from imgcls_cli.data.autoaugment import RandAugment
from imgcls_cli.data.autoaugment_policies import POLICIES
from imgcls_cli.registry import AUTOAUGMENT

from .conftest import shared


def _photo() -> np.ndarray:
    """A real photo (cam_demo) at a non-square size, or skip."""
    import cv2

    from imgcls_cli.data.decode import decode_file

    return cv2.resize(decode_file(shared("cam_demo") / "dog_beagle.jpg"), (96, 72), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("policy", list(AutoAugmentPolicy))
def test_policy_tables_equal_torchvision(policy: AutoAugmentPolicy) -> None:
    ref = TVAutoAugment(policy)._get_policies(policy)
    assert [tuple(map(tuple, sp)) for sp in POLICIES[policy.value]] == [tuple(map(tuple, sp)) for sp in ref]


@pytest.mark.parametrize("num_bins,wide,ref", [(10, False, TVAutoAugment()), (31, False, TVRandAugment()),
                                                (31, True, TVTrivial())])
def test_magnitude_bins_equal_torchvision(num_bins: int, wide: bool, ref: torch.nn.Module) -> None:
    h, w = 72, 96
    space = ref._augmentation_space(num_bins, (h, w)) if not wide else ref._augmentation_space(num_bins)
    for op, (mags, signed) in space.items():
        mine, my_signed = magnitude_bins(op, num_bins, h, w, wide=wide)
        assert my_signed == signed, op
        np.testing.assert_allclose(mine, mags.double().numpy() if mags.ndim else np.zeros(num_bins), atol=1e-5,
                                   err_msg=op)


def test_randaugment_op_list_equals_torchvision() -> None:
    assert list(TVRandAugment()._augmentation_space(31, (32, 32))) == list(RandAugment.OPS)


OPS_CASES = [("ShearX", 0.3), ("ShearX", -0.2), ("ShearY", 0.25), ("TranslateX", 20.7), ("TranslateY", -13.0),
             ("Rotate", 30.0), ("Rotate", -17.0), ("Brightness", 0.5), ("Brightness", -0.6), ("Color", 0.7),
             ("Color", -0.5), ("Contrast", 0.8), ("Contrast", -0.5), ("Sharpness", 0.9), ("Sharpness", -0.9),
             ("Posterize", 4), ("Posterize", 6), ("Solarize", 128.0), ("Solarize", 255.0), ("AutoContrast", 0.0),
             ("Equalize", 0.0), ("Invert", 0.0), ("Identity", 0.0)]


@pytest.mark.parametrize("op,m", OPS_CASES)
def test_ops_match_torchvision_functional(op: str, m: float) -> None:
    img = _photo()
    t = torch.from_numpy(img).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
    ref = _apply_op(t, op, m, InterpolationMode.NEAREST, [0.0, 0.0, 0.0]).permute(1, 2, 0).numpy()  # (H, W, 3)
    out = apply_op(img, op, m)
    assert out.dtype == np.uint8 and out.shape == img.shape
    diff = np.abs(ref.astype(np.int16) - out.astype(np.int16))
    # colour ops agree to the last bit; nearest-neighbour warps may differ at exact half-pixel ties
    assert (diff > 1).mean() <= 0.05, f"{op}({m}): {(diff > 1).mean():.3f} of pixels differ"
    if op not in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        assert diff.max() <= 1


@pytest.mark.parametrize("name", ["imagenet", "cifar10", "svhn", "randaugment", "trivialaugment"])
def test_policies_are_reproducible_given_the_seed(name: str) -> None:
    load_components()
    img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    t = A.Compose([AUTOAUGMENT.get(name)()], seed=0)

    def run(seed: int) -> list[np.ndarray]:
        t.set_random_state(np.random.default_rng(seed), random.Random(seed))
        return [t(image=img)["image"] for _ in range(8)]

    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c, strict=True))
    assert all(u.dtype == np.uint8 and u.shape == img.shape for u in a)
    assert any(not np.array_equal(u, img) for u in a)  # it does augment


def test_autoaugment_sub_policy_frequencies() -> None:
    """Each ImageNet step is applied with its probability: Invert is in 3 of the 25 sub-policies, each with p 0.6."""
    load_components()
    t = AUTOAUGMENT.get("imagenet")()
    t.set_random_state(np.random.default_rng(0), random.Random(0))
    n = 5000
    inverts = sum(any(op == "Invert" for op, _ in t.sample_ops(32, 32)) for _ in range(n))
    assert sum(step[0] == "Invert" for sp in POLICIES["imagenet"] for step in sp) == 3
    expect = n * 3 / 25 * 0.6
    assert abs(inverts - expect) < 4 * np.sqrt(expect)


def test_train_pipeline_with_autoaugment_stays_uint8() -> None:
    load_components()
    from imgcls_cli.data.transforms import train_transform

    tf = train_transform(32, (0.5, 1.0), (3 / 4, 4 / 3), 0.5, 0.2, "randaugment")
    img = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    out = tf(image=img)["image"]
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)


def test_unknown_policy_error_lists_valid_names() -> None:
    from imgcls_cli.config import build_config
    from imgcls_cli.errors import ImgclsError

    with pytest.raises(ImgclsError, match="autoaugment.*valid: .*imagenet"):
        build_config(overrides={"aug.autoaugment": "imagnet"})


def test_equalize_equals_torchvision_on_flat_and_sparse_histograms() -> None:
    from torchvision.transforms.functional import equalize as tv_equalize

    from imgcls_cli.data.augment_ops import equalize

    rng = np.random.default_rng(0)
    for k in range(30):
        img = (rng.integers(0, 256, (20, 30, 3)) // rng.integers(1, 120)).astype(np.uint8)
        if k % 5 == 0:
            img[..., 1] = 7  # a flat channel stays unchanged
        ref = tv_equalize(torch.from_numpy(img).permute(2, 0, 1).contiguous()).permute(1, 2, 0).numpy()
        assert np.array_equal(equalize(img), ref), k
