"""Regressions from a new user's first session (issue 26): each test names what a user hit."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgcls_cli.cli.app import app

from .conftest import make_folder_dataset, quick_overrides  # noqa: F401
from .test_export import make_checkpoint


def _one_line(r, *needles: str) -> str:
    """The command failed with exit 2 and one line that holds every needle."""
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ---- export --------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", ["0", "5", "6", "99"])
def test_export_opset_outside_the_writable_range_is_refused_in_one_line(opset: str, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "c.pt")
    r = CliRunner().invoke(app, ["export", str(ckpt), "--format", "onnx-legacy", "--opset", opset,
                                 "--out", str(tmp_path / "m.onnx")])
    _one_line(r, f"--opset {opset}", "7..20")
    assert not (tmp_path / "m.onnx").exists()


def test_export_opset_is_the_one_asked_for(tmp_path: Path) -> None:
    import onnx

    ckpt = make_checkpoint(tmp_path / "c.pt")
    r = CliRunner().invoke(app, ["export", str(ckpt), "--format", "onnx-legacy", "--opset", "13",
                                 "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 13


def test_torchscript_export_prints_no_jit_load_deprecation(tmp_path: Path) -> None:
    from imgcls_cli.export import export_checkpoint, read_metadata

    ckpt = make_checkpoint(tmp_path / "c.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = export_checkpoint(ckpt, "torchscript", tmp_path / "m.ts")
        read_metadata(rep.out)
    assert not [w for w in caught if "torch.jit.load" in str(w.message)], [str(w.message) for w in caught]


# ---- pack ----------------------------------------------------------------------------------
def test_pack_refuses_an_existing_pack_unless_overwrite(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.h5"
    out.write_bytes(b"the user's earlier pack")
    r = CliRunner().invoke(app, ["pack", str(tiny_folder), str(out)])
    _one_line(r, str(out), "--overwrite")
    assert out.read_bytes() == b"the user's earlier pack"
    r = CliRunner().invoke(app, ["pack", str(tiny_folder), str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_pack_does_not_create_missing_parent_folders(tiny_folder: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["pack", str(tiny_folder), str(tmp_path / "typo" / "deeper" / "p.h5")])
    _one_line(r, "does not exist")
    assert not (tmp_path / "typo").exists()


# ---- eval ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a one-epoch resnet20 run on a 3-class tree, that tree)."""
    import imgcls_cli as ic

    base = tmp_path_factory.mktemp("tiny_run")
    data = make_folder_dataset(base / "data", size=16)
    ic.train(**quick_overrides(**{"data.path": str(data), "train.out": str(base / "run"), "data.img_size": 16}))
    return base / "run", data


def _eval(*args: str) -> object:
    return CliRunner().invoke(app, ["eval", *args, "--workers", "0", "--device", "cpu"])


def test_each_kind_of_evaluation_keeps_its_own_files(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    run, data = tiny_run
    assert _eval(str(run)).exit_code == 0
    own = (run / "eval_val" / "confusion.csv").read_text()
    other = tmp_path / "other"
    shutil.copytree(data / "val", other / "val")
    (other / "val" / "class_0" / "000.jpg").unlink()  # different counts: a replaced file would show
    r = _eval(str(run), "--data", str(other))
    assert r.exit_code == 0, r.output
    assert (run / "eval_other_val" / "confusion.csv").is_file()
    r = _eval(str(run), "--tau-norm", "1.0")
    assert r.exit_code == 0, r.output
    assert (run / "eval_val_tau-1.0" / "confusion.csv").is_file()
    assert (run / "eval_val" / "confusion.csv").read_text() == own


@pytest.mark.parametrize("held_out", ["val", "test"])
def test_eval_on_a_tree_with_only_a_held_out_split(tiny_run: tuple[Path, Path], tmp_path: Path,
                                                   held_out: str) -> None:
    """The README says eval --data OTHER evaluates OTHER's val/ (else test/); it demanded OTHER/train/."""
    import json
    import shutil

    run, data = tiny_run
    other = tmp_path / "other"
    shutil.copytree(data / "val", other / held_out)
    r = _eval(str(run), "--data", str(other), "--json", str(tmp_path / "m.json"))
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["split"] == held_out and m["n"] == 12
    _one_line(_eval(str(run), "--data", str(other), "--classifier", "ncm"), "--classifier ncm", "train/")


# ---- what a run folder keeps ---------------------------------------------------------------
def test_run_folder_keeps_best_weights_and_last_resume_state_only(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    """The quick start's folder held four full checkpoints (342 MB for a ResNet-18)."""
    from imgcls_cli.engine.checkpoint import read_checkpoint

    run, _ = tiny_run
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "last.pt"]
    best, last = read_checkpoint(run / "best.pt"), read_checkpoint(run / "last.pt")
    assert "optimizer" not in best and "optimizer" in last and best["model"].keys() == last["model"].keys()
    assert (run / "best.pt").stat().st_size < 0.7 * (run / "last.pt").stat().st_size  # no SGD momentum buffers
    _one_line(CliRunner().invoke(app, ["train", "--resume", str(run / "best.pt"), "--out", str(tmp_path / "r")]),
              "weights only", "last.pt", "--weights")


def test_keep_checkpoints_keeps_epoch_files(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, data = tiny_run
    r = CliRunner().invoke(app, ["train", "--data", str(data), "--backbone", "resnet20", "--img-size", "16",
                                 "--epochs", "2", "--workers", "0", "--device", "cpu", "--no-progress",
                                 "--keep-checkpoints", "1", "--out", str(tmp_path / "k")])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "k").glob("*.pt")) == ["best.pt", "epoch_002.pt", "last.pt"]


