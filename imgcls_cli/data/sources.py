"""Image sources: an indexable set of (uint8 RGB image, label) with no transforms.

`open_data(cfg.data)` returns a `DataBundle` (train, reported and selection sources, class names,
training class counts and the data set's defaults for image size and augmentation).  Folder trees
(`ROOT/train/<class>/`, `ROOT/val/` and/or `ROOT/test/`), the built-in `digits`, named torchvision
data sets (cifar10, cifar100) and HDF5 packs are supported.

Two held-out roles, never the same images:
- the *reported* split (`bundle.val`, `data.val_split`): what `imgcls eval` and a run's
  `final_eval.json` report; test/ when a tree has val/ and test/.
- the *selection* split (`bundle.select`, `data.select_split`): where the best checkpoint, tau and
  any auto-tuned value are chosen.  The tree's val/ when test/ is reported; otherwise `carve`:
  `data.carve_per_class` images a class (at most a fifth of the class), drawn with
  `data.carve_seed` from the training images a long-tailed / capped subset leaves unused where a
  class has enough of them, else from the training images themselves (which then train without
  them).  CIFAR-10 has no validation split, so this is how one is made (ImageNet-LT's val has 20
  images a class).
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
    aug_preset: str | None = None  # None: `default_preset(img_size)`
    other_splits: dict[str, Source] = field(default_factory=dict)  # held-out splits that are not reported
    select: Source | None = None
    select_split: str | None = None  # "val" | "carve" | None
    select_indices: np.ndarray | None = None  # carve: the held-out images, as indices into the full training split
    notes: list[str] = field(default_factory=list)  # one-line warnings for whoever shows the data set (trainer)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> list[int]:
        return np.bincount(self.train.labels, minlength=self.num_classes).tolist()


def default_preset(img_size: int) -> str:
    """CIFAR-sized data (<= 64 px) trains with the CIFAR protocol's pad-and-crop, larger data with the
    random-resized crop."""
    return "pad_crop" if img_size <= 64 else "random_resized_crop"


def native_size(files: list[Path], n: int = 16) -> int | None:
    """The median shorter side of `n` images spread over `files` (headers only), or None if none is readable."""
    from PIL import Image

    sides = []
    for f in files[:: max(1, len(files) // n)][:n]:
        try:
            with Image.open(f) as im:
                sides.append(min(im.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return int(np.median(sides)) if sides else None


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
    held = {s: FolderSource(*scan_split(root, s, classes)[:2], decoder) for s in ("val", "test") if (root / s).is_dir()}
    if val_split and val_split not in held:
        raise DataError(f"--split {val_split}: {root / val_split} does not exist")
    chosen = val_split or ("test" if "test" in held else "val" if "val" in held else None)
    # images up to 224 px are trained at their own size (no silent upscaling); larger ones at 224
    size = min(native_size(files) or 224, 224)
    return DataBundle(name=root.name, train=FolderSource(files, labels, decoder), val=held.pop(chosen, None),
                      class_names=classes, img_size=size, crop_scale=(0.08, 1.0), hflip=0.5, val_split=chosen,
                      other_splits=held)


def open_digits(val_split: str | None = None) -> DataBundle:
    """digits: train / val / test as a folder tree with all three (test reported, val for selection)."""
    from .digits import load_digits_arrays

    splits, names = load_digits_arrays()
    chosen = val_split or "test"
    if chosen not in ("val", "test"):
        raise DataError(f"--split {chosen}: digits has the held-out splits val and test (valid: val, test)")
    other = "val" if chosen == "test" else "test"
    # digits: the CIFAR-style pad-and-crop (4 px) without flips (a mirrored digit is another glyph), evaluated as it
    # is; a random-resized crop cut strokes off and a 0.875 centre crop the digits' edges (docs/benchmarks.md)
    return DataBundle(name="digits", train=ArraySource(*splits["train"]), val=ArraySource(*splits[chosen]),
                      class_names=names, img_size=32, crop_scale=(0.5, 1.0), hflip=0.0, val_split=chosen,
                      other_splits={other: ArraySource(*splits[other])}, aug_preset="pad_crop")


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
        bundle = open_digits(cfg.val_split)
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
    if cfg.val_split and cfg.val_split != bundle.val_split:  # a fixed held-out split (cifar: test)
        raise DataError(f"--split {cfg.val_split}: {path} has one held-out split (valid: {bundle.val_split})")
    keep = None
    if cfg.imbalance_ratio or cfg.max_train_per_class:
        from .longtail import longtail_indices

        keep = longtail_indices(bundle.train.labels, bundle.num_classes, ratio=cfg.imbalance_ratio or 1.0,
                                profile=cfg.imbalance_profile, max_per_class=cfg.max_train_per_class)
    choose_selection(bundle, cfg, keep)
    if cfg.imbalance_ratio:
        note = _ratio_note(cfg.imbalance_ratio, bundle)
        if note:
            bundle.notes.append(note)
    return bundle


def resolve_select(requested: str, bundle: DataBundle) -> str:
    """`auto` -> val when the tree has a val/ that is not the reported split, else carve (none without a reported
    split: nothing is reported, so there is nothing to keep apart)."""
    if requested != "auto":
        return requested
    if "val" in bundle.other_splits:
        return "val"
    return "carve" if bundle.val is not None else "none"


def carve_indices(labels: np.ndarray, num_classes: int, keep: np.ndarray | None, per_class: int,
                  seed: int) -> np.ndarray:
    """Indices (into `labels`, the full training split) of the carved selection split: for each class
    `per_class` images drawn from the images `keep` leaves out where the class has that many, else
    min(per_class, n_c // 5) of its n_c kept training images.  Seeded by `seed` alone: the same for every run."""
    rng = np.random.default_rng(seed)
    kept = np.zeros(len(labels), bool)
    kept[np.arange(len(labels)) if keep is None else keep] = True
    out = []
    for c in range(num_classes):
        in_c = labels == c
        unused = np.flatnonzero(in_c & ~kept)
        if len(unused) >= per_class:
            pool, k = unused, per_class
        else:
            pool = np.flatnonzero(in_c & kept)
            k = min(per_class, len(pool) // 5)
        out.append(rng.choice(pool, size=k, replace=False) if k else np.zeros(0, np.int64))
    return np.sort(np.concatenate(out)).astype(np.int64)


def choose_selection(bundle: DataBundle, cfg: Any, keep: np.ndarray | None) -> None:
    """Set the bundle's training subset and its selection split (see the module docstring)."""
    mode = resolve_select(cfg.select_split, bundle)
    full = bundle.train
    if mode == "val":
        if "val" not in bundle.other_splits:
            raise DataError(f"data.select_split=val: {cfg.path} has no val split apart from the reported"
                            f" {bundle.val_split!r} (valid: carve, none)")
        bundle.select = bundle.other_splits["val"]
    elif mode == "carve":
        sel = carve_indices(full.labels, bundle.num_classes, keep, cfg.carve_per_class, cfg.carve_seed)
        base = np.arange(len(full.labels)) if keep is None else keep
        keep = np.setdiff1d(base, sel)  # sorted; images carved from the kept ones no longer train
        bundle.select, bundle.select_indices = full.subset(sel), sel
    if keep is not None:
        bundle.train = full.subset(keep)
    bundle.select_split = mode if mode != "none" else None


def _ratio_note(want: float, bundle: DataBundle) -> str | None:
    """A line when the long-tailed subset's real ratio (largest / smallest class) is not the requested one:
    a class with fewer images than its profile count keeps them all, so an early class can cap the ratio."""
    counts = np.asarray(bundle.class_counts())
    present = counts[counts > 0]
    if len(present) < 2:
        return None
    real = float(present.max() / present.min())
    if abs(real - want) <= 0.05 * want:  # floor() of the profile counts alone moves it a little
        return None
    return (f"--imbalance-ratio {want:g}: the training subset's ratio is {real:.1f} (largest class"
            f" {int(present.max())} images, smallest {int(present.min())}), not {want:g}: a class with fewer"
            f" images than the profile asks keeps what it has")
