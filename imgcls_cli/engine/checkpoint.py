"""Checkpoints that describe themselves and load without pickle.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so it always loads with
`torch.load(weights_only=True)`; a file that needs pickle (code execution) is refused.  Writes go
to a temporary file in the same folder, are flushed and fsynced, then renamed over the target, so
a crash leaves either the old or the new file, never half of one.  A write that fails (a full disk,
a read-only or vanished folder, a quota) raises `CheckpointWriteError`: one line naming the file and
the reason, the temporary file removed, the previous file untouched.  PyTorch's zip container has no
checksum of its own (a flipped bit in a tensor loads silently), so an imgcls checkpoint carries
`digest`: a SHA-256 over its whole content, verified on every read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ImgclsError

FORMAT = "imgcls-checkpoint"
VERSION = 1


def _feed(h: Any, obj: Any) -> None:
    """Hash a checkpoint structure canonically: type tags, sorted dict keys, raw tensor bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)  # (numel * itemsize,) raw bytes
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for k in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            h.update(repr(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d" % len(obj))
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def content_digest(ckpt: dict[str, Any]) -> str:
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in ckpt.items() if k != "digest"})
    return h.hexdigest()


def _remove_stale_tmp(path: Path) -> None:
    """Temporary files of writers that were killed mid-save (their process no longer exists)."""
    for tmp in path.parent.glob(f".{path.name}.tmp.*"):
        try:
            os.kill(int(tmp.name.rsplit(".", 1)[1]), 0)
        except ValueError:
            continue
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            continue


class CheckpointWriteError(ImgclsError):
    """A checkpoint could not be written (disk full, read-only folder, ...); the previous file is intact."""


class _RecordingFile:
    """A file whose first write error is kept: torch.save reports it only as a RuntimeError without the errno."""

    def __init__(self, f: Any):
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def _write_error(path: Path, e: BaseException) -> CheckpointWriteError:
    if isinstance(e, OSError) and e.strerror:
        reason = e.strerror + (f" ({errno.errorcode[e.errno]})" if e.errno in errno.errorcode else "")
    else:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
    old = "the previous file is intact" if path.exists() else "no earlier file was there"
    return CheckpointWriteError(f"cannot write {path}: {reason}; {old} (free space or make {path.parent} writable,"
                                f" then resume)")


def atomic_save(obj: Any, path: str | Path) -> None:
    """Write `obj` so that `path` is always the old or the new complete file (tmp, fsync, rename)."""
    path = Path(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = {**obj, "digest": content_digest(obj)}
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    rec = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(path)
        with open(tmp, "wb") as f:
            rec = _RecordingFile(f)
            torch.save(obj, rec)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # RuntimeError: torch.save's report of a failed write
        if isinstance(e, RuntimeError) and (rec is None or rec.error is None):
            raise
        raise _write_error(path, rec.error if rec is not None and rec.error is not None else e) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _payload_kind(p: Path) -> str | None:
    """'zip' (torch.save), 'pickle' (legacy torch.save, pickle.dump) or None, from the first bytes."""
    with p.open("rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        return "zip"
    return "pickle" if head[:1] == b"\x80" else None  # pickle protocol >= 2 opens with PROTO


def _unsafe_reason(err: str) -> str:
    """What the weights-only unpickler refused, from torch's long message ('GLOBAL argparse.Namespace')."""
    m = re.search(r"Unsupported global: GLOBAL (\S+)", err) or re.search(r"(Unsupported operand \d+)", err)
    return f"it needs {m.group(1)}" if m else "a Python object the weights-only loader does not allow"


def safe_load(path: str | Path, option: str = "checkpoint") -> Any:
    """torch.load with weights_only=True and one-line errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{option}: file not found: {p}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{option} {p}: empty file, not a checkpoint")
    kind = _payload_kind(p)
    if kind is None:  # text, an image, ...: torch.load's pickle error about it would be about code execution
        raise CheckpointError(f"{option} {p}: not a checkpoint (not a file written by torch.save; give an imgcls"
                              f" .pt file or a run folder)")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": the refusal below says what matters
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(p, map_location="cpu", weights_only=True)
    except MemoryError:
        raise CheckpointError(f"{option} {p}: corrupt (a length field asks for more memory than exists)") from None
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            why = _unsafe_reason(str(e))
            raise CheckpointError(f"{option} {p}: refused, it holds pickled Python objects that could run code when"
                                  f" loaded ({why}); imgcls loads tensors and plain data only") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{option} {p}: corrupt or not a PyTorch file ({first[:120]})") from None
    except Exception as e:  # any other failure of a damaged file (RuntimeError, EOFError, KeyError, ...)
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
    if "digest" not in ckpt:
        raise CheckpointError(f"checkpoint {path}: no integrity digest (damaged, or not written by imgcls)")
    if ckpt["digest"] != content_digest(ckpt):
        raise CheckpointError(f"checkpoint {path}: corrupt, its content does not match its SHA-256 digest")
    return ckpt


def checkpoint_file(path: str | Path, option: str = "checkpoint") -> Path:
    """What a command's checkpoint argument names: a .pt file as given, or a run folder's best.pt."""
    p = Path(path)
    if not p.is_dir():
        return p
    if not (p / "best.pt").is_file():
        raise CheckpointError(f"{option} {p}: a folder without best.pt (give a run folder or a .pt checkpoint)")
    return p / "best.pt"


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
        first = str(e).splitlines()[0][:120]
        raise CheckpointError(f"checkpoint {path}: weights do not match its config ({first})") from None
    model.to(device).eval()
    norm = raw.get("normalization", {})
    return Checkpoint(
        model=model, config=cfg, class_names=names, class_counts=raw.get("class_counts"),
        mean=tuple(norm.get("mean", (0.485, 0.456, 0.406))), std=tuple(norm.get("std", (0.229, 0.224, 0.225))),
        path=Path(path), raw=raw,
    )
