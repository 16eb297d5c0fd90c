"""What goes into a training checkpoint, and how run checkpoints are kept and pruned.

Only tensors, numbers, strings, lists and dicts: loadable with weights_only=True.  `last.pt` is
written every epoch before its evaluation (with `eval_pending` and the epoch's training record, so a
resumed run redoes only the evaluation) and again after it, and on a signal mid-epoch with the
sampler position, with everything resuming needs; `best.pt` when the selection-split top-1 improves,
with the weights only (evaluation, export, CAM, --init-from and --weights read nothing else, and
optimizer state would double its size); `epoch_NNN.pt` (full state) keeps the last
`train.keep_checkpoints` (default none); pruning never removes the newest loadable checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from .checkpoint import FORMAT, VERSION, CheckpointError, atomic_save, read_checkpoint


def rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    v, internal, gauss = random.getstate()
    st["python"] = [v, list(internal), gauss]
    return st


def restore_rng(st: dict[str, Any] | None) -> None:
    if not st:
        return
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
    if "python" in st:
        v, internal, gauss = st["python"]
        random.setstate((v, tuple(internal), gauss))


def build_checkpoint(trainer: Any, epoch: int, position: int) -> dict[str, Any]:
    evaluated = trainer.ema.module if trainer.ema is not None else trainer.model
    ckpt: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "model": evaluated.state_dict(),
        "config": trainer.cfg.to_dict(),
        "class_names": list(trainer.bundle.class_names),
        "class_counts": [int(c) for c in trainer.class_counts],
        "normalization": {"mean": list(trainer.bundle.mean), "std": list(trainer.bundle.std)},
        "epoch": epoch, "position": position, "global_step": trainer.global_step,
        "skipped_steps": trainer.skipped_steps,
        "best_top1": trainer.best, "best_epoch": trainer.best_epoch,
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else {},
        "loss_modules": [m.state_dict() for m in trainer.task.loss_modules()],
        "rng": rng_state(),
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-loadable
    }
    if trainer.bundle.select_indices is not None:  # the carved selection split: these images never trained
        ckpt["select_indices"] = [int(i) for i in trainer.bundle.select_indices]
    if trainer.ema is not None:
        ckpt["train_model"] = trainer.model.state_dict()
        ckpt["ema"] = trainer.ema.state_dict()
    return ckpt


# what only resuming reads: left out of best.pt
RESUME_ONLY = ("optimizer", "scheduler", "scaler", "rng", "train_model", "ema")


def weights_only(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint without the state only resuming needs (SGD momentum alone is as large as the weights)."""
    return {k: v for k, v in ckpt.items() if k not in RESUME_ONLY}


def resumable(st: dict[str, Any]) -> bool:
    return "optimizer" in st


def save_run_checkpoint(run_dir: Path, ckpt: dict[str, Any], is_best: bool, keep: int, epoch_file: bool = True) -> None:
    """last.pt, best.pt (weights only) when `is_best`, and at an epoch's end (position 0) epoch_NNN.pt when `keep`
    > 0 unless `epoch_file` is off (the second save of an epoch, after its evaluation, only updates last.pt and
    best.pt)."""
    atomic_save(ckpt, run_dir / "last.pt")
    if is_best:
        atomic_save(weights_only(ckpt), run_dir / "best.pt")
    if ckpt.get("position", 0) == 0 and epoch_file:
        if keep > 0:
            atomic_save(ckpt, run_dir / f"epoch_{ckpt['epoch']:03d}.pt")
        prune(run_dir, keep)


def _valid(p: Path) -> bool:
    """Whether `p` loads and can be resumed from (best.pt, weights only, cannot)."""
    try:
        return resumable(read_checkpoint(p))
    except CheckpointError:
        return False


def _epoch_files(run_dir: Path) -> list[Path]:
    """epoch_*.pt oldest first, by epoch number (epoch_1000 after epoch_999)."""
    def num(p: Path) -> int:
        tail = p.stem.removeprefix("epoch_")
        return int(tail) if tail.isdigit() else -1

    return sorted(run_dir.glob("epoch_*.pt"), key=num)


