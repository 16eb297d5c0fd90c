"""Training methods: each is a Task that turns a batch into {"loss", "logits"}.

The train loop knows no method by name; it asks the Task registered under `train.method`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import METHODS
from .base import Task


def task_class(cfg: Any) -> type[Task]:
    from ..config import load_components

    load_components()
    return METHODS.get(cfg.train.method)


def build_task_model(cfg: Any, num_classes: int, class_counts: list[int] | None = None,
                     for_inference: bool = False) -> nn.Module:
    """The model a method trains (and that its checkpoints hold)."""
    return task_class(cfg).build_model(cfg, num_classes, class_counts, for_inference=for_inference)


__all__ = ["Task", "build_task_model", "task_class"]
