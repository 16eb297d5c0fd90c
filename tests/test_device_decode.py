"""data.decode=device (issue #10), exercised on the CPU: JPEG header parsing, batches equal to the worker path's,
mixed JPEG/PNG batches, bad files, HDF5 packs, option conflicts and a training run.

Tolerance: on the CPU both paths decode with libjpeg-turbo (simplejpeg and torchvision, same IDCT and chroma
upsampling: bit-identical, checked below), crop the same box and flip alike; only the bilinear resize differs:
cv2.resize (INTER_LINEAR) rounds with 11-bit fixed-point weights, the device path interpolates in float32 and
rounds once.  That is at most 1 grey level per pixel, which is what the tests allow.  nvJPEG on CUDA may differ
from libjpeg-turbo more (IDCT, chroma upsampling); that is not tested here (no GPU).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls_cli.data import device_decode as dd
from imgcls_cli.data.dataset import ImageDataset, _mix_seed, collate
from imgcls_cli.data.decode import decode_file
from imgcls_cli.data.jpeg_header import device_decodable, parse_jpeg_header
from imgcls_cli.data.sources import FolderSource
from imgcls_cli.data.transforms import train_transform

from .conftest import SHARED_DATA, make_folder_dataset, quick_overrides
from .test_bad_images import build_corpus

TOL = 1  # grey levels: cv2's fixed-point bilinear weights vs float32 interpolation (see the module docstring)


def _jpeg(img: np.ndarray | Image.Image, **kw: object) -> bytes:
    b = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(b, "JPEG", **kw)
    return b.getvalue()


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)  # (H, W, 3)


def _corrupt_keeping_eoi(buf: bytes) -> bytes:
    """Scramble entropy-coded bytes mid-file; the SOF header and the final EOI marker stay intact."""
    c = bytearray(buf)
    mid = len(c) // 2
    for i in range(mid, mid + 40):
        c[i] = 0xFF if i % 7 == 0 else c[i] ^ 0x5A
    return bytes(c)


def _both_paths(src: FolderSource, indices: list[int], epoch: int = 1, size: int = 24, seed: int = 3,
                hflip: float = 0.5) -> tuple[dict, dict, dict]:
    """(worker-path batch, device-path batch decoded on the CPU, the collated batch the workers made)."""
    def tf():
        return train_transform(size, (0.08, 1.0), (3 / 4, 4 / 3), hflip)

    worker = collate([ImageDataset(src, tf(), seed)[(i, epoch)] for i in indices])
    enc_set = dd.EncodedTrainSet(src, tf(), seed)
    enc = dd.collate_encoded([enc_set[(i, epoch)] for i in indices])
    return worker, dd.BatchDecoder(enc_set, size, torch.device("cpu"))(enc), enc


def _assert_same_batch(worker: dict, device: dict) -> None:
    assert device["targets"].tolist() == worker["targets"].tolist()
    assert device["indices"].tolist() == worker["indices"].tolist()
    assert sorted(device["bad"]) == sorted(worker["bad"])
    a, b = worker["images"], device["images"]  # (B, 3, S, S) uint8 each
    assert a.shape == b.shape and b.dtype == torch.uint8
    assert int((a.int() - b.int()).abs().max()) <= TOL


# ---- JPEG frame header --------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "kw", "comps", "sof"), [
    ("RGB", {"quality": 90}, 3, 0xC0), ("RGB", {"progressive": True}, 3, 0xC2),
    ("L", {}, 1, 0xC0), ("L", {"progressive": True}, 1, 0xC2), ("RGB", {"subsampling": 0, "optimize": True}, 3, 0xC0),
    ("CMYK", {}, 4, 0xC0), ("RGB", {"comment": b"x" * 5000, "dpi": (300, 300)}, 3, 0xC0),
])
@pytest.mark.parametrize(("h", "w"), [(1, 1), (37, 53), (480, 17), (1200, 900)])
def test_header_of_synthetic_jpegs(mode: str, kw: dict, comps: int, sof: int, h: int, w: int) -> None:
    img = Image.fromarray(_noise(h, w)).convert(mode)
    hd = parse_jpeg_header(_jpeg(img, **kw))
    assert hd is not None and (hd.height, hd.width) == (h, w) and hd.components == comps and hd.sof == sof
    assert hd.precision == 8 and device_decodable(hd) == (comps != 4)


def test_header_edge_cases() -> None:
    buf = _jpeg(_noise(20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    with_exif = _jpeg(_noise(20, 30), exif=exif.tobytes())
    assert (parse_jpeg_header(with_exif).height, parse_jpeg_header(with_exif).width) == (20, 30)
    sof = buf.index(b"\xff\xc0")
    padded = buf[:sof] + b"\xff\xff\xff" + buf[sof:]  # fill bytes before a marker are legal (T.81 B.1.1.2)
    assert parse_jpeg_header(padded).width == 30
    lossless = buf[:sof + 1] + b"\xc3" + buf[sof + 2:]  # the same frame header as SOF3 (lossless)
    assert parse_jpeg_header(lossless).sof == 0xC3 and not device_decodable(parse_jpeg_header(lossless))
    png = io.BytesIO()
    Image.fromarray(_noise(5, 5)).save(png, "PNG")
    for junk in (b"", b"\xff\xd8", png.getvalue(), buf[:sof], buf[:sof + 6], b"\xff\xd8\xff\xd9", b"GIF89a" * 4):
        assert parse_jpeg_header(junk) is None, junk[:12]
    # the worker sends to the device only what decodes there as on the CPU: no EXIF rotation, no truncation
    assert dd.device_jpeg_size(buf) == (20, 30)
    assert dd.device_jpeg_size(with_exif) is None and dd.device_jpeg_size(buf[:-10]) is None


def test_exif_orientation_from_the_header() -> None:
    import struct

    for n in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = n
        buf = _jpeg(_noise(20, 30), exif=exif.tobytes())
        assert parse_jpeg_header(buf).orientation == n
        assert (dd.device_jpeg_size(buf) == (20, 30)) == (n == 1)  # only an explicit 1 needs no rotation
    big_endian = b"Exif\x00\x00MM\x00*" + struct.pack(">IHHHIHHI", 8, 1, 0x0112, 3, 1, 6, 0, 0)
    buf = _jpeg(_noise(20, 30), exif=big_endian)
    assert parse_jpeg_header(buf).orientation == 6 == Image.open(io.BytesIO(buf)).getexif()[0x0112]
    other = Image.Exif()
    other[0x010F] = "maker"  # Exif without an Orientation tag: unknown, so the worker decodes it as today
    assert parse_jpeg_header(_jpeg(_noise(20, 30), exif=other.tobytes())).orientation is None
    assert parse_jpeg_header(_jpeg(_noise(20, 30))).orientation is None


def test_header_matches_pillow_on_real_files() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (../shared/data beside the checkout)")
    files = []
    for name in ("cub_subset", "hymenoptera", "oxford_pets_sample", "cam_demo"):
        files += sorted(p for p in (SHARED_DATA / name).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    files += sorted((SHARED_DATA / "cifar10_jpg").rglob("*.jpg"))[:300]
    if not files:
        pytest.skip(f"no JPEG files under {SHARED_DATA}")
    on_device = 0
    for f in files:
        buf = f.read_bytes()
        hd = parse_jpeg_header(buf)
        with Image.open(f) as im:
            assert hd is not None and (hd.width, hd.height) == im.size, f
            assert hd.components == len(im.getbands()), f
        on_device += dd.device_jpeg_size(buf) is not None
    assert on_device > 0.9 * len(files)
    print(f"\nJPEG headers: {len(files)} real files match Pillow; {on_device} go to the device decoder")


# ---- batches: the device path equals the worker path --------------------------------------------------


def test_decoders_agree_bit_for_bit_on_the_cpu(tmp_path: Path) -> None:
    for i, kw in enumerate(({"quality": 90}, {"progressive": True}, {"subsampling": 0})):
        f = tmp_path / f"{i}.jpg"
        f.write_bytes(_jpeg(_noise(45, 61, i), **kw))
        got = dd._decode_jpeg([torch.from_numpy(np.frombuffer(f.read_bytes(), np.uint8).copy())], torch.device("cpu"))
        np.testing.assert_array_equal(got[0].permute(1, 2, 0).numpy(), decode_file(f))


def _odd_folder(d: Path, n: int = 12) -> FolderSource:
    d.mkdir(parents=True)
    files = []
    for i in range(n):  # sizes around the output size: crops are upscaled and downscaled
        f = d / f"{i:02d}.jpg"
        f.write_bytes(_jpeg(_noise(20 + 9 * i, 90 - 5 * i, i), quality=92, progressive=i % 3 == 0))
        files.append(f)
    return FolderSource(files, [i % 3 for i in range(n)])


@pytest.mark.parametrize("epoch", [0, 4])
def test_device_batch_matches_worker_batch(tmp_path: Path, epoch: int) -> None:
    src = _odd_folder(tmp_path / "a")
    worker, device, batch = _both_paths(src, list(range(len(src))), epoch=epoch)
    enc = batch["encoded"]
    assert enc["pixels"] is None and len(enc["jpeg_pos"]) == len(src)  # every file took the device decoder
    _assert_same_batch(worker, device)


def test_device_batch_matches_on_real_data() -> None:
    root = SHARED_DATA / "cub_subset" / "train"
    if not root.is_dir():
        pytest.skip(f"real data {root} is absent (../shared/data beside the checkout)")
    files = sorted(root.rglob("*.jpg"))[::40]
    worker, device, _ = _both_paths(FolderSource(files, list(range(len(files)))), list(range(len(files))), size=96)
    _assert_same_batch(worker, device)


def test_same_crop_boxes_and_flips_as_the_cpu_path(tmp_path: Path) -> None:
    # albumentations' own Compose, seeded as ImageDataset seeds it, records the box and flip it applied
    import albumentations as A

    src = _odd_folder(tmp_path / "a")
    tf = train_transform(24, (0.08, 1.0), (3 / 4, 4 / 3), 0.5)
    ref = A.Compose(list(train_transform(24, (0.08, 1.0), (3 / 4, 4 / 3), 0.5).transforms), save_applied_params=True)
    enc_set = dd.EncodedTrainSet(src, tf, seed=7)
    flips = 0
    for epoch in range(3):
        for i in range(len(src)):
            (_, box, flip), *_ = enc_set[(i, epoch)]
            s = _mix_seed(7, epoch, i)
            ref.set_random_state(np.random.default_rng(s), random.Random(s))
            applied = dict(ref(image=src.load(i))["applied_transforms"])
            assert tuple(applied["RandomResizedCrop"]["crop_coords"]) == box
            assert ("HorizontalFlip" in applied) == flip
            flips += flip
    assert 0 < flips < 3 * len(src)


def test_mixed_batch_keeps_order_and_labels(tmp_path: Path) -> None:
    d = tmp_path / "m"
    good, _ = build_corpus(d / "corpus")  # CMYK, grayscale, PNGs (16-bit, RGBA, palette), EXIF 1-8, a 4000x3000
    plain = _odd_folder(d / "plain", 6).files
    files = [plain[0], good["png16"], good["cmyk_jpeg"], plain[1], good["exif_6"], good["grayscale"], plain[2],
             good["rgba"], good["huge_valid"], plain[3], good["palette_transparent"], good["exif_1"], plain[4]]
    src = FolderSource(files, [(7 * i) % 5 for i in range(len(files))])
    worker, device, batch = _both_paths(src, list(range(len(files))), size=32)
    enc = batch["encoded"]
    # both kinds in one batch: PNG, CMYK and EXIF-rotated files decoded by the worker, the rest (incl. grayscale,
    # EXIF orientation 1 and the 4000x3000 photo) by decode_jpeg
    assert set(enc["pixel_pos"].tolist()) == {1, 2, 4, 7, 10}
    assert set(enc["jpeg_pos"].tolist()) == {0, 3, 5, 6, 8, 9, 11, 12}
    _assert_same_batch(worker, device)
    assert device["targets"].tolist() == [(7 * i) % 5 for i in range(len(files))]


def test_bad_files_are_dropped_with_the_worker_paths_reasons(tmp_path: Path) -> None:
    good, bad = build_corpus(tmp_path / "c")
    corrupt = tmp_path / "c" / "corrupt_with_eoi.jpg"  # passes the worker's checks; fails in decode_jpeg
    corrupt.write_bytes(_corrupt_keeping_eoi(_jpeg(_noise(48, 64), quality=90)))
    files = [good["grayscale"], bad["zero_bytes"], corrupt, good["rgba"], bad["truncated_jpeg"], bad["text_as_jpg"],
             good["unicode_name"], bad["decompression_bomb"]]
    src = FolderSource(files, list(range(len(files))))
    worker, device, batch = _both_paths(src, list(range(len(files))))
    assert 2 in batch["indices"][batch["encoded"]["jpeg_pos"]].tolist()  # the corrupt file reached the device decoder
    _assert_same_batch(worker, device)
    assert sorted(i for i, _ in device["bad"]) == [1, 2, 4, 5, 7]
    assert all(r.startswith(str(files[i]) + ": ") for i, r in device["bad"])
    only_bad = dd.BatchDecoder(dd.EncodedTrainSet(src, None), 24, torch.device("cpu"))(
        dd.collate_encoded([dd.EncodedTrainSet(src, train_transform(24, (0.08, 1.0), (3 / 4, 4 / 3), 0.5))[2]]))
    assert only_bad["images"] is None and only_bad["targets"] is None and len(only_bad["bad"]) == 1


def test_torchvision_refusal_falls_back_to_the_worker_decoder(tmp_path: Path, monkeypatch) -> None:
    src = _odd_folder(tmp_path / "a", 6)

    def refuse(*_a: object, **_k: object) -> None:
        raise RuntimeError("decode_jpeg: unsupported")

    monkeypatch.setattr(dd, "_decode_jpeg", refuse)
    worker, device, _ = _both_paths(src, list(range(6)))
    _assert_same_batch(worker, device)


@pytest.mark.parametrize("mode", ["encoded", "raw"])
def test_hdf5_packs(tiny_folder: Path, mode: str) -> None:
    from imgcls_cli.data.hdf5 import open_hdf5, pack_folder

    pack_folder(tiny_folder, "p.h5", mode=mode, size=40 if mode == "raw" else None)
    src = open_hdf5(Path("p.h5"), None).train
    worker, device, batch = _both_paths(src, list(range(0, len(src), 2)))
    assert len(batch["encoded"]["jpeg_pos" if mode == "encoded" else "pixel_pos"]) == len(device["targets"])
    _assert_same_batch(worker, device)


# ---- configuration, loaders and training --------------------------------------------------------------


@pytest.mark.parametrize(("args", "named"), [
    (["--autoaugment", "imagenet"], "--autoaugment imagenet"), (["--set", "aug.color_jitter=0.3"], "aug.color_jitter"),
    (["--set", "data.decoder=pil"], "data.decoder=pil"), (["--set", "data.decode=gpu"], "data.decode"),
])
def test_conflicting_options_exit_2_with_one_line(args: list[str], named: str) -> None:
    from typer.testing import CliRunner

    from imgcls_cli.cli.app import app

    r = CliRunner().invoke(app, ["train", "--set", "data.decode=device", *args])
    assert r.exit_code == 2, r.output
    msg = " ".join(r.output.split())
    assert named in msg and len(r.output.strip().splitlines()) <= 2 and "Traceback" not in r.output
    if "decode=gpu" not in args[-1]:
        assert "valid:" in msg and "data.decode=workers" in msg


def test_batches_do_not_depend_on_worker_count(tiny_folder: Path) -> None:
    from imgcls_cli.config import build_config
    from imgcls_cli.engine.setup import open_and_resolve, setup_data

    epochs = []
    for workers in (0, 2):
        cfg = build_config(overrides=quick_overrides(**{"data.path": str(tiny_folder), "data.decode": "device",
                                                        "aug.preset": "random_resized_crop", "data.workers": workers,
                                                        "train.batch_size": 5}))
        cfg, bundle = open_and_resolve(cfg, torch.device("cpu"))
        data = setup_data(cfg, bundle, torch.device("cpu"))
        data.train_sampler.set_epoch(2)
        epochs.append(list(data.train_loader))
        assert len(data.train_loader) == len(epochs[-1])
    for a, b in zip(*epochs, strict=True):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])


def test_train_one_epoch_on_cpu_with_mixup(tiny_folder: Path) -> None:
    import imgcls_cli as ic

    res = ic.train(**quick_overrides(**{"data.path": str(tiny_folder), "data.decode": "device", "aug.mixup": 0.2,
                                        "aug.preset": "random_resized_crop", "train.out": "run"}))
    assert res.epochs_run == 1 and res.config.data.decode == "device"
    assert "decode: device" in (res.run_dir / "config.yaml").read_text()


def test_training_reports_a_file_only_the_device_decoder_finds_bad(tmp_path: Path) -> None:
    from rich.console import Console

    from imgcls_cli.config import build_config
    from imgcls_cli.engine.trainer import train

    root = make_folder_dataset(tmp_path / "data", classes=2, train=6, val=3)
    corrupt = root / "train" / "class_0" / "corrupt.jpg"
    corrupt.write_bytes(_corrupt_keeping_eoi(_jpeg(_noise(48, 64), quality=90)))
    buf = io.StringIO()
    cfg = build_config(overrides=quick_overrides(**{"data.path": str(root), "data.decode": "device", "train.epochs": 2,
                                                    "aug.preset": "random_resized_crop", "train.batch_size": 4,
                                                    "train.out": str(tmp_path / "run")}))
    res = train(cfg, console=Console(file=buf, width=100_000, soft_wrap=True))
    lines = [ln for ln in buf.getvalue().splitlines() if "skipped unreadable image" in ln]
    assert res.epochs_run == 2 and len(lines) == 1 and str(corrupt) in lines[0], buf.getvalue()