def prune(run_dir: Path, keep: int) -> None:
    """Keep the `keep` newest epoch checkpoints; never delete the newest valid one."""
    epochs = _epoch_files(run_dir)
    old = epochs[:-keep] if keep > 0 else epochs
    if not old:
        return
    kept = epochs[len(old):]
    if not any(_valid(p) for p in reversed(kept)) and not _valid(run_dir / "last.pt"):
        newest_valid = next((p for p in reversed(old) if _valid(p)), None)
        old = [p for p in old if p != newest_valid]
    for p in old:
        p.unlink(missing_ok=True)


def newest_valid_checkpoint(run_dir: Path) -> Path | None:
    """last.pt if it loads, else the newest epoch_*.pt that loads, else best.pt (if it holds resume state:
    written before best.pt was saved with the weights only)."""
    cands = [run_dir / "last.pt"] + _epoch_files(run_dir)[::-1] + [run_dir / "best.pt"]
    for p in cands:
        if p.is_file() and _valid(p):
            return p
    return None


def resume_path(cfg: Any) -> Path:
    """The checkpoint `--resume` names: a file, a run folder (its newest loadable checkpoint), or `auto`."""
    from ..errors import ImgclsError

    p = Path(cfg.train.resume)
    if cfg.train.resume == "auto":
        from .rundir import latest_run

        run = Path(cfg.train.out) if cfg.train.out else latest_run(cfg.train.runs_dir)
        if run is None:
            raise ImgclsError(f"--resume auto: no run found in {cfg.train.runs_dir}/")
        p = run
    if p.is_dir():
        found = newest_valid_checkpoint(p)
        if found is None:
            raise ImgclsError(f"--resume {p}: no loadable checkpoint in this folder")
        p = found
    return p


def check_resumable(st: dict[str, Any] | None, cfg: Any, class_names: list[str], path: Path | None) -> None:
    """A resumed run keeps its model, method and classes; options given now may change the rest (epochs, lr)."""
    from ..errors import ImgclsError

    if st is None:
        return
    saved = st.get("config") or {}
    try:  # resolved as configs are now (an older ArcFace run saved head: linear for its cosine head)
        from ..config import config_from_dict

        saved = config_from_dict(saved).to_dict()
    except ImgclsError:
        pass
    now = cfg.to_dict()
    shape = [k for k in now["model"] if k not in ("pretrained", "weights")]  # those only initialise a new run
    for section, keys in (("model", shape), ("train", ["method"])):
        for k in keys:
            if k in saved.get(section, {}) and saved[section][k] != now[section][k]:
                raise ImgclsError(f"--resume {path}: {section}.{k} is {saved[section][k]!r} in the checkpoint, "
                                  f"{now[section][k]!r} now; a resumed run keeps its model (start a new run with"
                                  f" --weights {path} to reuse the weights)")
    was, now_opt = saved.get("optim", {}).get("name"), now["optim"]["name"]
    if was is not None and was != now_opt:  # its saved state (momentum vs Adam moments) would not load
        raise ImgclsError(f"--resume {path}: optim.name is {was!r} in the checkpoint, {now_opt!r} now; a resumed run"
                          f" keeps its optimizer (give --optimizer {was}, or start a new run with --weights {path})")
    if list(st.get("class_names", class_names)) != list(class_names):
        raise ImgclsError(f"--resume {path}: the checkpoint has {len(st['class_names'])} classes, --data"
                          f" {cfg.data.path} has {len(class_names)} (or other names); resume on the run's own data")


def resume_checkpoint(cfg: Any) -> tuple[Path | None, dict[str, Any] | None]:
    """(path, contents) of the checkpoint `--resume` names, or (None, None) for a new run."""
    if not cfg.train.resume:
        return None, None
    from ..errors import ImgclsError

    p = resume_path(cfg)
    st = read_checkpoint(p)
    if not resumable(st):
        raise ImgclsError(f"--resume {p}: holds the model weights only (best.pt keeps no optimizer state); resume"
                          f" from {p.parent / 'last.pt'} or the run folder, or start a new run from these weights"
                          f" with --weights {p}")
    return p, st
