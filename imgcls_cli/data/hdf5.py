"""HDF5 packs: a whole image data set in one file (`imgcls pack DATA OUT.h5`, `--data OUT.h5`).

Layout (format version 1):

    /                attrs: format="imgcls-pack", version=1, mode="encoded"|"resized", size (resized),
                     class_names (JSON list), name, splits (JSON list), img_size, crop_scale, hflip,
                     mean, std (the source data set's defaults, so a pack trains like its folder)
    /<split>/images  encoded: (N,) vlen uint8 (the original file bytes, bit-exact);
                     resized: (N, S, S, 3) uint8 (shorter side resized to S, centre-cropped)
    /<split>/labels  (N,) int64
    /<split>/names   (N,) str, the file each image came from (relative to the source root)

Worker safety: a `HDF5Source` never pickles an open handle; it opens the file lazily, once per
process (the pid is checked on every load), so DataLoader workers started with fork or spawn each
read through their own handle.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .decode import BadImage, decode_bytes
from .sources import DataBundle, FolderSource, Source, SubsetSource

FORMAT = "imgcls-pack"
VERSION = 1
MODES = {"encoded": "encoded", "resized": "resized", "raw": "resized"}  # "raw" is the CLI spelling


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise DataError("--data *.h5: h5py is not installed (pip install h5py)") from None
    return h5py


class HDF5Source(Source):
    """One split of a pack; `load(i)` decodes (encoded mode) or returns the stored array."""

    def __init__(self, path: Path, split: str, labels: np.ndarray, mode: str, decoder: str = "auto"):
        self.path, self.split, self.mode, self.decoder = Path(path), split, mode, decoder
        self.labels = np.asarray(labels, dtype=np.int64)
        self._file: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, -1  # never pickle an open handle (spawn workers)
        return state

    def _group(self) -> Any:
        if self._file is None or self._pid != os.getpid():  # first use in this process (or a forked child)
            self._file = _h5py().File(self.path, "r")
            self._pid = os.getpid()
        return self._file[self.split]

    def load(self, i: int) -> np.ndarray:
        data = self._group()["images"][int(i)]
        if self.mode == "resized":
            return np.asarray(data, dtype=np.uint8)  # (S, S, 3)
        return decode_bytes(data.tobytes(), self.describe(i), self.decoder)  # (H, W, 3)

    def raw_bytes(self, i: int) -> bytes:
        """The stored bytes of image i (encoded mode): equal to the source file's bytes."""
        return self._group()["images"][int(i)].tobytes()

    def encoded(self, i: int) -> bytes | None:
        return self.raw_bytes(i) if self.mode == "encoded" else None  # resized packs store pixels

    def describe(self, i: int) -> str:
        name = self._group()["names"][int(i)]
        return f"{self.path}:{self.split}/{name.decode() if isinstance(name, bytes) else name}"

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid = None, -1


def open_hdf5(path: Path, val_split: str | None, decoder: str = "auto") -> DataBundle:
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--data {path}: no such file (make one with `imgcls pack DATA {path}`)")
    try:
        with h5py.File(path, "r") as f:
            a = dict(f.attrs)
            if a.get("format") != FORMAT:
                raise DataError(f"--data {path}: not an imgcls pack (no '{FORMAT}' format attribute)")
            if int(a.get("version", 0)) > VERSION:
                raise DataError(f"--data {path}: pack format version {a['version']} is newer than this imgcls"
                                f" reads ({VERSION}); upgrade imgcls")
            splits = json.loads(a["splits"])
            labels = {s: np.asarray(f[s]["labels"][:], dtype=np.int64) for s in splits}
    except OSError as e:
        raise DataError(f"--data {path}: not a readable HDF5 file ({str(e).splitlines()[0][:100]})") from None
    if "train" not in splits:
        raise DataError(f"--data {path}: the pack has no train split (splits: {', '.join(splits)})")
    mode = str(a["mode"])
    held = {s: HDF5Source(path, s, labels[s], mode, decoder) for s in ("val", "test") if s in splits}
    if val_split and val_split not in held:
        raise DataError(f"--split {val_split}: not in the pack {path} (splits: {', '.join(splits)})")
    chosen = val_split or ("test" if "test" in held else "val" if "val" in held else None)
    val = held.pop(chosen, None)
    train = HDF5Source(path, "train", labels["train"], mode, decoder)
    return DataBundle(name=str(a.get("name", path.stem)), train=train, val=val,
                      class_names=list(json.loads(a["class_names"])), img_size=int(a["img_size"]),
                      crop_scale=tuple(float(v) for v in a["crop_scale"]), hflip=float(a["hflip"]),
                      val_split=chosen, other_splits=held,
                      aug_preset=str(a.get("aug_preset", "")) or None,
                      mean=tuple(float(v) for v in a["mean"]), std=tuple(float(v) for v in a["std"]))