# ---- report --------------------------------------------------------------------------------
def test_report_lists_the_run_behind_latest_under_its_own_name(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from imgcls_cli.engine.rundir import mark_latest

    run, _ = tiny_run
    runs = tmp_path / "runs"
    mine = runs / "myrun"  # sorts after "latest", as a --name run does
    mine.mkdir(parents=True)
    for f in ("config.yaml", "metrics.jsonl"):
        shutil.copy(run / f, mine / f)
    mark_latest(mine, runs)
    r = CliRunner().invoke(app, ["report", str(runs), "--format", "csv"])
    assert r.exit_code == 0, r.output
    rows = [ln.split(",")[0] for ln in r.output.strip().splitlines()[1:]]
    assert rows == ["myrun"], r.output


def test_report_of_a_missing_folder_says_so() -> None:
    _one_line(CliRunner().invoke(app, ["report", "/nope"]), "/nope", "no such folder")


# ---- files that are not checkpoints --------------------------------------------------------
@pytest.mark.parametrize("how", [["eval", "{f}"], ["train", "--weights", "{f}", "--epochs", "1"]])
def test_a_text_file_is_not_a_checkpoint_not_a_pickle_threat(tmp_path: Path, how: list[str]) -> None:
    f = tmp_path / "README.md"
    f.write_text("# imgcls\n\nA research toolkit.\n")
    line = _one_line(CliRunner().invoke(app, [a.format(f=f) for a in how]), str(f), "not a checkpoint")
    assert "pickle" not in line


def test_a_real_pickle_payload_gets_the_pickle_message_uncut(tmp_path: Path) -> None:
    import argparse

    import torch

    f = tmp_path / "unsafe.pt"
    torch.save({"args": argparse.Namespace(lr=0.1)}, f)
    line = _one_line(CliRunner().invoke(app, ["eval", str(f)]), "pickled Python objects", "argparse.Namespace")
    assert line.rstrip().endswith("plain data only")  # the sentence is whole, not cut at 120 characters


# ---- value errors name what was typed ------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--epochs", "0"], "--epochs (train.epochs): Input should be greater than or equal to 1"),
    (["--split", "val", "--lr", "-1"], "--lr (optim.lr):"),
    (["--img-size", "4"], "--img-size (data.img_size):"),
    (["--set", "optim.momentum=2"], "--set optim.momentum (optim.momentum):"),
])
def test_value_errors_name_the_option_as_typed(args: list[str], needle: str) -> None:
    _one_line(CliRunner().invoke(app, ["train", *args]), needle)


def test_a_bad_value_in_the_yaml_still_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 0\n")
    line = _one_line(CliRunner().invoke(app, ["train", "--config", str(f), "--lr", "0.1"]), f"{f}: train.epochs")
    assert "--epochs" not in line


# ---- the resolved head -----------------------------------------------------------------------
@pytest.mark.parametrize("loss", [{"loss.name": "arcface"}, {"loss.name": "center", "loss.center_on": "arcface"}])
def test_arcface_config_states_the_cosine_head_it_builds(loss: dict[str, str], tmp_path: Path) -> None:
    import yaml

    import imgcls_cli as ic
    from imgcls_cli.config import build_config

    assert build_config(None, loss).model.head == "cosine"
    assert build_config(None, {**loss, "model.head": "linear"}).model.head == "cosine"  # old configs load as built
    res = ic.train(**quick_overrides(**loss, **{"data.img_size": 16, "train.steps_per_epoch": 1,
                                                "train.out": str(tmp_path / "r")}))
    assert yaml.safe_load((res.run_dir / "config.yaml").read_text())["model"]["head"] == "cosine"
    r = CliRunner().invoke(app, ["stats", str(res.run_dir / "best.pt"), "--runs", "1"])
    assert r.exit_code == 0, r.output
    assert "head: linear" not in r.output and "cosine" in r.output, r.output


