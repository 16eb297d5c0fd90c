"""`data.decode=device`: JPEG decode, random-resized crop and flip of training batches on the device.

Loader workers only read the file bytes, parse the JPEG frame header for the image size and draw
the crop box and flip from the per-(seed, epoch, index) generator, with the same `TrainCompose`
draws as the worker path (`TrainCompose.draw_crop_flip`), so both paths crop the same boxes.  The
main process decodes the batch's JPEGs in one `torchvision.io.decode_jpeg(list, device=...)` call
(nvJPEG on CUDA, libjpeg-turbo on the CPU), crops, resizes with bilinear interpolation as the CPU
path's cv2.INTER_LINEAR does (no antialiasing, half-pixel centres), flips and stacks uint8
(B, 3, S, S) on the device; the existing `DeviceNormalizer` then normalises it.

Everything else keeps the worker path, item by item: PNG and other formats, CMYK/12-bit/lossless/
arithmetic JPEGs, JPEGs with an EXIF orientation other than 1 or without an end-of-image marker, and
sources that store pixels (digits, CIFAR arrays, resized HDF5 packs).  The worker decodes and crops
those on the CPU and ships the uint8 crop; the batch carries both kinds and `BatchDecoder` merges
them in sample order.  A file neither decoder can read is dropped and reported with its reason,
as `ImageDataset` does.  Only training batches take this path; evaluation keeps the worker path.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .dataset import ImageDataset, _stack, split_bad, to_planar
from .decode import BadImage, _has_exif_orientation, decode_bytes
from .jpeg_header import device_decodable, parse_jpeg_header
from .loader import LoaderWrapper


def device_jpeg_size(buf: bytes) -> tuple[int, int] | None:
    """(height, width) of a JPEG the device decoder takes as the worker path would, else None (worker decode)."""
    if len(buf) < 4 or buf[-2:] != b"\xff\xd9":  # no EOI: truncated or trailing data
        return None
    h = parse_jpeg_header(buf)
    if not device_decodable(h):
        return None
    # decode.py sends files its EXIF test flags to Pillow + exif_transpose; an explicit Orientation 1 changes nothing
    if _has_exif_orientation(buf) and h.orientation != 1:
        return None
    return h.height, h.width


class EncodedTrainSet(ImageDataset):
    """Worker side: an item is (payload, label, index, reason), payload a JPEG `(bytes, box, flip)` to decode on
    the device, a uint8 (3, S, S) crop made on the CPU, or None with the reason of a bad file."""

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Any, int, int, str | None]:
        index, epoch = (item if isinstance(item, tuple) else (item, 0))
        index = int(index)
        label = int(self.source.labels[index])
        try:
            buf = self.source.encoded(index)
            hw = device_jpeg_size(buf) if buf is not None else None
            if hw is None:  # not for the device decoder: decode here, as ImageDataset does
                img = self.source.load(index) if buf is None else decode_bytes(buf)
        except BadImage as e:
            return None, label, index, f"{self.source.describe(index)}: {e}"
        self._seed_transform(index, epoch)
        if hw is not None:
            box, flip = self.transform.draw_crop_flip(hw)  # box (x0, y0, x1, y1)
            return (buf, box, flip), label, index, None
        img = self.transform(image=img)["image"]  # (S, S, 3) uint8
        return torch.from_numpy(to_planar(img)), label, index, None  # (3, S, S) uint8


def collate_encoded(items: list[tuple[Any, int, int, str | None]]) -> dict[str, Any]:
    """A batch for `BatchDecoder`: the JPEGs' bytes in one flat tensor, the CPU crops stacked, positions of each."""
    good, bad = split_bad(items)
    if not good:
        return {"images": None, "targets": None, "indices": None, "bad": bad}
    pix = [k for k, it in enumerate(good) if isinstance(it[0], torch.Tensor)]
    jpg = [k for k, it in enumerate(good) if not isinstance(it[0], torch.Tensor)]
    sizes = [len(good[k][0][0]) for k in jpg]
    flat = np.empty(sum(sizes), np.uint8)
    offsets = np.cumsum([0, *sizes])
    for k, o, n in zip(jpg, offsets, sizes, strict=False):
        flat[o:o + n] = np.frombuffer(good[k][0][0], np.uint8)
    encoded = {
        "jpeg_bytes": torch.from_numpy(flat),  # (sum of file sizes,) uint8
        "jpeg_sizes": torch.tensor(sizes, dtype=torch.long),  # (J,)
        "jpeg_boxes": torch.tensor([good[k][0][1] for k in jpg], dtype=torch.long).view(-1, 4),  # (J, 4) x0 y0 x1 y1
        "jpeg_flip": torch.tensor([good[k][0][2] for k in jpg], dtype=torch.bool),  # (J,)
        "jpeg_pos": torch.tensor(jpg, dtype=torch.long),  # (J,) places in the batch
        "pixels": _stack([good[k][0] for k in pix]) if pix else None,  # (P, 3, S, S) uint8
        "pixel_pos": torch.tensor(pix, dtype=torch.long),  # (P,)
    }
    return {
        "encoded": encoded,
        "targets": torch.tensor([it[1] for it in good], dtype=torch.long),  # (B,)
        "indices": torch.tensor([it[2] for it in good], dtype=torch.long),  # (B,)
        "bad": bad,
    }


