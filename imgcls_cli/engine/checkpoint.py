"""Checkpoints that describe themselves and load without pickle.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so it always loads with
`torch.load(weights_only=True)`; a file that needs pickle (code execution) is refused.  Writes go
to a temporary file in the same folder, are flushed and fsynced, then renamed over the target, so
a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

FORMAT = "imgcls-checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def safe_load(path: str | Path, option: str = "checkpoint") -> Any:
    """torch.load with weights_only=True and one-line errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{option}: file not found: {p}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{option} {p}: empty file, not a checkpoint")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "Weights only load failed" in str(e) or "Unsupported" in str(e) or "global" in str(e).lower():
            raise CheckpointError(
                f"{option} {p}: refused, it holds pickled Python objects that could run code (weights_only load: {first[:120]})"
            ) from None
        raise CheckpointError(f"{option} {p}: corrupt or not a PyTorch file ({first[:120]})") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{option} {p}: corrupt or truncated ({msg[:120]})") from None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a torchvision/imgcls weights file or an imgcls checkpoint."""
    obj = safe_load(path, option="--weights")
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"--weights {path}: not a state dict (expected a mapping of names to tensors)")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def validate(ckpt: Any, path: str | Path) -> dict[str, Any]:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an imgcls checkpoint (no '{FORMAT}' marker)")
    for key in ("model", "config", "class_names"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path}: incomplete, '{key}' is missing")
    return ckpt


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    return validate(safe_load(path), path)


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns: a ready model and what describes it."""

    model: nn.Module
    config: Any  # imgcls_cli.config.Config
    class_names: list[str]
    class_counts: list[int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    path: Path
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from the checkpoint's own config and load its weights (eval mode)."""
    from ..config import config_from_dict
    from ..methods import build_task_model

    raw = read_checkpoint(path)
    cfg = config_from_dict(raw["config"], source=f"checkpoint {path}")
    names = list(raw["class_names"])
    model = build_task_model(cfg, len(names), raw.get("class_counts"), for_inference=True)
    try:
        model.load_state_dict(raw["model"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not match its config ({str(e).splitlines()[0][:120]})") from None
    model.to(device).eval()
    norm = raw.get("normalization", {})
    return Checkpoint(
        model=model, config=cfg, class_names=names, class_counts=raw.get("class_counts"),
        mean=tuple(norm.get("mean", (0.485, 0.456, 0.406))), std=tuple(norm.get("std", (0.229, 0.224, 0.225))),
        path=Path(path), raw=raw,
    )
