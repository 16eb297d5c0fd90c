"""The defaults that follow the data (engine/recipe.py): chosen only for what the user left out,
written resolved into the config, scaled by one stated rule under several processes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from imgcls_cli.config import build_config
from imgcls_cli.data.sources import ArraySource, DataBundle
from imgcls_cli.engine.recipe import resolve_recipe
from imgcls_cli.engine.setup import resolve_with_note


def _bundle(size: int) -> DataBundle:
    x = torch.zeros(4, size, size, 3, dtype=torch.uint8).numpy()
    y = torch.tensor([0, 1, 0, 1]).numpy()
    return DataBundle(name="t", train=ArraySource(x, y), val=None, class_names=["a", "b"], img_size=size,
                      crop_scale=(0.08, 1.0), hflip=0.5, val_split=None)


@pytest.mark.parametrize("size, backbone", [(32, "resnet20"), (64, "resnet20"), (65, "resnet18"), (224, "resnet18")])
def test_backbone_follows_the_image_size(size: int, backbone: str) -> None:
    cfg, note = resolve_with_note(build_config(), _bundle(size), torch.device("cpu"))
    assert cfg.model.backbone == backbone and f"backbone {backbone}" in note


def test_resolved_config_has_no_open_field_and_round_trips() -> None:
    cfg, _ = resolve_with_note(build_config(), _bundle(32), torch.device("cpu"))
    d = yaml.safe_load(cfg.to_yaml())
    for section, key in (("model", "backbone"), ("optim", "lr"), ("optim", "weight_decay"),
                         ("optim", "warmup_epochs")):
        assert d[section][key] is not None, (section, key)
    again, note = resolve_with_note(build_config(d), _bundle(32), torch.device("cpu"))
    assert again == cfg and note == ""  # nothing left to choose: the saved config reproduces the run


def test_explicit_options_are_never_changed() -> None:
    given = {"model.backbone": "resnet18", "optim.lr": 0.3, "optim.weight_decay": 0.0, "optim.warmup_epochs": 0.0}
    cfg, note = resolve_with_note(build_config(None, given), _bundle(32), torch.device("cpu"))
    assert (cfg.model.backbone, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_epochs) == (
        "resnet18", 0.3, 0.0, 0.0)
    assert note == ""
    upd, _ = resolve_recipe(build_config(None, {"optim.lr": 0.3}), 32, world=4)
    assert "optim.lr" not in upd  # an explicit rate is used as given on any number of processes


def test_lr_scaling_rule_per_optimizer() -> None:
    """SGD scales linearly with the global batch, AdamW by the square root (the mutation 'linear for both'
    or 'batch per process instead of global' fails here)."""
    sgd = build_config(None, {"optim.name": "sgd", "train.batch_size": 64})
    adamw = build_config(None, {"optim.name": "adamw", "train.batch_size": 64, "optim.accum_steps": 2})
    assert resolve_recipe(sgd, 32, world=1)[0]["optim.lr"] == pytest.approx(0.05 * 2)
    assert resolve_recipe(sgd, 32, world=2)[0]["optim.lr"] == pytest.approx(0.05 * 4)
    assert resolve_recipe(adamw, 32, world=2)[0]["optim.lr"] == pytest.approx(2e-3 * math.sqrt(8), rel=1e-5)
    assert resolve_recipe(sgd, 32, 1)[0]["optim.weight_decay"] == 5e-4
    assert resolve_recipe(adamw, 32, 1)[0]["optim.weight_decay"] == 0.05


@pytest.mark.parametrize("epochs, warm", [(1, 0.15), (2, 0.3), (10, 1.0), (200, 1.0)])
def test_warmup_is_a_fraction_of_short_runs(epochs: int, warm: float) -> None:
    upd, _ = resolve_recipe(build_config(None, {"train.epochs": epochs}), 32, 1)
    assert upd["optim.warmup_epochs"] == pytest.approx(warm)


def test_train_prints_the_chosen_defaults_and_saves_them(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from imgcls_cli.cli.app import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--epochs", "1", "--steps-per-epoch", "2", "--workers", "0",
                                 "--no-progress", "--device", "cpu", "--set", "data.select_split=none",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "defaults: backbone resnet20 (CIFAR-style for 32 px), adamw lr 0.002" in " ".join(r.output.split())
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["backbone"] == "resnet20" and saved["optim"]["lr"] == 0.002
    assert saved["optim"]["warmup_epochs"] == 0.15
