"""The Python API as README's "Python API" documents it: bad arguments raise a one-line `ImgclsError` naming
the argument and what is valid, never a TypeError / RuntimeError from deep inside (found in QA)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import imgcls_cli as ic
from imgcls_cli.errors import ImgclsError

from .conftest import quick_overrides

BAD_CALLS = {
    "num_classes str": (lambda: ic.build_model("resnet20", "10"), "num_classes must be an int >= 1"),
    "num_classes float": (lambda: ic.build_model("resnet20", 10.5), "num_classes must be an int >= 1"),
    "build_model option": (lambda: ic.build_model("resnet20", 10, foo=1), "build_model: unknown option 'foo'"),
    "build_loss option": (lambda: ic.build_loss("arcface", 10, q=3), "unknown option 'q'; valid: s, m"),
    "build_loss type": (lambda: ic.build_loss("arcface", 10, m="x"), "m must be float"),
    "build_loss missing": (lambda: ic.build_loss("center", 10), "needs feat_dim"),
    "build_loss classes": (lambda: ic.build_loss("ce", 0), "num_classes must be an int >= 1"),
    "ce smoothing": (lambda: ic.build_loss("ce", 10, label_smoothing=2.0), "label_smoothing: must be in [0, 1)"),
    "cam target str": (lambda: ic.cam(ic.build_model("resnet20", 3), torch.randn(1, 3, 16, 16), target="2"),
                       "target: expected a class index"),
    "cam target float": (lambda: ic.cam(ic.build_model("resnet20", 3), torch.randn(1, 3, 16, 16), target=1.5),
                         "target: expected a class index"),
    "cam grey images": (lambda: ic.cam(ic.build_model("resnet20", 3), torch.randn(1, 1, 16, 16)), "(B, 3, H, W)"),
    "cam uint8 images": (lambda: ic.cam(ic.build_model("resnet20", 3), torch.zeros(1, 3, 16, 16, dtype=torch.uint8)),
                         "normalised float tensor"),
    "train config type": (lambda: ic.train(5), "config: expected a Config, a dict of sections or a YAML path"),
    "train devices": (lambda: ic.train(**quick_overrides(**{"train.devices": 2})), "train.devices 2"),
    "checkpoint device": (lambda: ic.load_checkpoint("x.pt", device="gpu"), "--device 'gpu': not a device"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_api_arguments_are_one_line_errors(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a train() that ran anyway would write runs/ here
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    call, needle = BAD_CALLS[case]
    with pytest.raises(ImgclsError) as e:
        call()
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_api_takes_run_folders_and_section_dicts(tmp_path: Path) -> None:
    """load_checkpoint(RUN) loads RUN/best.pt as `imgcls eval RUN` does; train({...sections...}) is a recipe."""
    sections = {"model": {"backbone": "resnet20"}, "data": {"img_size": 16}}
    res = ic.train(sections, **quick_overrides(**{"train.out": str(tmp_path / "r"), "train.steps_per_epoch": 1}))
    assert sections == {"model": {"backbone": "resnet20"}, "data": {"img_size": 16}}  # the caller's dict untouched
    assert res.config.data.img_size == 16 and res.config.model.backbone == "resnet20"
    ckpt = ic.load_checkpoint(res.run_dir)
    assert ckpt.path == Path(res.run_dir) / "best.pt" and ckpt.class_names == [str(i) for i in range(10)]
    with pytest.raises(ImgclsError, match="a folder without best.pt"):
        ic.load_checkpoint(tmp_path)
