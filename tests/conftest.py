"""Shared fixtures: the real data beside the checkout, tiny synthetic folders, isolation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IMGCLS_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(name: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA / name
    if not p.is_dir():
        pytest.skip(f"real data {p} is absent (it lives in ../shared/data beside the checkout)")
    return p


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder so runs/ never leaks between tests."""
    monkeypatch.chdir(tmp_path)


def make_folder_dataset(root: Path, classes: int = 3, train: int = 8, val: int = 4, size: int = 32,
                        seed: int = 0, ext: str = ".jpg") -> Path:
    """Synthetic image-folder tree: class c is a bright square of colour c on noise (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (200, 40, 200), (40, 200, 200)]
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                s = size // 2
                y0, x0 = rng.integers(0, size - s, 2)
                img[y0:y0 + s, x0:x0 + s] = colours[c % len(colours)]
                Image.fromarray(img).save(d / f"{i:03d}{ext}", quality=95)
    return root


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return make_folder_dataset(tmp_path / "tiny")


def quick_overrides(**extra: object) -> dict[str, object]:
    """Dotted overrides for a seconds-long CPU training run."""
    base: dict[str, object] = {
        "model.backbone": "resnet20", "train.epochs": 1, "train.batch_size": 16, "data.workers": 0,
        "train.progress": False, "train.device": "cpu",
        # no carved selection split: these runs test other things on a few images (tests/test_protocol.py tests it)
        "data.select_split": "none",
    }
    base.update(extra)
    return base
