"""Issue 12, bad data: a corpus of problem images generated here, decoded and trained on.

Kinds (20 files): truncated JPEG, zero bytes, text named .jpg, over the decompression-bomb limit (bad);
CMYK JPEG, grayscale, 16-bit PNG, RGBA PNG, palette PNG, palette PNG with transparency, EXIF
orientations 1-8, unicode file name, a huge valid image (good).  The bomb limit is Pillow's own
default (`Image.MAX_IMAGE_PIXELS`, 89,478,485 pixels), which imgcls leaves unchanged: the test
checks that, so what is tested is what users get.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from imgcls_cli.config import build_config
from imgcls_cli.data.dataset import ImageDataset, collate
from imgcls_cli.data.decode import BadImage, decode_file
from imgcls_cli.data.sources import FolderSource
from imgcls_cli.engine.trainer import train

from .conftest import make_folder_dataset, quick_overrides

PIL_DEFAULT_LIMIT = 89_478_485


def _quadrants(h: int = 24, w: int = 40) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)  # (H, W, 3): four saturated quadrants, no symmetry
    a[: h // 2, : w // 2] = (230, 20, 20)
    a[: h // 2, w // 2:] = (20, 230, 20)
    a[h // 2:, : w // 2] = (20, 20, 230)
    a[h // 2:, w // 2:] = (230, 230, 20)
    return a


# EXIF spec: the transform that turns the stored pixels into the displayed image, per orientation.
EXIF_DISPLAY = {
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _png_claiming(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (the bomb check happens on the header)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (w + 1))) + \
        chunk(b"IEND", b"")


def build_corpus(d: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write the corpus into folder d; returns (good files, bad files) by kind."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    jpg = io.BytesIO()
    Image.fromarray(rgb).save(jpg, "JPEG", quality=90)
    good: dict[str, Path] = {}
    bad: dict[str, Path] = {}
    bad["truncated_jpeg"] = d / "truncated.jpg"
    bad["truncated_jpeg"].write_bytes(jpg.getvalue()[: len(jpg.getvalue()) * 2 // 3])
    bad["zero_bytes"] = d / "empty.jpg"
    bad["zero_bytes"].write_bytes(b"")
    bad["text_as_jpg"] = d / "notes.jpg"
    bad["text_as_jpg"].write_text("this is not an image\n")
    bad["decompression_bomb"] = d / "bomb.png"
    bad["decompression_bomb"].write_bytes(_png_claiming(10_000, 10_000))  # 1e8 px: just over the 8.9e7 limit
    good["cmyk_jpeg"] = d / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(good["cmyk_jpeg"], "JPEG", quality=95)
    good["grayscale"] = d / "gray.jpg"
    Image.fromarray(rgb[..., 0]).save(good["grayscale"], "JPEG")
    good["png16"] = d / "deep16.png"
    Image.fromarray((np.arange(48 * 48).reshape(48, 48) * 28).astype(np.uint16)).save(good["png16"])
    good["rgba"] = d / "rgba.png"
    Image.fromarray(np.dstack([rgb, np.full((48, 48), 128, np.uint8)])).save(good["rgba"])
    good["palette"] = d / "palette.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(good["palette"])
    good["palette_transparent"] = d / "palette_t.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(good["palette_transparent"], transparency=0)
    for n in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = n
        good[f"exif_{n}"] = d / f"exif_{n}.jpg"
        Image.fromarray(_quadrants()).save(good[f"exif_{n}"], "JPEG", quality=95, exif=exif.tobytes())
    good["unicode_name"] = d / "ünïcødé 日本 😀.jpg"
    good["unicode_name"].write_bytes(jpg.getvalue())
    good["huge_valid"] = d / "huge.jpg"
    Image.fromarray(np.kron(rgb[:8, :8], np.ones((500, 375, 1), np.uint8))).save(good["huge_valid"], quality=70)
    return good, bad


def test_decoder_on_the_corpus(tmp_path: Path) -> None:
    assert Image.MAX_IMAGE_PIXELS == PIL_DEFAULT_LIMIT, "imgcls must not change Pillow's bomb limit"
    good, bad = build_corpus(tmp_path / "c")
    reasons = {}
    for kind, f in bad.items():
        with pytest.raises(BadImage) as e:
            decode_file(f)
        reasons[kind] = str(e.value)
    assert "empty" in reasons["zero_bytes"] and "decompression-bomb" in reasons["decompression_bomb"]
    assert "truncated" in reasons["truncated_jpeg"]
    for kind, f in good.items():
        a = decode_file(f)
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3, kind
    assert decode_file(good["huge_valid"]).shape == (4000, 3000, 3)
    ref = _quadrants().astype(int)
    for n in range(1, 9):  # pixels come out the way a viewer displays them
        out = decode_file(good[f"exif_{n}"]).astype(int)
        want = EXIF_DISPLAY[n](ref)
        assert out.shape == want.shape, n
        assert np.abs(out - want).mean() < 6, f"EXIF orientation {n} not applied"
    deep = decode_file(good["png16"])[..., 0].astype(int)  # 16-bit ramp 0..64484 -> scaled to 0..251, not clipped
    src = (np.arange(48 * 48).reshape(48, 48) * 28).astype(np.int64)
    assert np.abs(deep - np.round(src * 255 / 65535)).max() <= 1 and deep.max() > 240 and len(np.unique(deep)) > 200
    rgba = decode_file(good["rgba"]).astype(int)  # alpha 128 composited on white, not dropped
    assert np.abs(rgba.mean() - (0.5 * 255 + 0.5 * np.asarray(Image.open(good["rgba"]))[..., :3].mean())).mean() < 2
    print(f"\nbad-image corpus: {len(good) + len(bad)} files, {len(bad)} unreadable kinds refused with reasons,"
          f" {len(good)} readable files decoded (EXIF 1-8 oriented, 16-bit scaled)")


def test_collate_drops_bad_files_never_substitutes(tmp_path: Path) -> None:
    good, bad = build_corpus(tmp_path / "c")
    files = [good["grayscale"], bad["zero_bytes"], good["rgba"], bad["text_as_jpg"]]
    src = FolderSource(files, [0, 1, 2, 3])
    batch = collate([ImageDataset(src, None)[i] for i in range(4)])
    assert batch["targets"].tolist() == [0, 2] and batch["indices"].tolist() == [0, 2]
    assert [i for i, _ in batch["bad"]] == [1, 3] and "empty" in batch["bad"][0][1]


def test_training_skips_each_bad_file_once_with_reason(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", classes=2, train=6, val=3)
    good, bad = build_corpus(root / "train" / "class_0")
    for kind in ("zero_bytes", "truncated_jpeg"):  # bad files in the validation split too
        (root / "val" / "class_1" / f"val_{bad[kind].name}").write_bytes(bad[kind].read_bytes())
    buf = io.StringIO()
    cfg = build_config(overrides=quick_overrides(**{"data.path": str(root), "train.epochs": 2, "data.img_size": 32,
                                                    "train.batch_size": 8, "train.out": str(tmp_path / "run")}))
    res = train(cfg, console=Console(file=buf, width=100_000, soft_wrap=True))
    log = buf.getvalue()
    assert res.epochs_run == 2
    assert "32 train / 8 val images" in log  # listed, then skipped when read (bad files are found by decoding)
    lines = [ln for ln in log.splitlines() if "skipped unreadable image" in ln]
    reported = [re.sub(r"^.*skipped unreadable image ", "", ln).split(": ")[0] for ln in lines]
    expected = [str(p) for p in bad.values()] + [str(root / "val" / "class_1" / f"val_{bad[k].name}")
                                                 for k in ("zero_bytes", "truncated_jpeg")]
    assert sorted(reported) == sorted(expected), log  # each exactly once over 2 epochs + the final evaluation
    assert all(": " in ln for ln in lines)
    import json

    final = json.loads((tmp_path / "run" / "final_eval.json").read_text())
    assert final["n"] == 2 * 3  # the 6 readable val images; the 2 bad ones are not counted
    print(f"\ntraining with the corpus: {len(lines)} bad files reported once each over 2 epochs")
