"""Run directories: runs/<name>/ with config.yaml, metrics.jsonl, last.pt, best.pt.

`runs/latest` (a symlink, plus `runs/latest.txt` where links are not allowed) points at the most
recent run so `imgcls cam img.jpg` and `imgcls eval` can find it.  An existing run is never
overwritten: without --resume a new name is chosen (`-2`, `-3`, ...) or, for an explicit --out
that already holds checkpoints, the run is refused.  A resumed run continues in its checkpoint's
folder (or a new --out); it is refused where it would overwrite another run or newer checkpoints.

A run directory has one writer: `RunLock` holds an exclusive `flock` on `RUN/.lock` for the life of
the training process (the kernel drops it when the process dies, however it dies, so a lock left by a
dead process is never in the way); a second `imgcls train --out RUN` or `--resume RUN` is refused in
one line naming the holder.  Where the file system has no flock (some network mounts), the pid and
host written in the file decide: a live process on this host holds it, anything else is stale.
`runs/latest` and `runs/latest.txt` are replaced atomically (a new link or file renamed over the old).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
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


class RunLock:
    """The one writer of a run directory (see the module docstring).  `release()` or process exit frees it."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / ".lock"
        self.fd: int | None = None

    def _refuse(self, holder: str) -> ImgclsError:
        return ImgclsError(f"run directory {self.run_dir}: another imgcls process ({holder or 'unknown'}) is writing"
                           f" it; wait for it to finish or stop it, or choose another --out")

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ImgclsError(f"run directory {self.run_dir}: cannot create {self.path.name} ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise self._refuse(holder) from None
        except OSError as e:  # no flock here (ENOLCK, EOPNOTSUPP): the recorded holder decides
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            if _holder_alive(holder):
                os.close(fd)
                raise self._refuse(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass
            os.close(fd)

    __del__ = release


def _holder_alive(holder: str) -> bool:
    """Whether the 'pid N on HOST' recorded in a lock file names a live process of this host (not this one)."""
    parts = holder.split()
    if len(parts) < 4 or parts[0] != "pid" or not parts[1].isdigit() or parts[3] != socket.gethostname():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_run_dir(cfg: Any, resume_from: Path | None = None) -> tuple[Path, RunLock]:
    """The run's folder, locked for this process: --out, else runs/<name>; a resumed run without either
    continues in its checkpoint's folder."""
    resuming = resume_from is not None
    if cfg.train.out:
        d = Path(cfg.train.out)
    elif resuming and not cfg.train.name:
        d = Path(resume_from).parent
    else:
        base = Path(cfg.train.runs_dir) / (cfg.train.name or default_name(cfg))
        d, i = base, 2
        base.parent.mkdir(parents=True, exist_ok=True)
        while not resuming:  # claimed by mkdir itself: two runs started in the same second get two folders
            try:
                d.mkdir()
                break
            except FileExistsError:
                d = base.with_name(f"{base.name}-{i}")
                i += 1
    d.mkdir(parents=True, exist_ok=True)
    lock = RunLock(d).acquire()  # before anything is checked or written: a running writer is named first
    try:
        if not resuming and cfg.train.out and (d / "last.pt").exists():
            raise ImgclsError(f"--out {d}: already holds a run (last.pt); pass --resume {d} or choose another --out")
        if resuming:
            _check_resume_target(d, Path(resume_from))
    except BaseException:
        lock.release()
        raise
    return d, lock


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
    try:  # readers see the old or the new name, never an empty file; a runs/ we cannot write has no latest
        write_text_atomic(runs / "latest.txt", str(run_dir.resolve()) + "\n")
    except ImgclsError:
        pass
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


def _cannot_write(path: Path, e: OSError) -> ImgclsError:
    code = f" ({errno.errorcode[e.errno]})" if e.errno in errno.errorcode else ""
    return ImgclsError(f"cannot write {path}: {e.strerror or e}{code} (free space or make {path.parent} writable)")


def write_text_atomic(path: Path, text: str) -> None:
    """`path` holds the old or the new text, never a part; one-line error naming the file if it cannot be written."""
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _cannot_write(path, e) from None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _cannot_write(path, e) from None


def write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    """Write `obj` as JSON to `path` through a temporary file: a reader never sees half a file."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
