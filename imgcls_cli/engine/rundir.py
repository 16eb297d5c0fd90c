"""Run directories: runs/<name>/ with config.yaml, metrics.jsonl, last.pt, best.pt.

`runs/latest` (a symlink, plus `runs/latest.txt` where links are not allowed) points at the most
recent run so `imgcls cam img.jpg` and `imgcls eval` can find it.  An existing run is never
overwritten: without --resume a new name is chosen (`-2`, `-3`, ...) or, for an explicit --out
that already holds checkpoints, the run is refused.  A resumed run continues in its checkpoint's
folder (or a new --out); it is refused where it would overwrite another run or newer checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import ImgclsError


def default_name(cfg: Any) -> str:
    data = Path(cfg.data.path).stem or "data"
    parts = [time.strftime("%Y%m%d-%H%M%S"), cfg.model.backbone]
    if cfg.model.attn != "none":
        parts.append(cfg.model.attn)
    if cfg.loss.name != "ce":
        parts.append(cfg.loss.name)
    if cfg.train.method != "standard":
        parts.append(cfg.train.method)
    parts.append(data)
    return "-".join(parts)


def make_run_dir(cfg: Any, resume_from: Path | None = None) -> Path:
    """The run's folder: --out, else runs/<name>; a resumed run without either continues in its checkpoint's folder."""
    resuming = resume_from is not None
    if cfg.train.out:
        d = Path(cfg.train.out)
        if not resuming and (d / "last.pt").exists():
            raise ImgclsError(f"--out {d}: already holds a run (last.pt); pass --resume {d} or choose another --out")
    elif resuming and not cfg.train.name:
        d = Path(resume_from).parent
    else:
        base = Path(cfg.train.runs_dir) / (cfg.train.name or default_name(cfg))
        d, i = base, 2
        while d.exists() and not resuming:
            d = base.with_name(f"{base.name}-{i}")
            i += 1
    if resuming:
        _check_resume_target(d, Path(resume_from))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _check_resume_target(d: Path, resume_from: Path) -> None:
    """Continuing a run writes last.pt, best.pt and metrics.jsonl in `d`: never over another run or newer epochs."""
    from .state import newest_valid_checkpoint

    if not (d / "last.pt").exists():
        return
    own = resume_from.parent.resolve()
    if d.resolve() != own:
        raise ImgclsError(f"--out {d}: already holds another run (last.pt), which resuming {resume_from} there would"
                          f" overwrite; leave out --out to continue in {resume_from.parent}, or choose a new --out")
    newest = newest_valid_checkpoint(d)
    if newest is not None and newest.resolve() != resume_from.resolve():
        raise ImgclsError(f"--resume {resume_from}: {d} holds a newer checkpoint ({newest.name}) that continuing"
                          f" there would overwrite; resume {d} itself, or pass --out NEW_DIR to branch off")


def mark_latest(run_dir: Path, runs_dir: str | Path) -> None:
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(run_dir.resolve(), runs.resolve())
    (runs / "latest.txt").write_text(str(run_dir.resolve()) + "\n")
    link = runs / "latest"
    try:
        tmp = runs / f".latest.{os.getpid()}"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(target)
        os.replace(tmp, link)
    except OSError:
        pass


def latest_run(runs_dir: str | Path = "runs") -> Path | None:
    runs = Path(runs_dir)
    link = runs / "latest"
    if link.is_symlink() and link.resolve().is_dir():
        return link.resolve()
    txt = runs / "latest.txt"
    if txt.is_file():
        p = Path(txt.read_text().strip())
        if p.is_dir():
            return p
    cands = [p.parent for p in runs.glob("*/best.pt")] if runs.is_dir() else []
    return max(cands, key=lambda p: (p / "best.pt").stat().st_mtime) if cands else None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    """Write `obj` as JSON to `path` through a temporary file: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
