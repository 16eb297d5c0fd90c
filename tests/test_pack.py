"""HDF5 packs: bit-exact round trip, resized mode, training from a pack, fork/spawn workers, errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from imgcls_cli.data.dataset import ImageDataset, collate
from imgcls_cli.data.decode import decode_file
from imgcls_cli.data.hdf5 import _resize_square, open_hdf5, pack_folder
from imgcls_cli.data.sources import open_folder
from imgcls_cli.errors import DataError

from .conftest import quick_overrides, shared


@pytest.mark.slow
def test_encoded_pack_round_trips_every_file_bit_exactly() -> None:
    root = shared("hymenoptera")
    rep = pack_folder(root, "h.h5")
    folder = open_folder(root, None, "auto")
    pack = open_hdf5(Path("h.h5"), None)
    assert pack.class_names == folder.class_names and pack.val_split == folder.val_split
    assert rep["counts"] == {"train": len(folder.train), "val": len(folder.val)}
    for fs, hs in ((folder.train, pack.train), (folder.val, pack.val)):
        np.testing.assert_array_equal(hs.labels, fs.labels)
        for i in range(len(fs)):
            assert hs.raw_bytes(i) == Path(fs.files[i]).read_bytes(), fs.files[i]
            assert hs.describe(i).endswith(str(Path(fs.files[i]).relative_to(root)))
    for i in (0, len(folder.val) - 1):  # decoding goes through the same decoder as the folder
        np.testing.assert_array_equal(pack.val.load(i), decode_file(folder.val.files[i]))


def test_resized_pack_holds_square_uint8_arrays(tiny_folder: Path) -> None:
    rep = pack_folder(tiny_folder, "r.h5", mode="raw", size=16)
    assert rep["mode"] == "resized"
    pack = open_hdf5(Path("r.h5"), None)
    folder = open_folder(tiny_folder, None, "auto")
    img = pack.train.load(5)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, _resize_square(folder.train.load(5), 16))


def test_training_from_pack_equals_training_from_folder(tiny_folder: Path) -> None:
    import imgcls_cli as ic

    pack_folder(tiny_folder, "t.h5")
    kw = quick_overrides(**{"data.img_size": 32, "train.epochs": 2})
    a = ic.train(**{**kw, "data.path": str(tiny_folder), "train.out": "run_folder"})
    b = ic.train(**{**kw, "data.path": "t.h5", "train.out": "run_pack"})
    losses = [[json.loads(x)["train_loss"] for x in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
              for r in (a, b)]
    assert losses[0] == losses[1] and a.final["top1"] == b.final["top1"]
    # evaluating the pack-trained checkpoint on the pack gives the accuracy training reported
    from imgcls_cli.engine.eval_api import evaluate_checkpoint

    res = evaluate_checkpoint(b.run_dir / "last.pt", data="t.h5", workers=0, device="cpu")
    assert res.summary["top1"] == pytest.approx(b.final["top1"])  # no selection split: final_eval is last.pt


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_two_workers_read_the_pack_under_fork_and_spawn(tiny_folder: Path, context: str) -> None:
    pack_folder(tiny_folder, "w.h5")
    src = open_hdf5(Path("w.h5"), None).train
    expected = [src.load(i) for i in range(len(src))]  # the parent holds an open handle before workers start
    ds = ImageDataset(src, None)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate,
                                         multiprocessing_context=context)
    seen = 0
    for batch in loader:
        assert not batch["bad"]
        for img, idx in zip(batch["images"], batch["indices"], strict=True):
            np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), expected[int(idx)])  # (H, W, 3)
            seen += 1
    assert seen == len(src)


def test_source_pickles_without_its_handle(tiny_folder: Path) -> None:
    pack_folder(tiny_folder, "p.h5")
    src = open_hdf5(Path("p.h5"), None).train
    src.load(0)
    clone = pickle.loads(pickle.dumps(src))
    assert clone._file is None
    np.testing.assert_array_equal(clone.load(3), src.load(3))


def test_bad_inputs_are_one_line_errors(tiny_folder: Path) -> None:
    import h5py

    with h5py.File("other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="not an imgcls pack"):
        open_hdf5(Path("other.h5"), None)
    Path("junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(DataError, match="not a readable HDF5"):
        open_hdf5(Path("junk.h5"), None)
    pack_folder(tiny_folder, "ok.h5")
    with pytest.raises(DataError, match="--split test"):
        open_hdf5(Path("ok.h5"), "test")
    from imgcls_cli.cli.app import app

    runner = CliRunner()
    for args, needle in ((["pack", str(tiny_folder), "x.h5", "--mode", "jpeg"], "--mode jpeg"),
                         (["pack", str(tiny_folder), "x.h5", "--mode", "raw"], "--size"),
                         (["pack", str(tiny_folder), "x.zip"], "x.zip"),
                         (["train", "--data", "missing.h5"], "missing.h5")):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output and "Traceback" not in r.output
    assert not Path("x.h5").exists()
