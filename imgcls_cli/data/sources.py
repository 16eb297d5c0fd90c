"""Image sources: an indexable set of (uint8 RGB image, label) with no transforms.

`open_data(cfg.data)` returns a `DataBundle` (train and validation sources, class names, training
class counts and the data set's defaults for image size and augmentation).  Folder trees
(`ROOT/train/<class>/`, `ROOT/val/` or `ROOT/test/`), the built-in `digits`, named torchvision
data sets (cifar10, cifar100) and HDF5 packs are supported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .decode import IMAGE_EXTS, BadImage, decode_file, read_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Source:
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> np.ndarray:  # (H, W, 3) uint8; raises BadImage
        raise NotImplementedError  # abstract: every concrete source overrides it

    def describe(self, i: int) -> str:
        return f"#{i}"

    def encoded(self, i: int) -> bytes | None:
        """The stored file bytes of image i, or None when the source holds decoded pixels; raises BadImage."""
        return None

    def subset(self, indices: np.ndarray) -> Source:
        return SubsetSource(self, np.asarray(indices, dtype=np.int64))


class SubsetSource(Source):
    def __init__(self, base: Source, indices: np.ndarray):
        self.base, self.indices = base, indices
        self.labels = base.labels[indices]

    def load(self, i: int) -> np.ndarray:
        return self.base.load(int(self.indices[i]))

    def describe(self, i: int) -> str:
        return self.base.describe(int(self.indices[i]))

    def encoded(self, i: int) -> bytes | None:
        return self.base.encoded(int(self.indices[i]))


class ArraySource(Source):
    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)  # images (N, H, W, 3) uint8

    def load(self, i: int) -> np.ndarray:
        return self.images[i]


class FolderSource(Source):
    def __init__(self, files: list[Path], labels: list[int], decoder: str = "auto"):
        self.files, self.labels, self.decoder = files, np.asarray(labels, dtype=np.int64), decoder

    def load(self, i: int) -> np.ndarray:
        return decode_file(self.files[i], self.decoder)

    def describe(self, i: int) -> str:
        return str(self.files[i])

    def encoded(self, i: int) -> bytes:
        try:
            return read_file(self.files[i])
        except OSError as e:
            raise BadImage(f"cannot read ({e.strerror})") from None  # decode_file's reason


@dataclass
class DataBundle:
    name: str
    train: Source
    val: Source | None
    class_names: list[str]
    img_size: int
    crop_scale: tuple[float, float]
    hflip: float
    val_split: str | None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> list[int]:
        return np.bincount(self.train.labels, minlength=self.num_classes).tolist()


def _walk_files(top: Path) -> list[Path]:
    """Every file below `top`, through linked sub-folders too (Path.rglob skips those before Python 3.13,
    which silently dropped their images).  A link to a folder already walked, or to one that contains the
    current folder (a cycle, e.g. `loop -> ..`, which would pull in other classes), is not entered."""
    seen: set[str] = set()
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        seen.add(real)
        keep = []
        for n in dirnames:
            target = os.path.realpath(os.path.join(dirpath, n))
            if target not in seen and not (real + os.sep).startswith(target.rstrip(os.sep) + os.sep):
                keep.append(n)
                seen.add(target)
        dirnames[:] = keep
        out += [Path(dirpath) / f for f in filenames]
    return out


def scan_split(root: Path, split: str, class_names: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    d = root / split
    classes = class_names or sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"--data {root}: {split}/ has no class folders (expected {split}/<class>/*.jpg)")
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for c in sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if c not in index:
            raise DataError(f"--data {root}: {split}/{c} is not a class of the training split")
        found = sorted(f for f in _walk_files(d / c) if f.suffix.lower() in IMAGE_EXTS and f.is_file())
        if not found and split == "train":
            raise DataError(f"--data {root}: class folder {split}/{c} has no images ({', '.join(sorted(IMAGE_EXTS))})")
        files += found
        labels += [index[c]] * len(found)
    return files, labels, classes


def open_folder(root: Path, val_split: str | None, decoder: str, class_names: list[str] | None = None) -> DataBundle:
    if not (root / "train").is_dir() and class_names is None:
        raise DataError(f"--data {root}: no train/ folder (expected train/<class>/ and val/<class>/ or test/<class>/)")
    if (root / "train").is_dir():
        files, labels, classes = scan_split(root, "train")
    else:  # held-out data only (evaluating a checkpoint): the classes are the checkpoint's
        files, labels, classes = [], [], list(class_names or [])
    splits = [val_split] if val_split else ["val", "test"]
    val = None
    chosen = None
    for s in splits:
        if (root / s).is_dir():
            vf, vl, _ = scan_split(root, s, classes)
            val, chosen = FolderSource(vf, vl, decoder), s
            break
    if val_split and val is None:
        raise DataError(f"--split {val_split}: {root / val_split} does not exist")
    return DataBundle(name=root.name, train=FolderSource(files, labels, decoder), val=val, class_names=classes,
                      img_size=224, crop_scale=(0.08, 1.0), hflip=0.5, val_split=chosen)


def open_digits() -> DataBundle:
    from .digits import load_digits_arrays

    xtr, ytr, xva, yva, names = load_digits_arrays()
    return DataBundle(name="digits", train=ArraySource(xtr, ytr), val=ArraySource(xva, yva), class_names=names,
                      img_size=32, crop_scale=(0.5, 1.0), hflip=0.0, val_split="val")


def open_torchvision(name: str, cache_dir: str) -> DataBundle:
    import torchvision

    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    root = Path(cache_dir).expanduser() / name
    try:
        tr = cls(str(root), train=True, download=True)
        te = cls(str(root), train=False, download=True)
    except Exception as e:  # offline: URLError / socket errors / checksum errors
        raise DataError(
            f"--data {name}: not in {root} and could not be downloaded ({type(e).__name__}); "
            f"connect once, or pass an image-folder tree"
        ) from None
    return DataBundle(name=name, train=ArraySource(np.asarray(tr.data), np.asarray(tr.targets)),
                      val=ArraySource(np.asarray(te.data), np.asarray(te.targets)), class_names=list(tr.classes),
                      img_size=32, crop_scale=(0.35, 1.0), hflip=0.5, val_split="test")


def open_data(cfg: Any, class_names: list[str] | None = None) -> DataBundle:
    """Open the data set named by a `DataConfig` (long-tail subsetting applied).  With `class_names` (a
    checkpoint's, for evaluation) a folder tree may hold only its held-out split (val/ or test/)."""
    path = cfg.path
    if path == "digits":
        bundle = open_digits()
    elif path in ("cifar10", "cifar100"):
        bundle = open_torchvision(path, cfg.cache_dir)
    else:
        p = Path(path).expanduser()
        if p.suffix.lower() in (".h5", ".hdf5"):
            from .hdf5 import open_hdf5

            bundle = open_hdf5(p, cfg.val_split)
        elif p.is_dir():
            bundle = open_folder(p, cfg.val_split, cfg.decoder, class_names)
        else:
            raise DataError(f"--data {path}: no such folder or file (give an image-folder tree, an .h5 pack, "
                            f"or one of: digits, cifar10, cifar100)")
    if cfg.val_split and cfg.val_split != bundle.val_split:  # fixed held-out splits (digits: val, cifar: test)
        raise DataError(f"--split {cfg.val_split}: {path} has one held-out split (valid: {bundle.val_split})")
    if cfg.imbalance_ratio or cfg.max_train_per_class:
        from .longtail import longtail_indices

        idx = longtail_indices(bundle.train.labels, bundle.num_classes, ratio=cfg.imbalance_ratio or 1.0,
                               profile=cfg.imbalance_profile, max_per_class=cfg.max_train_per_class)
        bundle.train = bundle.train.subset(idx)
    return bundle
