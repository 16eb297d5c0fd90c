"""Losses.  `build_loss(name, num_classes=C, **options)` builds a registered loss module.

Each loss class may define `config_kwargs(loss_config) -> dict` mapping the config's fields to its
constructor options, so the trainer never names a loss.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import LOSSES


def build_loss(name: str, num_classes: int, **options: Any) -> nn.Module:
    from ..api_checks import check_count, check_options
    from ..config import load_components

    load_components()
    cls = LOSSES.get(name)
    check_count(num_classes, "num_classes")
    check_options(cls, options, f"build_loss({name!r})", skip=("num_classes",))
    return cls(num_classes=num_classes, **options)


def loss_from_config(name: str, loss_cfg: Any, num_classes: int, **extra: Any) -> nn.Module:
    from ..config import load_components

    load_components()
    cls = LOSSES.get(name)
    kw = cls.config_kwargs(loss_cfg) if hasattr(cls, "config_kwargs") else {}
    kw.update(extra)
    return cls(num_classes=num_classes, **kw)