def crop_resize_flip(img: torch.Tensor, box: tuple[int, ...], flip: bool, size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> (3, size, size): crop box (x0, y0, x1, y1), bilinear resize as cv2.INTER_LINEAR, flip."""
    x0, y0, x1, y1 = box
    crop = img[:, y0:y1, x0:x1]  # (3, h, w) view
    if crop.shape[1:] != (size, size):
        # half-pixel centres, edge clamping, no antialiasing: the sampling of cv2.resize(INTER_LINEAR) in the CPU path
        crop = F.interpolate(crop[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                             antialias=False)[0]  # (3, S, S) float
        crop = crop.round_().clamp_(0, 255)
    return crop.flip(-1) if flip else crop  # (3, S, S)


class BatchDecoder:
    """Main-process side: a `collate_encoded` batch -> the usual batch dict with uint8 images (B, 3, S, S) on the
    device ("bad" extended by any JPEG that turns out undecodable, its target and index removed)."""

    def __init__(self, dataset: ImageDataset, size: int, device: torch.device):
        self.dataset, self.size = dataset, size
        # nvJPEG on CUDA; elsewhere (cpu, mps) torchvision's libjpeg-turbo here (the normaliser moves the batch)
        self.device = device if device.type == "cuda" else torch.device("cpu")

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        enc = batch.get("encoded")
        if enc is None:
            return batch
        targets, indices, bad = batch["targets"], batch["indices"], list(batch["bad"])
        out = torch.empty((len(targets), 3, self.size, self.size), dtype=torch.uint8, device=self.device)  # (B,3,S,S)
        if enc["pixels"] is not None:
            out[enc["pixel_pos"].to(self.device)] = enc["pixels"].to(self.device, non_blocking=True)
        keep = torch.ones(len(targets), dtype=torch.bool)
        pos = enc["jpeg_pos"].tolist()
        if pos:
            bufs = list(enc["jpeg_bytes"].split(enc["jpeg_sizes"].tolist()))  # J views of (n_j,) uint8
            index_of = indices.tolist()
            imgs = self._decode(bufs, [index_of[p] for p in pos])
            for img, box, flip, p in zip(imgs, enc["jpeg_boxes"].tolist(), enc["jpeg_flip"].tolist(), pos,
                                         strict=True):
                if isinstance(img, str):  # the reason it is bad
                    keep[p] = False
                    bad.append((index_of[p], img))
                else:
                    out[p] = crop_resize_flip(img, box, flip, self.size)
        if not bool(keep.all()):
            if not bool(keep.any()):
                return {"images": None, "targets": None, "indices": None, "bad": bad}
            out, targets, indices = out[keep.to(self.device)], targets[keep], indices[keep]
        return {"images": out, "targets": targets, "indices": indices, "bad": bad}

    def _decode(self, bufs: list[torch.Tensor], indices: list[int]) -> list[torch.Tensor | str]:
        """Decoded (3, H, W) uint8 images, or for a file no decoder reads, the reason (as ImageDataset gives it)."""
        try:
            return list(_decode_jpeg(bufs, self.device))
        except (RuntimeError, ValueError):
            pass  # one bad file fails the whole call: decode one by one to find it
        res: list[torch.Tensor | str] = []
        for b, index in zip(bufs, indices, strict=True):
            try:
                res.append(_decode_jpeg(b, self.device))
                continue
            except (RuntimeError, ValueError):
                pass
            src = self.dataset.source
            try:  # the worker path's decoder (Pillow tolerates some files libjpeg refuses), or its reason
                arr = decode_bytes(b.numpy().tobytes())  # (H, W, 3) uint8
                res.append(torch.from_numpy(arr).permute(2, 0, 1).to(self.device))  # (3, H, W)
            except BadImage as e:
                res.append(f"{src.describe(index)}: {e}")
        return res


def _decode_jpeg(data: torch.Tensor | list[torch.Tensor], device: torch.device) -> Any:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


class DeviceDecodeLoader(LoaderWrapper):
    """A DataLoader whose batches go through a `BatchDecoder`; its length and attributes are the loader's."""

    def __init__(self, loader: Any, decoder: BatchDecoder):
        super().__init__(loader)
        self.decoder = decoder

    def __iter__(self) -> Iterator[dict[str, Any]]:
        it = iter(self.loader)  # now, not at the first next(): EpochBatches.prefetch starts the workers early
        return (self.decoder(batch) for batch in it)
