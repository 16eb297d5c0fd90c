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
    oc = Config().replace(**{"optim.name": name, "optim.lr": 0.01}).optim
    opt = build_optimizer(oc, param_groups(model, 1e-4, True), torch.device("cpu"))
    assert opt.defaults["fused"] is True
    oc = Config().replace(**{"optim.name": name, "optim.lr": 0.01, "optim.fused": False}).optim
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


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # the CUDA context is only built, not entered
def test_autocast_follows_amp_on_cuda_and_cpu_amp_on_the_cpu() -> None:
    from imgcls_cli.engine.device import autocast

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    tc = Config().train
    with autocast(cpu, tc):
        assert not torch.is_autocast_enabled("cpu")  # the default keeps CPU runs in float32
    with autocast(cpu, Config().replace(**{"train.cpu_amp": True}).train):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    ctx = autocast(cuda, tc)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    assert not isinstance(autocast(cuda, Config().replace(**{"train.amp": False}).train), torch.autocast)


def test_cpu_amp_run_trains_in_bf16_with_channels_last(tiny_folder, tmp_path) -> None:
    from imgcls_cli.engine.trainer import Trainer

    cfg = Config().replace(**quick_overrides(**{"data.path": str(tiny_folder), "train.out": str(tmp_path / "r"),
                                                "train.cpu_amp": True}))
    trainer = Trainer(cfg)
    assert trainer.cfg.train.channels_last is True  # resolved: channels_last goes with bf16 on the CPU
    seen = []
    trainer.train_model.register_forward_hook(
        lambda m, i, o: seen.append((torch.is_autocast_enabled("cpu"), o.dtype)) if m.training else None)
    trainer.fit()
    assert seen and all(s == (True, torch.bfloat16) for s in seen)
