"""Exponential moving average of the weights (Polyak averaging) with a decay warm-up.

ema = d_t * ema + (1 - d_t) * w after optimizer step t (buffers are copied, as timm's ModelEmaV2/V3 with
`exclude_buffers`).  Warm-up follows timm's `ModelEmaV3(use_warmup=True)` (power form, after @crowsonkb):

    t' = t - 1;  d_t = 0 for t' <= 0 (the first update copies the weights),
    d_t = clamp(1 - (1 + t' / gamma) ** -power, 0, decay)   with gamma = 1

so a short run does not keep mostly-initial weights: with power 3/4 the decay reaches 0.99 after ~460
steps and 0.999 after ~10k (timm recommends 3/4 for runs under ~1M steps, 2/3 above).  With warm-up off
the decay is constant from the first step (timm's ModelEmaV2).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def warmup_decay(step: int, decay: float, power: float | None) -> float:
    """The decay used by update number `step` (1 = the first optimizer step); `power=None`: no warm-up."""
    if power is None:
        return decay
    t = step - 1
    if t <= 0:
        return 0.0
    return min(decay, max(0.0, 1.0 - (1.0 + t) ** -power))


class ModelEma:
    def __init__(self, model: nn.Module, decay: float, warmup_power: float | None = None):
        self.decay, self.warmup_power = decay, warmup_power
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """`step`: the optimizer step just taken (the trainer's global step, so resuming continues the ramp)."""
        d = self.decay if step is None else warmup_decay(step, self.decay, self.warmup_power)
        ema_p = [p for p in self.module.parameters()]
        src_p = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, src_p, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
