"""The defaults that follow the data: what `imgcls train` runs when an option is left out.

A field left at None in the config ("data-set default") is resolved here, once the data set is open,
and the resolved value is what config.yaml records; an option the user gave is never changed.

- backbone: a CIFAR-style ResNet-20 (3x3 stem, no max-pool; He et al., arXiv:1512.03385, section 4.2)
  for images of at most `SMALL_IMAGE` px, whose 7x7/2 stem + max-pool would leave 1x1 maps at the last
  stage; ResNet-18 for larger ones.
- optimizer rate and weight decay: each optimizer's base values at a global batch of `BASE_BATCH`,
  scaled to the global batch (batch x processes x accumulation steps).  Rule: linear for SGD (Goyal et al.,
  arXiv:1706.02677, section 2.1), square root for AdamW (Krizhevsky, arXiv:1404.5997; timm's
  `lr_base_scale` does the same for adaptive optimizers); the warm-up below is what lets the scaled rate
  start safely.  An explicit --lr is used as given on any number of processes.
- warm-up: 15 % of the epochs, at most one epoch, per optimizer step.
"""

from __future__ import annotations

import math
from typing import Any

SMALL_IMAGE = 64
BASE_BATCH = 32
BASE_LR = {"sgd": 0.05, "adamw": 2e-3}
BASE_WD = {"sgd": 5e-4, "adamw": 0.05}
SCALING = {"sgd": "linear", "adamw": "sqrt"}


def default_backbone(img_size: int) -> str:
    return "resnet20" if img_size <= SMALL_IMAGE else "resnet18"


def global_batch(cfg: Any, world: int) -> int:
    return cfg.train.batch_size * world * cfg.optim.accum_steps


def scaled_lr(name: str, batch: int) -> float:
    ratio = batch / BASE_BATCH
    return BASE_LR[name] * (ratio if SCALING[name] == "linear" else math.sqrt(ratio))


def default_warmup(epochs: int) -> float:
    return round(min(1.0, 0.15 * epochs), 2)


def resolve_recipe(cfg: Any, img_size: int, world: int) -> tuple[dict[str, Any], str]:
    """(dotted updates for the fields left at None, one line saying what was chosen and why; "" if none)."""
    upd: dict[str, Any] = {}
    said: list[str] = []
    if cfg.model.backbone is None:
        upd["model.backbone"] = default_backbone(img_size)
        kind = "CIFAR-style" if img_size <= SMALL_IMAGE else "ImageNet-style"
        said.append(f"backbone {upd['model.backbone']} ({kind} for {img_size} px)")
    opt = cfg.optim.name
    if cfg.optim.lr is None:
        batch = global_batch(cfg, world)
        upd["optim.lr"] = float(f"{scaled_lr(opt, batch):.6g}")
        said.append(f"{opt} lr {upd['optim.lr']:g} ({BASE_LR[opt]:g} at batch {BASE_BATCH}, {SCALING[opt]} rule,"
                    f" global batch {batch})")
    if cfg.optim.weight_decay is None:
        upd["optim.weight_decay"] = BASE_WD[opt]
        said.append(f"weight decay {BASE_WD[opt]:g}")
    if cfg.optim.warmup_epochs is None:
        upd["optim.warmup_epochs"] = default_warmup(cfg.train.epochs)
        said.append(f"warm-up {upd['optim.warmup_epochs']:g} epochs")
    line = ("defaults: " + ", ".join(said) + " (set any of them to override)") if said else ""
    return upd, line
