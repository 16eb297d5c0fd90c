"""Issue 12, config: bad YAML files and options are refused with the field path and a reason,
exit status 2, one line, no traceback (nothing is trained)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgcls_cli.cli.app import app

runner = CliRunner()

YAML_CASES = {
    "unknown key": ("model:\n  backbnoe: resnet20\n", ["model.backbnoe", "unknown key"]),
    "unknown section": ("modle:\n  backbone: resnet20\n", ["modle", "unknown key"]),
    "wrong type": ("train:\n  epochs: ten\n", ["train.epochs", "integer"]),
    "wrong type nested": ("aug:\n  crop_scale: big\n", ["aug.crop_scale"]),
    "out of range": ("optim:\n  lr: -0.1\n", ["optim.lr", "greater than 0"]),
    "out of range prob": ("aug:\n  hflip: 1.5\n", ["aug.hflip", "less than or equal to 1"]),
    "bad literal": ("optim:\n  schedule: wavy\n", ["optim.schedule", "cosine"]),
    "unknown component": ("model:\n  backbone: resnet9000\n", ["model.backbone", "resnet18"]),
    "incompatible": ("train:\n  method: crt\n", ["--init-from"]),
    "incompatible multistep": ("optim:\n  schedule: multistep\n", ["optim.milestones"]),
    "not a mapping": ("- a\n- b\n", ["expected a mapping"]),
    "invalid yaml": ("model: [unclosed\n", ["not valid YAML"]),
    "crop order": ("aug:\n  crop_scale: [0.9, 0.1]\n", ["crop_scale"]),
}

OPTION_CASES = {
    "epochs zero": (["--epochs", "0"], ["train.epochs"]),
    "unknown backbone": (["--backbone", "resnt50"], ["model.backbone", "resnet50"]),
    "unknown sampler": (["--sampler", "balanced"], ["data.sampler", "class_balanced"]),
    "negative lr": (["--lr", "-1"], ["optim.lr"]),
    "bad --set key": (["--set", "optim.momentun=0.9"], ["optim.momentun", "unknown key"]),
    "bad --set syntax": (["--set", "optim.momentum"], ["--set", "KEY=VALUE"]),
    "bad --set yaml value": (["--set", "optim.milestones=[1,2"], ["--set", "optim.milestones", "YAML"]),
    "bad milestones": (["--milestones", "a,b"], ["--milestones"]),
    "missing config": (["--config", "nope.yaml"], ["--config", "nope.yaml"]),
    "missing data": (["--data", "no/such/dir", "--epochs", "1"], ["--data", "no/such/dir"]),
}


def _check(result, needles: list[str]) -> None:
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for n in needles:
        assert n in text, f"{n!r} not in {text!r}"
    # figures for docs/reliability.md: 13 YAML files + 9 option sets, each exit 2 with one line
    assert not Path("runs").exists(), "a run directory was made for a refused config"


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_bad_yaml_config(case: str, tmp_path: Path) -> None:
    body, needles = YAML_CASES[case]
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    _check(runner.invoke(app, ["train", "--config", str(f)]), needles)


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_bad_options(case: str) -> None:
    args, needles = OPTION_CASES[case]
    _check(runner.invoke(app, ["train", *args]), needles)



# a section written as a scalar, or left empty, and an option that sets a key inside it
YAML_WITH_OPTION_CASES = {
    "scalar section": ("data: digits\n", ["--img-size", "16"], ["data", "data.img_size", "mapping"]),
    "scalar under a section": ("model:\n  backbone: resnet20\n", ["--set", "model.backbone.depth=3"],
                               ["model.backbone", "mapping"]),
}


@pytest.mark.parametrize("case", list(YAML_WITH_OPTION_CASES))
def test_bad_yaml_section_with_option(case: str, tmp_path: Path) -> None:
    body, args, needles = YAML_WITH_OPTION_CASES[case]
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    _check(runner.invoke(app, ["train", "--config", str(f), *args]), [str(f), *needles])


def test_empty_yaml_section_takes_an_option(tmp_path: Path) -> None:
    """`optim:` with every key commented out is an empty section: --lr fills it (was a TypeError)."""
    from imgcls_cli.config import load_config

    f = tmp_path / "empty_section.yaml"
    f.write_text("optim:\n  # lr: 0.1\nmodel:\n  backbone: resnet20\n")
    cfg = load_config(f, {"optim.lr": 0.05, "train.epochs": 1})
    assert cfg.optim.lr == 0.05 and cfg.model.backbone == "resnet20"