def test_an_arcface_run_saved_with_head_linear_still_resumes(tmp_path: Path) -> None:
    import torch

    import imgcls_cli as ic
    from imgcls_cli.engine.checkpoint import atomic_save, read_checkpoint

    over = quick_overrides(**{"loss.name": "arcface", "data.img_size": 16, "train.steps_per_epoch": 1,
                              "train.out": str(tmp_path / "r")})
    ic.train(**over)
    st = read_checkpoint(tmp_path / "r" / "last.pt")
    st["config"]["model"]["head"] = "linear"  # as written before the head was resolved in the config
    st.pop("digest")
    atomic_save(st, tmp_path / "r" / "last.pt")
    res = ic.train(**{**over, "train.epochs": 2, "train.resume": str(tmp_path / "r" / "last.pt")})
    assert res.epochs_run == 2 and isinstance(torch.load(tmp_path / "r" / "last.pt", weights_only=True), dict)


# ---- schedules longer than the run -----------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--warmup-epochs", "20", "--epochs", "10"], "--warmup-epochs 20"),
    (["--warmup-epochs", "10", "--epochs", "10"], "--warmup-epochs 10"),
    (["--freeze-backbone-epochs", "11", "--epochs", "10"], "--freeze-backbone-epochs 11"),
])
def test_warmup_or_freeze_longer_than_the_run_is_refused(args: list[str], needle: str) -> None:
    _one_line(CliRunner().invoke(app, ["train", *args]), needle, "--epochs 10")


def test_warmup_and_freeze_within_the_run_are_accepted() -> None:
    from imgcls_cli.config import build_config

    cfg = build_config(None, {"optim.warmup_epochs": 9.5, "train.freeze_backbone_epochs": 10, "train.epochs": 10})
    assert cfg.optim.warmup_epochs == 9.5


@pytest.mark.parametrize("args, needles", [
    (["--warmup-epochs", "20"], ["--warmup-epochs 20 (optim.warmup_epochs)", "train.epochs 10", "--epochs"]),
    (["--set", "optim.warmup_epochs=20", "--epochs", "10"], ["--set optim.warmup_epochs=20", "--epochs 10"]),
    (["--freeze-backbone-epochs", "11", "--set", "train.epochs=10"],
     ["--freeze-backbone-epochs 11", "--set train.epochs=10"]),
])
def test_a_typed_warmup_or_freeze_the_run_has_no_room_for_is_refused(args: list[str], needles: list[str]) -> None:
    """Whatever gave the run's length (the default 10 epochs, --set), the value typed is what cannot fit."""
    _one_line(CliRunner().invoke(app, ["train", *args]), *needles)


def test_api_overrides_are_refused_as_typed_options_are() -> None:
    import imgcls_cli as ic
    from imgcls_cli.errors import ImgclsError

    with pytest.raises(ImgclsError, match=r"optim.warmup_epochs 5: must be below train.epochs 2"):
        ic.train(**quick_overrides(**{"optim.warmup_epochs": 5.0, "train.epochs": 2}))


@pytest.mark.parametrize("field, option", [("optim.warmup_epochs", "optim.warmup_epochs 5"),
                                           ("train.freeze_backbone_epochs", "train.freeze_backbone_epochs 5")])
