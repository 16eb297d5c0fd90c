"""Issue 20 section 1: nothing is chosen on the reported split; the CIFAR protocol's crop for 32-px data.

Selection (best.pt, tau auto, any tuned value) happens on `data.select_split`: the tree's val/ when test/
is reported, else images carved from the training split; the reported split is evaluated once, at the end,
into final_eval.json.  Each test below was seen to fail on the plausible wrong implementation named in it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import imgcls_cli as ic
from imgcls_cli.cli.app import app
from imgcls_cli.config import DataConfig, build_config
from imgcls_cli.data.sources import carve_indices, open_data
from imgcls_cli.data.transforms import eval_transform, transforms_from_config
from imgcls_cli.engine.checkpoint import read_checkpoint
from imgcls_cli.engine.eval_api import evaluate_checkpoint
from imgcls_cli.errors import ImgclsError

from .conftest import make_folder_dataset, quick_overrides


def _files(src) -> set[str]:  # the image files a (subset) source reads
    return {src.describe(i) for i in range(len(src))}


# ---------------------------------------------------------------- the carved selection split
def test_carve_is_stratified_seeded_and_prefers_the_images_a_subset_leaves_unused() -> None:
    labels = np.repeat(np.arange(3), [100, 40, 10])  # (150,)
    keep = np.concatenate([np.arange(0, 50), np.arange(100, 140), np.arange(140, 150)])  # class 0 half used
    sel = carve_indices(labels, 3, keep, per_class=20, seed=0)
    counts = np.bincount(labels[sel], minlength=3).tolist()
    assert counts == [20, 8, 2]  # class 0: 20 unused; classes 1, 2: all kept, so a fifth of them
    assert set(sel[labels[sel] == 0].tolist()) <= set(range(50, 100))  # class 0 from the unused half only
    assert np.array_equal(sel, carve_indices(labels, 3, keep, 20, seed=0))  # the same for every run
    assert not np.array_equal(sel, carve_indices(labels, 3, keep, 20, seed=1))
    assert len(set(sel.tolist())) == len(sel)


def test_selection_and_reporting_never_share_an_image(tmp_path: Path) -> None:
    """Mutation seen failing: carving without removing the carved images from training (keep = base)."""
    root = make_folder_dataset(tmp_path / "d", classes=3, train=30, val=4, size=16)
    b = open_data(DataConfig(path=str(root)))
    assert b.select_split == "carve" and b.val_split == "val"
    train, select, val = _files(b.train), _files(b.select), _files(b.val)
    assert len(select) == 3 * 6 and len(train) == 3 * 24  # min(20, 30 // 5) a class
    assert not select & train and not select & val and not train & val
    # with val/ and test/, val/ selects and test/ is reported
    shutil.copytree(root / "val", root / "test")
    b = open_data(DataConfig(path=str(root)))
    assert (b.select_split, b.val_split) == ("val", "test") and len(b.train) == 90
    assert _files(b.select) == _files(open_data(DataConfig(path=str(root), val_split="val",
                                                          select_split="none")).val)
    with pytest.raises(ImgclsError, match="data.select_split=val"):
        open_data(DataConfig(path=str(root), val_split="val", select_split="val"))  # val reported: select elsewhere


def test_run_selects_on_the_carve_and_reports_the_held_out_split_once(tmp_path: Path) -> None:
    """Mutations seen failing: best.pt picked on the reported split; final_eval.json from the last epoch."""
    root = make_folder_dataset(tmp_path / "d", classes=3, train=30, val=4, size=16)
    ov = quick_overrides(**{"data.path": str(root), "data.img_size": 16, "train.epochs": 3,
                            "optim.name": "sgd", "optim.lr": 0.05,
                            "data.select_split": "auto", "train.out": str(tmp_path / "run")})
    res = ic.train(**ov)
    run = Path(res.run_dir)
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert (saved["select_split"], saved["val_split"], saved["carve_per_class"], saved["carve_seed"]) == \
        ("carve", "val", 20, 0)
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["val_split"] == "carve" and r["val_n"] == 18 for r in recs)  # the 18 carved images, never val/
    best = max(recs, key=lambda r: r["val_top1"])
    assert res.best_epoch == recs.index(best) + 1  # the first epoch with the best selection accuracy
    ck = read_checkpoint(run / "best.pt")
    bundle = open_data(build_config(None, ov).data)
    assert ck["select_indices"] == bundle.select_indices.tolist()  # the carve travels with the weights
    final = json.loads((run / "final_eval.json").read_text())
    assert (final["split"], final["selected_on"], final["checkpoint"], final["n"]) == ("val", "carve", "best.pt", 12)
    assert final["epoch"] == res.best_epoch
    ev = evaluate_checkpoint(run / "best.pt", device="cpu")  # eval RUN reproduces the reported number
    assert ev.summary["top1"] == pytest.approx(final["top1"], abs=1e-9)


def test_tau_auto_is_chosen_on_the_selection_split_and_refused_without_one(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "d", classes=3, train=30, val=4, size=16)
    common = {"data.path": str(root), "data.img_size": 16, "train.epochs": 1}
    carved = ic.train(**quick_overrides(**common, **{"data.select_split": "auto", "train.out": str(tmp_path / "a")}))
    r = CliRunner().invoke(app, ["eval", str(carved.run_dir), "--tau-norm", "auto", "--device", "cpu",
                                 "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "e.json").read_text())
    assert out["tau_selected_on"] == "carve" and "18 images" in r.output  # the carve, not the 12 of val/
    plain = ic.train(**quick_overrides(**common, **{"train.out": str(tmp_path / "b")}))  # select_split none
    r = CliRunner().invoke(app, ["eval", str(plain.run_dir), "--tau-norm", "auto", "--device", "cpu"])
    assert r.exit_code == 2 and "no selection split" in r.output and "Traceback" not in r.output


# ---------------------------------------------------------------- the CIFAR crop
def test_32_px_data_trains_with_pad_crop_and_evaluates_the_image_as_it_is(tmp_path: Path) -> None:
    """Mutation seen failing: eval_crop_pct 0.875 kept for pad_crop (37 px resize, crop back to 32)."""
    root = make_folder_dataset(tmp_path / "d", classes=2, train=5, val=2, size=32)
    cfg = build_config(None, {"data.path": str(root)})
    bundle = open_data(cfg.data)
    train_tf, eval_tf = transforms_from_config(cfg, bundle)
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(eval_tf(image=img)["image"], img)  # identity at 32 px
    assert not np.array_equal(eval_transform(32, 0.875)(image=img)["image"], img)  # the old default was not
    # training: a 4-px zero pad and a random 32 x 32 crop: every output is a shifted copy of the image
    for _ in range(5):
        out = train_tf(image=img)["image"]
        assert out.shape == (32, 32, 3)
        padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
        flips = (padded, padded[:, ::-1])
        assert any(np.array_equal(out, p[y:y + 32, x:x + 32]) for p in flips for y in range(9) for x in range(9))


def test_crop_scale_with_pad_crop_is_refused() -> None:
    with pytest.raises(ImgclsError, match="aug.crop_scale"):
        build_config(None, {"aug.preset": "pad_crop", "aug.crop_scale": [0.35, 1.0]})


# ---------------------------------------------------------------- resume keeps its folder
def test_resume_with_a_config_file_continues_in_the_checkpoint_folder(tmp_path: Path) -> None:
    """A config's `out` used to win over --resume DIR: the resumed epochs went to the config's folder, which had
    no best.pt, and the final evaluation failed (the CIFAR-10-LT lanes hit it)."""
    root = make_folder_dataset(tmp_path / "d", classes=2, train=10, val=2, size=16)
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"data": {"path": str(root), "img_size": 16, "workers": 0},
                                    "model": {"backbone": "resnet20"},
                                    "train": {"epochs": 2, "batch_size": 8, "device": "cpu", "progress": False,
                                              "out": str(tmp_path / "from_config")}}))
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--config", str(conf), "--epochs", "1", "--out", str(run)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["train", "--config", str(conf), "--resume", str(run)])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "from_config").exists()
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (run / "final_eval.json").is_file()
    torch.testing.assert_close(read_checkpoint(run / "last.pt")["epoch"], 2)
