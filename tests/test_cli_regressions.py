"""Regressions found by exercising the CLI as a new user: each bad input or surprising setting is refused
in one line with exit status 2, or does what the README says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import imgcls_cli as ic
from imgcls_cli.cli.app import app
from imgcls_cli.config import DataConfig
from imgcls_cli.data.sources import open_data
from imgcls_cli.errors import DataError

from .conftest import quick_overrides

runner = CliRunner()


def _one_line(result, *needles: str) -> str:
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for n in needles:
        assert n in text, f"{n!r} not in {text!r}"
    return text


# ---------------------------------------------------------------- --split of a fixed-split data set
@pytest.mark.parametrize("split", ["train", "foo"])
def test_digits_split_other_than_val_or_test_is_refused(split: str) -> None:
    """digits has two held-out splits, val (selection) and test (reported); a --split naming another is refused
    (--split test used to evaluate `val` and label it `test`)."""
    with pytest.raises(DataError, match=f"--split {split}"):
        open_data(DataConfig(path="digits", val_split=split))
    default = open_data(DataConfig(path="digits"))
    assert default.val_split == "test" and default.select_split == "val" and len(default.val) == 180
    asked = open_data(DataConfig(path="digits", val_split="val"))
    assert asked.val_split == "val" and asked.select_split == "carve"  # val is reported: select elsewhere
    _one_line(runner.invoke(app, ["train", "--split", split]), f"--split {split}", "valid: val, test")
    assert not Path("runs").exists()


def test_eval_split_of_digits_checkpoint(tmp_path: Path) -> None:
    res = ic.train(**quick_overrides(**{"train.out": str(tmp_path / "r"), "data.img_size": 16,
                                        "train.steps_per_epoch": 1}))
    _one_line(runner.invoke(app, ["eval", str(res.run_dir), "--split", "train"]), "--split train", "valid: val, test")
    assert not (Path(res.run_dir) / "eval_train").exists()
    r = runner.invoke(app, ["eval", str(res.run_dir), "--split", "val", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (Path(res.run_dir) / "eval_val").is_dir()


# ---------------------------------------------------------------- --resume
def _quick(**extra: object) -> dict[str, object]:
    return quick_overrides(**{"data.img_size": 16, "train.steps_per_epoch": 1, **extra})


def _epochs(run: Path) -> list[int]:
    return [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("how", ["runs/latest", "auto"])
def test_resume_of_a_default_run_continues_in_its_folder(how: str) -> None:
    """README: `imgcls train --resume runs/latest` continues a run; it used to start a new timestamped folder
    without best.pt (and `--resume auto` rebuilt the model from the default options: a traceback)."""
    ic.train(**_quick())
    r = runner.invoke(app, ["train", "--resume", how, "--epochs", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    runs = [p for p in Path("runs").iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1, runs
    assert _epochs(runs[0]) == [1, 2] and (runs[0] / "best.pt").is_file()


def test_resume_never_overwrites_another_run_or_newer_checkpoints(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ic.train(**_quick(**{"train.out": str(a), "train.epochs": 2, "train.keep_checkpoints": 2}))
    ic.train(**_quick(**{"train.out": str(b)}))
    before = (b / "last.pt").read_bytes()
    _one_line(runner.invoke(app, ["train", "--resume", str(a), "--epochs", "3", "--out", str(b)]),
              f"--out {b}", "another run")
    assert (b / "last.pt").read_bytes() == before and _epochs(b) == [1]
    _one_line(runner.invoke(app, ["train", "--resume", str(a / "epoch_001.pt"), "--epochs", "3"]),
              "newer checkpoint (last.pt)")
    assert _epochs(a) == [1, 2]


def test_resume_with_another_model_or_classes_is_refused(tmp_path: Path, tiny_folder: Path) -> None:
    """Was a load_state_dict RuntimeError traceback."""
    a = tmp_path / "a"
    ic.train(**_quick(**{"train.out": str(a)}))
    _one_line(runner.invoke(app, ["train", "--resume", str(a), "--epochs", "2", "--backbone", "resnet32"]),
              "model.backbone", "resnet20", "resnet32")
    _one_line(runner.invoke(app, ["train", "--resume", str(a), "--epochs", "2", "--data", str(tiny_folder)]),
              "10 classes", "has 3")
    assert _epochs(a) == [1]


# ---------------------------------------------------------------- options that would be silently ignored
def test_pack_size_without_raw_mode_is_refused(tmp_path: Path) -> None:
    """--size only applies to --mode raw; an encoded pack kept the original sizes without a word."""
    out = tmp_path / "d.h5"
    _one_line(runner.invoke(app, ["pack", "digits", str(out), "--size", "64"]), "--size", "--mode raw")
    assert not out.exists()


@pytest.mark.parametrize("method", ["standard", "bbn", "wsdan"])
def test_init_from_outside_decoupling_is_refused(method: str) -> None:
    """--init-from is read by cRT/LWS only; other methods trained from scratch without a word."""
    _one_line(runner.invoke(app, ["train", "--method", method, "--init-from", "stage1.pt"]),
              "--init-from", "--method crt|lws", "--weights")


def test_run_without_validation_split_reports_no_top1(tiny_folder: Path, tmp_path: Path) -> None:
    """The closing line printed the sentinel: 'best val top-1 -1.00% (epoch -1)'."""
    import shutil

    shutil.rmtree(tiny_folder / "val")
    r = runner.invoke(app, ["train", "--data", str(tiny_folder), "--backbone", "resnet20", "--img-size", "16",
                            "--epochs", "1", "--workers", "0", "--no-progress", "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert "-1.00%" not in r.output and "epoch -1" not in r.output
    assert "no validation split" in r.output and (tmp_path / "r" / "best.pt").is_file()


# ---------------------------------------------------------------- eval --data of another tree
def test_eval_on_other_data_uses_its_own_held_out_split(tiny_folder: Path, tmp_path: Path) -> None:
    """Without --split, `eval --data OTHER` kept the checkpoint's split name: a tree with only test/ failed
    with '--split val ... does not exist' although no --split was given."""
    import shutil

    run = tmp_path / "r"
    ic.train(**_quick(**{"data.path": str(tiny_folder), "train.out": str(run)}))
    other = tmp_path / "other"
    shutil.copytree(tiny_folder / "train", other / "train")
    shutil.copytree(tiny_folder / "val", other / "test")
    r = runner.invoke(app, ["eval", str(run), "--data", str(other), "--workers", "0", "--device", "cpu",
                            "--json", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m.json").read_text())["split"] == "test"
    _one_line(runner.invoke(app, ["eval", str(run), "--data", str(other), "--split", "val"]), "--split val")


# ---------------------------------------------------------------- --init-from RUN_DIR
def test_init_from_accepts_a_run_folder(tmp_path: Path) -> None:
    """eval, cam and export take a run folder (its best.pt); --init-from refused one as 'file not found'."""
    s1 = tmp_path / "s1"
    ic.train(**_quick(**{"train.out": str(s1)}))
    args = ["train", "--method", "crt", "--backbone", "resnet20", "--img-size", "16", "--epochs", "1",
            "--workers", "0", "--no-progress", "--device", "cpu", "--set", "train.steps_per_epoch=1"]
    r = runner.invoke(app, [*args, "--init-from", str(s1), "--out", str(tmp_path / "s2")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s2" / "best.pt").is_file()
    (tmp_path / "empty").mkdir()
    _one_line(runner.invoke(app, [*args, "--init-from", str(tmp_path / "empty"), "--out", str(tmp_path / "s3")]),
              "--init-from", "without best.pt")


# ---------------------------------------------------------------- error wording
def test_data_errors_name_the_commands_own_argument(tmp_path: Path) -> None:
    """`stats` and `pack` take the data set as a positional argument; their errors blamed --data."""
    missing = str(tmp_path / "nonexist")
    for args, name in ((["stats", missing], "DATA_OR_CHECKPOINT"), (["pack", missing, "x.h5"], "DATA")):
        assert "--data" not in _one_line(runner.invoke(app, args), f"{name} {missing}:")
    _one_line(runner.invoke(app, ["train", "--data", missing]), f"--data {missing}:")


@pytest.mark.parametrize(("option", "value"), [("--attn", "bogus"), ("--autoaugment", "bogus")])
def test_unknown_value_lists_none_among_the_valid_ones(option: str, value: str) -> None:
    """`--attn none` / `--autoaugment none` are accepted, but the list of valid values left `none` out."""
    _one_line(runner.invoke(app, ["train", option, value]), option, "valid: none, ")
    assert ic.components()["attn"][0] == "none" and "none" not in ic.components()["backbone"]


# ---------------------------------------------------------------- degenerate data, exports over their source
def test_one_class_training_data_is_refused_but_can_be_inspected(tmp_path: Path) -> None:
    """A one-class tree used to train to loss 0 and 100 % top-1 with exit 0."""
    from .conftest import make_folder_dataset

    one = make_folder_dataset(tmp_path / "one", classes=1, train=2, val=1, size=16)
    _one_line(runner.invoke(app, ["train", "--data", str(one), "--out", str(tmp_path / "r"), "--epochs", "1"]),
              f"--data {one}", "at least 2 classes")
    assert not (tmp_path / "r").exists()
    assert runner.invoke(app, ["stats", str(one)]).exit_code == 0  # inspecting it is fine


def test_export_over_its_own_checkpoint_is_refused(tmp_path: Path) -> None:
    res = ic.train(**_quick(**{"train.out": str(tmp_path / "r")}))
    best = Path(res.run_dir) / "best.pt"
    before = best.read_bytes()
    _one_line(runner.invoke(app, ["export", str(res.run_dir), "--out", str(best)]), f"--out {best}", "checkpoint")
    assert best.read_bytes() == before


# ---------------------------------------------------------------- linked sub-folders of a class
def test_images_in_a_linked_subfolder_count_and_link_cycles_do_not(tmp_path: Path) -> None:
    """Path.rglob (Python < 3.13) does not enter linked folders: train/a/more -> elsewhere lost its images
    silently.  They count now; a link to an enclosing folder (a cycle that would pull in other classes) does not."""
    from .conftest import make_folder_dataset

    root = make_folder_dataset(tmp_path / "d", classes=2, train=3, val=1, size=8)
    extra = make_folder_dataset(tmp_path / "extra", classes=1, train=2, val=1, size=8) / "train" / "class_0"
    (root / "train" / "class_0" / "more").symlink_to(extra, target_is_directory=True)
    (root / "train" / "class_1" / "loop").symlink_to("..", target_is_directory=True)
    bundle = open_data(DataConfig(path=str(root), select_split="none"))
    assert bundle.class_counts() == [5, 3]
