"""The training loop.  It knows no method by name: a Task turns batches into losses.

Per step: uint8 batch -> device -> normalise -> (Mixup/CutMix) -> autocast forward via the Task ->
backward (with accumulation) -> optimizer + per-step schedule -> EMA.  Per epoch: evaluation,
`metrics.jsonl`, atomic `last.pt` / `best.pt`.  Loss and accuracy are accumulated on the device
and read only when the progress bar is refreshed.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..errors import ImgclsError
from ..methods import task_class
from . import distributed as dist
from .device import autocast, place_model, resolve_device, setup_backends
from .ema import ModelEma
from .epochs import EpochBatches
from .evaluator import evaluate
from .faults import (
    LoaderFailed,
    TrainingDiverged,
    agreed_signal,
    crash_error,
    freeze_batchnorm,
    guarded,
    is_worker_crash,
)
from .optim import build_optimizer, build_scheduler, param_groups
from .progress import TrainProgress, cpu_seconds, epoch_line
from .rundir import append_jsonl, make_run_dir, mark_latest
from .setup import open_and_resolve, second_stream, setup_data
from .state import build_checkpoint, check_resumable, restore_rng, resume_checkpoint, save_run_checkpoint
from .step_guard import StepGuard


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.exit_code = 128 + signum


@dataclass
class TrainResult:
    run_dir: Path
    best_top1: float
    last_top1: float
    best_epoch: int
    epochs_run: int
    config: Config


def _freeze_backbone(model: torch.nn.Module, head_path: str, frozen: bool) -> None:
    for name, p in model.named_parameters():
        if not name.startswith(head_path + "."):
            p.requires_grad_(not frozen)


def train(cfg: Config, console: Any = None) -> TrainResult:
    """Train according to `cfg`; returns where the run went and its best validation top-1."""
    return Trainer(cfg, console).fit()


class Trainer:
    def __init__(self, cfg: Config, console: Any = None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.device = resolve_device(cfg.train.device)
        dist.init_from_env(self.device.type)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        setup_backends(self.device, cfg.train.deterministic, cfg.train.fuse_attention)
        torch.manual_seed(cfg.train.seed)
        cfg = task_class(cfg).resolve_config(cfg)  # before anything reads cfg.model (cRT/LWS: stage 1's model)
        self.resume_from, self.resume_state = resume_checkpoint(cfg)
        cfg, bundle = open_and_resolve(cfg, self.device)
        check_resumable(self.resume_state, cfg, bundle.class_names, self.resume_from)
        self.cfg, self.bundle = cfg, bundle
        self.data = setup_data(cfg, bundle, self.device)
        self.class_counts = bundle.class_counts()
        tcls = task_class(cfg)
        self.second = second_stream(cfg, self.data, tcls.second_sampler, self.device) if tcls.second_sampler else None
        self.epoch_batches = EpochBatches(self.data.train_loader, self.data.train_sampler, self.second)
        model = tcls.build_model(cfg, bundle.num_classes, self.class_counts)
        from ..models.build import log_messages

        for line in log_messages if dist.is_main() else []:
            self.console.print(f"[dim]weights: {line}[/dim]")
        place_model(model, cfg.train, self.device)
        self.model = model  # unwrapped: what checkpoints hold
        self.train_model = model
        if dist.is_dist() and cfg.train.sync_bn and self.device.type != "cuda":
            raise ImgclsError("--sync-bn: SyncBatchNorm needs CUDA devices (PyTorch has no CPU version); on CPU "
                              "leave it off or use --set train.freeze_bn=true")
        if dist.is_dist():
            if cfg.train.sync_bn:
                self.train_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.train_model)
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.train.compile:
            self.train_model = torch.compile(self.train_model, mode=cfg.train.compile_mode)
        self.graphs = cfg.train.compile and cfg.train.compile_mode in ("reduce-overhead", "max-autotune")
        self.task = tcls(cfg, self.train_model, bundle.num_classes, self.class_counts)
        for m in self.task.loss_modules():
            m.to(self.device)
        oc = cfg.optim
        groups = param_groups(model, oc.weight_decay, oc.no_wd_bn_bias, self.task.trainable_parameters())
        groups += self.task.param_groups(oc.lr)
        self.optimizer = build_optimizer(oc, groups, self.device)
        self.batches_per_epoch = self._batches_per_epoch()  # before any mid-epoch position shortens the sampler
        self.steps_per_epoch = max(1, self.batches_per_epoch // oc.accum_steps)
        self.scheduler = build_scheduler(self.optimizer, oc, self.steps_per_epoch, cfg.train.epochs)
        fp16 = self.device.type == "cuda" and cfg.train.amp and cfg.train.amp_dtype == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.ema = ModelEma(model, oc.ema) if oc.ema else None
        self.guard = (StepGuard(model, self.task.loss_modules(), self.optimizer, self.device, self.scaler.is_enabled())
                      if cfg.train.finite_check == "step" else None)
        self.skipped_steps = 0
        self.mixer = None
        if cfg.aug.mixup > 0 or cfg.aug.cutmix > 0:
            from ..data.mixing import Mixer

            self.mixer = Mixer(cfg.aug, bundle.num_classes)
        self.start_epoch, self.position, self.best, self.best_epoch = 0, 0, -1.0, -1
        self.global_step = 0
        self.run_dir = make_run_dir(cfg, self.resume_from) if dist.is_main() else None
        self.bad_reported: set[str] = set()  # by reason text (it names the file): indices repeat across splits
        self.stop_signal: int | None = None
        if self.resume_state is not None:
            self._restore(self.resume_state)

    # ------------------------------------------------------------------------------------
    def _batches_per_epoch(self) -> int:
        n = len(self.data.train_loader)
        cap = self.cfg.train.steps_per_epoch
        return min(n, cap * self.cfg.optim.accum_steps) if cap else n

    def _restore(self, st: dict[str, Any]) -> None:
        self.model.load_state_dict(st.get("train_model", st["model"]))
        if "optimizer" in st:
            self.optimizer.load_state_dict(st["optimizer"])
        if "scheduler" in st:
            self.scheduler.load_state_dict(st["scheduler"])
        if "scaler" in st and st["scaler"]:
            self.scaler.load_state_dict(st["scaler"])
        if self.ema is not None and "ema" in st:
            self.ema.load_state_dict(st["ema"])
        for m, sd in zip(self.task.loss_modules(), st.get("loss_modules", []), strict=False):
            m.load_state_dict(sd)
        # `position` is stored as items consumed by all ranks together, so a run resumes on any world size
        self.start_epoch, self.position = int(st["epoch"]), int(st.get("position", 0)) // dist.world_size()
        self.best, self.best_epoch = float(st.get("best_top1", -1.0)), int(st.get("best_epoch", -1))
        self.global_step, self.skipped_steps = int(st.get("global_step", 0)), int(st.get("skipped_steps", 0))
        restore_rng(st.get("rng"))
        if dist.is_main():
            where = f"epoch {self.start_epoch + 1}" + (f", item {self.position}" if self.position else "")
            self.console.print(f"resuming from {self.cfg.train.resume} at {where}")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_signal = signum

    def _report_bad(self, bad: list[tuple[int, str]]) -> None:
        for _idx, reason in bad:
            if reason not in self.bad_reported:
                self.bad_reported.add(reason)
                if dist.is_main():
                    self.console.print(f"[yellow]skipped unreadable image[/yellow] {reason}")

    # ------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        if dist.is_main():
            (self.run_dir / "config.yaml").write_text(cfg.to_yaml())
            mark_latest(self.run_dir, cfg.train.runs_dir if not cfg.train.out else Path(cfg.train.runs_dir))
            self.console.print(f"run directory: [bold]{self.run_dir}[/bold]  ({len(self.bundle.train)} train /"
                               f" {len(self.bundle.val) if self.bundle.val else 0} val images,"
                               f" {self.bundle.num_classes} classes, device {self.device})")
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self.last_top1 = float("nan")
        epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs):
                stats = self._train_epoch(epoch)
                try:
                    self._end_epoch(epoch, stats)
                except RuntimeError as e:  # a worker of the next epoch died (PyTorch raises from its SIGCHLD
                    if not is_worker_crash(e):  # handler, wherever the main thread is): the epoch itself is done
                        raise
                    self._save(epoch + 1, 0, is_best=False)
                    raise crash_error(e, self.run_dir) from None
        except Interrupted as e:
            raise SystemExit(e.exit_code) from None
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        dist.cleanup()
        return TrainResult(self.run_dir, self.best, self.last_top1, self.best_epoch, epoch + 1, cfg)

    def _end_epoch(self, epoch: int, stats: dict[str, Any]) -> None:
        """Start the next epoch's loading, evaluate, checkpoint, log."""
        cfg = self.cfg
        if epoch + 1 < cfg.train.epochs:
            self.epoch_batches.prefetch(epoch + 1)  # the workers load it during evaluation and checkpointing
        record: dict[str, Any] = {"epoch": epoch + 1, **stats}
        if self.data.val_loader is not None and ((epoch + 1) % cfg.train.eval_every == 0
                                                 or epoch + 1 == cfg.train.epochs):
            res = self.evaluate()
            self.last_top1 = res.top1
            record.update(val_top1=res.top1, val_top5=res.top5, val_loss=res.loss_sum / max(1, res.n),
                          val_mean_class_acc=res.mean_class_acc, val_n=res.n)
            is_best = res.top1 > self.best
            if is_best:
                self.best, self.best_epoch = res.top1, epoch + 1
        else:
            is_best = self.data.val_loader is None
        self._save(epoch + 1, 0, is_best)
        if dist.is_main():
            append_jsonl(self.run_dir / "metrics.jsonl", record)
            self.console.print(epoch_line(record, cfg.train.epochs))

    def evaluate(self):
        model = self.ema.module if self.ema is not None else self.model
        model.eval()
        amp = autocast(self.device, self.cfg.train)

        def logits_fn(x: torch.Tensor) -> torch.Tensor:
            with amp:
                return self.task.eval_logits(model, x)

        res = evaluate(logits_fn, self.data.val_loader, self.data.normalizer, self.bundle.num_classes, self.device,
                       on_bad=self._report_bad)
        return res

    def _save(self, epoch: int, position: int, is_best: bool) -> None:
        """`position`: items this rank has consumed in `epoch`; stored as the all-ranks count."""
        if not dist.is_main():
            return
        ckpt = build_checkpoint(self, epoch, position * dist.world_size())
        save_run_checkpoint(self.run_dir, ckpt, is_best=is_best, keep=self.cfg.train.keep_checkpoints)

    def _poll_guard(self, epoch: int, i: int, items_done: int) -> int:
        """Report the steps the guard skipped since the last poll; stop after train.max_bad_steps in a row."""
        if self.guard is None:
            return 0
        skipped, worst = self.guard.poll()
        self.skipped_steps += skipped
        if skipped and dist.is_main():
            self.console.print(f"[yellow]{skipped} non-finite step(s) skipped (loss or gradient) by epoch"
                               f" {epoch + 1} batch {i + 1}[/yellow]")
        if worst >= self.cfg.train.max_bad_steps:
            self._save(epoch, items_done, is_best=False)  # the skipped steps never touched the weights
            raise TrainingDiverged(
                f"training diverged: {worst} consecutive non-finite steps by epoch {epoch + 1} batch {i + 1}"
                f" (train.max_bad_steps={self.cfg.train.max_bad_steps}); last good weights saved in"
                f" {self.run_dir} (lower --lr?)")
        return skipped

    # ------------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, dev = self.cfg, self.device
        self.model.train()
        self.task.on_epoch_start(epoch)
        if cfg.train.freeze_bn:
            freeze_batchnorm(self.model)
        frozen = epoch < cfg.train.freeze_backbone_epochs
        if cfg.train.freeze_backbone_epochs:
            from ..models.build import meta

            _freeze_backbone(self.model, meta(self.model)["head"], frozen)
        position = self.position if epoch == self.start_epoch else 0
        loader = self.epoch_batches.start(epoch, position)  # zipped with BBN's second stream, batch for batch
        self.position = 0
        bs, accum = cfg.train.batch_size, cfg.optim.accum_steps
        max_batches = self.batches_per_epoch - position // bs
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = torch.zeros((), device=dev, dtype=torch.long)
        n_images, t0, c0 = 0, time.perf_counter(), cpu_seconds()
        amp = autocast(dev, cfg.train)
        mix_gen = torch.Generator(device=dev) if self.mixer is not None else None
        progress = TrainProgress(self.console, epoch, cfg.train.epochs, max_batches,
                                 enabled=cfg.train.progress and dist.is_main())
        items_done, guard, skipped = position, self.guard, 0
        with progress:
            try:
                for i, batch in enumerate(guarded(loader)):
                    batch, batch2 = batch if self.second is not None else (batch, None)
                    if i >= max_batches:
                        break
                    items_done += bs
                    if batch["bad"]:
                        self._report_bad(batch["bad"])
                    if batch["images"] is None:
                        continue
                    x = self.data.normalizer(batch["images"])  # (B, 3, H, W) float
                    y = batch["targets"].to(dev, non_blocking=True)  # (B,)
                    soft = None
                    if self.mixer is not None:
                        mix_gen.manual_seed(hash((cfg.train.seed, epoch, items_done)) % 2**62)
                        x, soft = self.mixer(x, y, mix_gen)
                    step_batch = {"images": x, "targets": y, "soft": soft, "epoch": epoch, "indices": batch["indices"]}
                    if batch2 is not None:
                        if batch2["bad"]:
                            self._report_bad(batch2["bad"])
                        if batch2["images"] is None:
                            continue
                        step_batch["images2"] = self.data.normalizer(batch2["images"])  # (B2, 3, H, W)
                        step_batch["targets2"] = batch2["targets"].to(dev, non_blocking=True)  # (B2,)
                    if guard is not None and not guard.open:  # (not i % accum: an empty batch may start a window)
                        guard.begin()  # snapshot of buffers the forward pass writes
                    if self.graphs:  # CUDA graphs: the previous step's graph outputs may be overwritten now
                        torch.compiler.cudagraph_mark_step_begin()
                    with amp:
                        out = self.task.train_step(step_batch)
                    loss = out["loss"]
                    ok = guard.loss_ok(loss) if guard is not None else None  # (0-dim bool, on the device)
                    self.scaler.scale(loss / accum).backward()
                    self.task.after_backward()
                    if (i + 1) % accum == 0:
                        self._optimizer_step(epoch, loss)
                    b = y.shape[0]
                    n_images += b
                    hit = (out["logits"].detach().argmax(1) == (soft.argmax(1) if soft is not None else y)).sum()
                    if ok is None:  # "log" mode: a NaN loss shows in the sum and stops the run at the next update
                        loss_sum += loss.detach().float() * b
                        correct += hit
                        seen += b
                    else:  # skipped micro-batches stay out of the running metrics, without a host sync
                        loss_sum += torch.where(ok, loss.detach().float() * b, 0.0)
                        correct += hit * ok
                        seen += b * ok
                    at_update = (i + 1) % cfg.train.log_every == 0 or i + 1 == max_batches
                    if at_update:
                        el = time.perf_counter() - t0
                        s = int(seen)
                        skipped += self._poll_guard(epoch, i, items_done)
                        if guard is None and not torch.isfinite(loss_sum):  # "log" mode: no per-step check
                            raise TrainingDiverged(
                                f"training diverged: non-finite loss by epoch {epoch + 1} step {i + 1} (train."
                                f"finite_check=log does not skip bad steps); the last good checkpoint is the"
                                f" newest in {self.run_dir} (lower --lr, or finite_check=step)")
                        progress.update(i + 1, loss=float(loss_sum) / max(1, s), acc=float(correct) / max(1, s) * 100,
                                        lr=self.optimizer.param_groups[0]["lr"], ips=n_images / max(el, 1e-9))
                    # under DDP, agreeing is a collective read back to the host: done at progress updates only
                    signum = agreed_signal(self.stop_signal, dev) if at_update or not dist.is_dist() else None
                    if signum is not None:
                        self._save(epoch, items_done, is_best=False)
                        if dist.is_main():
                            self.console.print(f"stopped by signal {signum}: checkpoint saved to"
                                               f" {self.run_dir / 'last.pt'} (resume with --resume {self.run_dir})")
                        raise Interrupted(signum)
            except LoaderFailed as e:  # the batches trained so far are kept: resume continues after them
                self._save(epoch, items_done, is_best=False)
                if not is_worker_crash(e.error):
                    raise e.error from None
                raise crash_error(e.error, self.run_dir) from None
        skipped += self._poll_guard(epoch, max_batches - 1, items_done)  # the last batches may have been empty
        el = time.perf_counter() - t0
        s = max(1, int(seen))
        stats = {"train_loss": float(loss_sum) / s, "train_acc": float(correct) / s * 100,
                 "lr": self.optimizer.param_groups[0]["lr"], "img_per_s": n_images / max(el, 1e-9),
                 "time_s": el, "cpu_s": cpu_seconds() - c0, "steps": self.global_step, "skipped_steps": skipped}
        return stats

    def _optimizer_step(self, epoch: int, loss: torch.Tensor) -> None:
        """Clip, step (skipped on the device when the guard found a non-finite loss or gradient), schedule."""
        cfg, guard = self.cfg, self.guard
        total = None
        if cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            total = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        if guard is not None:
            guard.check_grads(self.model.parameters(), total)
            guard.step(self.optimizer, self.scaler)
        else:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()  # also after a skipped step, as with GradScaler's skipped steps
        self.task.after_step()
        if guard is not None:
            guard.end()  # restores what a skipped step's forward pass and after_step wrote
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.model)
        if cfg.train.log_steps and dist.is_main():  # costs a sync, as documented
            rec = {"step": self.global_step, "epoch": epoch + 1, "loss": float(loss.detach())}
            if guard is not None and bool(guard.bad):
                rec.update(loss=None, skipped=True)
            with open(self.run_dir / "steps.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