def test_a_recipes_warmup_or_freeze_does_not_refuse_a_shortened_run(field: str, option: str, tmp_path: Path) -> None:
    """`--config RECIPE --epochs 1` (a smoke test of a 200-epoch recipe) runs with the recipe's value and one
    warning line naming it; the run's config.yaml says what ran, and its checkpoint loads again."""
    import yaml

    import imgcls_cli as ic

    data = make_folder_dataset(tmp_path / "data", size=16)
    recipe = tmp_path / "recipe.yaml"
    sections: dict = {"train": {"epochs": 200}, "optim": {}}
    sections[field.split(".")[0]][field.split(".")[1]] = 5
    recipe.write_text(yaml.safe_dump(sections))
    r = CliRunner().invoke(app, ["train", "--config", str(recipe), "--epochs", "1", "--data", str(data),
                                 "--backbone", "resnet20", "--img-size", "16", "--workers", "0", "--device", "cpu",
                                 "--no-progress", "--set", "data.select_split=none", "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    warned = [ln for ln in r.output.splitlines() if option in ln]
    assert len(warned) == 1 and "warning" in warned[0] and "train.epochs 1" in warned[0], r.output
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1
    assert (saved["optim"]["warmup_epochs"], saved["train"]["freeze_backbone_epochs"]) == (
        (5, 0) if field.startswith("optim") else (0.15, 5))  # the default warm-up of a 1-epoch run (engine/recipe)
    assert ic.load_checkpoint(str(tmp_path / "r")).config.train.epochs == 1


# ---- cRT takes its architecture from stage 1 ---------------------------------------------------
def test_crt_takes_the_architecture_from_the_stage1_checkpoint(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    import yaml

    run, data = tiny_run  # stage 1: resnet20, not the default resnet18
    args = ["train", "--method", "crt", "--init-from", str(run), "--data", str(data), "--img-size", "16",
            "--epochs", "1", "--workers", "0", "--device", "cpu", "--no-progress"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "s2")])
    assert r.exit_code == 0, r.output
    assert yaml.safe_load((tmp_path / "s2" / "config.yaml").read_text())["model"]["backbone"] == "resnet20"
    _one_line(CliRunner().invoke(app, [*args, "--backbone", "resnet18", "--out", str(tmp_path / "s3")]),
              "model.backbone='resnet20'", "must match")


# ---- packaging noise -------------------------------------------------------------------------
def test_pyproject_licence_is_an_spdx_string_for_setuptools_77() -> None:
    """license = { text = ... } printed setuptools' licence-deprecation banner at every install."""
    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    assert "setuptools>=77" in meta["build-system"]["requires"]  # the first that reads an SPDX expression
    assert not any(c.startswith("License ::") for c in meta["project"].get("classifiers", []))


def test_readme_parameter_counts_are_what_build_model_gives() -> None:
    """The README said ResNet-50 + CBAM is 28.07 M; build_model gives 28.09 M."""
    import re

    import imgcls_cli as ic

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for label, attn in (("SE-ResNet-50", "se"), ("ResNet-50 + CBAM", "cbam")):
        m = re.search(re.escape(label) + r" (\d+\.\d\d) M", text)
        assert m, label
        n = sum(p.numel() for p in ic.build_model("resnet50", 1000, attn=attn).parameters())
        assert f"{n / 1e6:.2f}" == m.group(1), (label, n)


# ---- activation maps ---------------------------------------------------------------------------
def _png(path: Path, size: int = 32) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _notes(r) -> list[str]:
    return [ln for ln in r.output.splitlines() if ln.startswith("note:")]


def test_cam_says_when_the_layer_is_too_coarse_and_which_would_do(tmp_path: Path) -> None:
    """ResNet-18 at 32 px: layer4 is 1x1 (the quick start's flat square), layer3 2x2, layer2 4x4."""
    ckpt = make_checkpoint(tmp_path / "c.pt", names=["a", "b"], **{"model.backbone": "resnet18"})
    img = _png(tmp_path / "x.png")
    r = CliRunner().invoke(app, ["cam", str(img), "-c", str(ckpt), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    notes = _notes(r)
    assert len(notes) == 1 and "--layer layer4" in notes[0] and "1x1" in notes[0], r.output
    assert "--layer layer2 gives a finer map" in notes[0]
    r = CliRunner().invoke(app, ["cam", str(img), "-c", str(ckpt), "--out", str(tmp_path / "o"), "--device", "cpu",
                                 "--layer", "layer2"])
    assert r.exit_code == 0 and not _notes(r), r.output


def test_cam_explains_an_all_zero_map_of_the_other_class(tmp_path: Path) -> None:
    """Two classes with opposite classifier rows (what training gives): Grad-CAM of the second is ReLU(-map)."""
    import torch

    from imgcls_cli.engine.checkpoint import atomic_save, read_checkpoint

    ckpt = make_checkpoint(tmp_path / "c.pt", names=["cat", "dog"])  # resnet20: layer3 is 8x8 at 32 px
    st = read_checkpoint(ckpt)
    w = st["model"]["fc.weight"].abs()  # (2, 64): features are >= 0 after the last ReLU, so class 0's map is >= 0
    st["model"]["fc.weight"] = torch.stack([w[0], -w[0]])
    st.pop("digest")
    atomic_save(st, ckpt)
    r = CliRunner().invoke(app, ["cam", str(_png(tmp_path / "x.png")), "-c", str(ckpt), "--topk", "2",
                                 "--out", str(tmp_path / "o"), "--device", "cpu", "--save-raw"])
    assert r.exit_code == 0, r.output
    import numpy as np

    raws = sorted((tmp_path / "o").glob("*.npy"))
    empty = [p for p in raws if not np.load(p).any()]
    assert len(raws) == 2 and len(empty) == 1, raws
    notes = _notes(r)
    assert len(notes) == 1 and "all zero" in notes[0] and "'dog'" in notes[0], r.output