def _file_and_name(src: Source, i: int, root: Path | None) -> tuple[Path | None, str]:
    """The file behind item i of a (possibly subset) folder source, and its name in the pack."""
    while isinstance(src, SubsetSource):
        src, i = src.base, int(src.indices[i])
    if isinstance(src, FolderSource):
        f = Path(src.files[i])
        try:
            return f, str(f.relative_to(root)) if root else f.name
        except ValueError:
            return f, f.name
    return None, f"#{i}"


def _png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")  # lossless, for sources without files (digits)
    return buf.getvalue()


def _resize_square(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)  # (nh, nw, 3)
    y, x = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(img[y:y + size, x:x + size])  # (size, size, 3)


def _write_split(f: Any, split: str, src: Source, mode: str, size: int | None, root: Path | None,
                 skipped: list[str]) -> int:
    h5py = _h5py()
    n = len(src)
    images: list[Any] = []
    labels, names = [], []
    for i in range(n):
        file, name = _file_and_name(src, i, root)
        if mode == "encoded":
            try:
                item: Any = np.frombuffer(file.read_bytes() if file else _png_bytes(src.load(i)), dtype=np.uint8)
            except (OSError, BadImage) as e:
                skipped.append(f"{src.describe(i)}: {e}")
                continue
        else:
            try:
                item = _resize_square(src.load(i), int(size or 0))
            except BadImage as e:  # a resized pack cannot hold an undecodable file
                skipped.append(f"{src.describe(i)}: {e}")
                continue
        images.append(item)
        labels.append(int(src.labels[i]))
        names.append(name)
    g = f.create_group(split)
    if mode == "encoded":
        ds = g.create_dataset("images", (len(images),), dtype=h5py.vlen_dtype(np.uint8))
        for j, item in enumerate(images):
            ds[j] = item
    else:
        arr = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)  # (N, S, S, 3)
        g.create_dataset("images", data=arr, chunks=(1, size, size, 3) if len(images) else None)
    g.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
    g.create_dataset("names", data=np.asarray(names, dtype=object), dtype=h5py.string_dtype())
    return len(images)


def pack_folder(src: str | Path, out_h5: str | Path, mode: str = "encoded", size: int | None = None,
                decoder: str = "auto", overwrite: bool = False) -> dict[str, Any]:
    """Pack a data set (image-folder tree or `digits`) into one HDF5 file; returns a report.

    encoded: the original file bytes (bit-exact round trip); resized: uint8 (S, S, 3) arrays.
    The file is written beside `out_h5` and renamed into place when complete.  An existing `out_h5` is
    replaced only with `overwrite=True`, and its folder must exist (a mistyped path creates nothing).
    """
    from ..config import DataConfig
    from .sources import open_data

    h5py = _h5py()
    if mode not in MODES:
        raise DataError(f"--mode {mode}: unknown pack mode; valid: encoded, raw")
    mode = MODES[mode]
    if mode == "resized" and (size is None or size < 8):
        raise DataError("--size: --mode raw stores square uint8 arrays and needs --size N (N >= 8)")
    if mode == "encoded" and size is not None:
        raise DataError(f"--size {size}: only --mode raw resizes; --mode encoded keeps each file's bytes and size"
                        f" (valid: --mode raw --size {size}, or no --size)")
    out = Path(out_h5)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise DataError(f"OUT {out}: a pack must end in .h5 or .hdf5")
    if out.is_dir():
        raise DataError(f"OUT {out}: is a folder; give the pack's file name, e.g. {out / 'data.h5'}")
    if out.exists() and not overwrite:
        raise DataError(f"OUT {out}: exists; pass --overwrite to replace it, or choose another file")
    if not out.parent.is_dir():
        raise DataError(f"OUT {out}: folder {out.parent} does not exist; create it first (nothing is created"
                        f" besides the pack)")
    bundle = open_data(DataConfig(path=str(src), decoder=decoder, select_split="none"))  # every training image
    root = Path(src) if Path(src).is_dir() else None
    splits = [("train", bundle.train)] + ([(bundle.val_split or "val", bundle.val)] if bundle.val is not None else [])
    splits += sorted(bundle.other_splits.items())
    tmp = out.with_name(f".{out.name}.tmp.{os.getpid()}")
    skipped: list[str] = []
    counts: dict[str, int] = {}
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"format": FORMAT, "version": VERSION, "mode": mode, "size": int(size or 0),
                            "name": bundle.name, "class_names": json.dumps(bundle.class_names),
                            "splits": json.dumps([s for s, _ in splits]), "img_size": int(bundle.img_size),
                            "crop_scale": list(bundle.crop_scale), "hflip": float(bundle.hflip),
                            "aug_preset": bundle.aug_preset or "",
                            "mean": list(bundle.mean), "std": list(bundle.std)})
            for split, source in splits:
                counts[split] = _write_split(f, split, source, mode, size, root, skipped)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"out": str(out), "mode": mode, "size": size, "counts": counts, "classes": len(bundle.class_names),
            "skipped": skipped, "bytes": out.stat().st_size}


__all__ = ["FORMAT", "VERSION", "HDF5Source", "open_hdf5", "pack_folder"]
