"""CPU training-step defaults (issue 10): fused optimizer kernels and trimmed convolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imgcls_cli.config import Config
from imgcls_cli.engine.optim import build_optimizer, param_groups
from imgcls_cli.models.trimmed_conv import TrimmedConv2d

from .conftest import quick_overrides


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_cpu_optimizers_default_to_fused_kernels(name: str) -> None:
    model = nn.Linear(4, 2)
    oc = Config().replace(**{"optim.name": name}).optim
    opt = build_optimizer(oc, param_groups(model, 1e-4, True), torch.device("cpu"))
    assert opt.defaults["fused"] is True
    oc = Config().replace(**{"optim.name": name, "optim.fused": False}).optim
    opt = build_optimizer(oc, param_groups(model, 1e-4, True), torch.device("cpu"))
    assert not opt.defaults["fused"] and opt.defaults["foreach"] is True


@pytest.mark.parametrize("trim", [True, False])
def test_trainer_trims_convs_on_the_cpu_unless_told_not_to(tiny_folder, tmp_path, trim: bool) -> None:
    from imgcls_cli.engine.trainer import Trainer

    cfg = Config().replace(**quick_overrides(**{"data.path": str(tiny_folder), "train.out": str(tmp_path / "r"),
                                                "train.trim_convs": trim}))
    trainer = Trainer(cfg)
    kinds = {type(m) for m in trainer.model.modules() if isinstance(m, nn.Conv2d)}
    assert kinds == ({TrimmedConv2d} if trim else {nn.Conv2d})
    trainer.fit()
    assert (tmp_path / "r" / "last.pt").is_file()
