"""EMA decay warm-up: the same averages as timm's ModelEmaV3(use_warmup=True), and a short run keeps trained weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imgcls_cli.engine.ema import ModelEma, warmup_decay

from .conftest import quick_overrides


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


@pytest.mark.parametrize("power", [0.75, 2 / 3])
def test_ema_matches_timm_model_ema_v3_with_warmup(power: float) -> None:
    timm_ema = pytest.importorskip("timm.utils.model_ema")
    torch.manual_seed(0)
    model = _net()
    model(torch.randn(2, 3, 6, 6))  # materialise the lazy layer
    ours = ModelEma(model, 0.999, warmup_power=power)
    ref = timm_ema.ModelEmaV3(model, decay=0.999, use_warmup=True, warmup_power=power, exclude_buffers=True)
    g = torch.Generator().manual_seed(1)
    for step in range(1, 40):  # the trainer passes its global step, counted from 1 after the first update
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        model(torch.randn(4, 3, 6, 6, generator=g))  # moves BN running stats (buffers are copied)
        ours.update(model, step=step)
        ref.update(model, step=step)
        assert warmup_decay(step, 0.999, power) == pytest.approx(ref.get_decay(step), abs=1e-12)
    for a, b in zip(ours.module.state_dict().values(), ref.module.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_warmup_off_is_constant_decay() -> None:
    assert warmup_decay(1, 0.99, None) == 0.99 and warmup_decay(500, 0.99, None) == 0.99
    assert warmup_decay(1, 0.99, 0.75) == 0.0  # the first update copies the weights
    assert warmup_decay(10**7, 0.99, 0.75) == 0.99  # capped at the configured decay


def test_short_ema_run_keeps_trained_not_initial_weights(tiny_folder) -> None:
    from imgcls_cli.config import build_config
    from imgcls_cli.engine.trainer import Trainer

    cfg = build_config(None, quick_overrides(**{"data.path": str(tiny_folder), "optim.ema": 0.999,
                                                "train.epochs": 2, "train.batch_size": 8, "optim.lr": 0.05,
                                                "train.tensorboard": False}))
    tr = Trainer(cfg)
    init = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.fit()
    final, ema = tr.model.state_dict(), tr.ema.module.state_dict()
    keys = [k for k, v in final.items() if v.is_floating_point() and "running" not in k]
    to_final = sum(float((ema[k] - final[k]).norm() ** 2) for k in keys) ** 0.5
    to_init = sum(float((ema[k] - init[k]).norm() ** 2) for k in keys) ** 0.5
    # 6 steps: a constant 0.999 would leave ema ~99.4 % initial (to_final >> to_init); the warm-up tracks the run
    assert to_final < 0.5 * to_init
