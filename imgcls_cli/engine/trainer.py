"""The training loop.  It knows no method by name: a Task turns batches into losses.

Per step: uint8 batch -> device -> normalise -> (Mixup/CutMix) -> autocast forward via the Task ->
backward (with accumulation) -> optimizer + per-step schedule -> EMA.  Per epoch: atomic `last.pt`
(saved before evaluation, marked `eval_pending`, so a stop during evaluation loses no training and
resuming redoes only the evaluation), evaluation on the *selection* split (`data.select_split`: the
tree's val/ when test/ is reported, else one carved from the training images), `best.pt` (best on the
selection split), `metrics.jsonl` (its `val_*` keys are that split's).  At the end, `best.pt` is
evaluated once on the *reported* split (`data.val_split`) into `final_eval.json`: nothing is ever
chosen on the reported images.  Loss and accuracy are accumulated on the device and read only when the
progress bar is refreshed.

Stop signals (signals.py): a training step and a checkpoint write are `deferred` sections; anywhere
else (waiting for batches, evaluation) a signal stops the run at once, after saving `last.pt`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config, schedule_notes
from ..data.sources import open_data
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
    worker_deaths_held,
)
from .optim import build_optimizer, build_scheduler, param_groups
from .progress import TrainProgress, cpu_seconds, epoch_line
from .rundir import append_jsonl, make_run_dir, mark_latest, write_text_atomic
from .setup import resolve_with_note, second_stream, setup_data
from .signals import Interrupted, StopSignals
from .state import build_checkpoint, check_resumable, restore_rng, resume_checkpoint, save_run_checkpoint
from .step_guard import StepGuard
from .tracking import Hooks, build_hooks

__all__ = ["Interrupted", "TrainResult", "Trainer", "train"]


@dataclass
class TrainResult:
    run_dir: Path
    best_top1: float  # on the selection split
    last_top1: float  # on the selection split
    best_epoch: int
    epochs_run: int
    config: Config
    final: dict[str, Any] | None = None  # final_eval.json: best.pt on the reported split


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
        bundle = open_data(cfg.data)
        cfg, self.recipe_note = resolve_with_note(cfg, bundle, self.device)
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
        for line in [*bundle.notes, *schedule_notes(cfg)] if dist.is_main() else []:
            self.console.print(f"[yellow]warning:[/yellow] {line}", highlight=False, soft_wrap=True)
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
        self.ema = ModelEma(model, oc.ema, oc.ema_warmup_power) if oc.ema else None
        self.guard = (StepGuard(model, self.task.loss_modules(), self.optimizer, self.device, self.scaler.is_enabled())
                      if cfg.train.finite_check == "step" else None)
        self.skipped_steps = 0
        self.mixer = None
        if cfg.aug.mixup > 0 or cfg.aug.cutmix > 0:
            from ..data.mixing import Mixer

            self.mixer = Mixer(cfg.aug, bundle.num_classes)
        self.start_epoch, self.position, self.best, self.best_epoch = 0, 0, -1.0, -1
        self.best_state: dict[str, torch.Tensor] | None = None  # best.pt's weights, for the final evaluation
        self.global_step = 0
        self.hooks = build_hooks(cfg, self.console) if dist.is_main() else Hooks([])  # refused before a run dir exists
        self.run_dir, self.run_lock = make_run_dir(cfg, self.resume_from) if dist.is_main() else (None, None)
        self.bad_reported: set[str] = set()  # by reason text (it names the file): indices repeat across splits
        # under DDP a signal is acted on where the ranks agree (a progress update), never raised at once
        self.signals = StopSignals(immediate=not dist.is_dist())  # installed by fit()
        self.pending_record: dict[str, Any] | None = None  # a saved epoch whose evaluation has not finished
        if self.resume_state is not None:
            try:
                self._restore(self.resume_state)
                self._carry_best()
            except BaseException:
                if self.run_lock is not None:
                    self.run_lock.release()
                raise

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
        if st.get("eval_pending"):
            self.pending_record = dict(st.get("pending_record") or {"epoch": self.start_epoch})
        if dist.is_main():
            self.console.print(self._resume_line())

    def _carry_best(self) -> None:
        """A run resumed into a new --out starts with its source's best.pt, so the branch is complete on its own."""
        if self.run_dir is None or self.resume_from is None:
            return
        src = Path(self.resume_from).parent / "best.pt"
        dst = self.run_dir / "best.pt"
        if src.is_file() and not dst.exists() and src.resolve() != dst.resolve():
            import shutil

            shutil.copy2(src, dst)

    def _resume_line(self) -> str:
        ep, total = self.start_epoch, self.cfg.train.epochs
        head = f"resuming from {self.resume_from} (global step {self.global_step}):"
        if self.pending_record is not None:
            head += f" epoch {ep} was trained, its evaluation was interrupted and is redone first;"
        if ep >= total:
            return f"{head} all {total} epochs are trained, nothing left to train"
        return f"{head} continues at epoch {ep + 1} of {total}" + (f", item {self.position}" if self.position else "")

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
            write_text_atomic(self.run_dir / "config.yaml", cfg.to_yaml())
            mark_latest(self.run_dir, cfg.train.runs_dir if not cfg.train.out else Path(cfg.train.runs_dir))
            b = self.bundle
            sel = f" / {len(b.select)} selection ({b.select_split})" if b.select is not None else ""
            self.console.print(f"run directory: [bold]{self.run_dir}[/bold]  ({len(b.train)} train{sel} /"
                               f" {len(b.val) if b.val else 0} {cfg.data.val_split or 'val'} images,"
                               f" {b.num_classes} classes, {cfg.data.img_size} px {cfg.aug.preset},"
                               f" device {self.device})")
            if self.recipe_note:
                self.console.print(self.recipe_note)
        self.last_top1 = float("nan")
        epoch = self.start_epoch
        with self.signals:
            started = False  # the hooks are ended only once they have started
            try:
                self.hooks.on_fit_start(self)  # a tracker that cannot start stops the run before any training
                started = True
                if self.pending_record is not None:  # resumed after a stop during an evaluation: redo only that
                    self._evaluate_epoch(self.start_epoch - 1, self.pending_record)
                for epoch in range(self.start_epoch, cfg.train.epochs):
                    stats = self._train_epoch(epoch)
                    try:
                        self._end_epoch(epoch, stats)
                    except RuntimeError as e:  # a worker of the next epoch died (PyTorch raises from its SIGCHLD
                        if not is_worker_crash(e):  # handler, wherever the main thread is): the epoch itself is done
                            raise
                        if self.signals.signum is not None:  # killed by the signal that stops this run
                            raise Interrupted(self.signals.signum) from None
                        self._save(epoch + 1, 0, is_best=False)
                        raise crash_error(e, self.run_dir) from None
                final = self._final_eval()
            except Interrupted as e:
                self.signals.immediate = False  # stopping: a second signal must not cut what follows
                if started:
                    self.hooks.on_fit_end(self, "KILLED")
                if dist.is_main():
                    self.console.print(f"stopped by signal {e.signum}: last.pt in {self.run_dir} holds every"
                                       f" finished step (resume with --resume {self.run_dir})")
                raise SystemExit(e.exit_code) from None
            except BaseException:
                if started:
                    self.hooks.on_fit_end(self, "FAILED")
                raise
            else:  # trackers log the run's files: after the last one (final_eval.json), while the run's lock is held
                self.hooks.on_fit_end(self, "FINISHED")
            finally:
                if self.run_lock is not None:
                    self.run_lock.release()
        dist.cleanup()
        return TrainResult(self.run_dir, self.best, self.last_top1, self.best_epoch, epoch + 1, cfg, final)

    def _final_eval(self) -> dict[str, Any] | None:
        """Evaluate best.pt (the selection split's choice; the last epoch without one) once on the reported split and
        write RUN/final_eval.json: the numbers a run reports."""
        if self.data.val_loader is None:
            return None
        chosen = self.best_epoch if self.data.select_loader is not None and self.best_epoch > 0 else None
        model = self.ema.module if self.ema is not None else self.model
        if chosen is not None:
            state = self.best_state
            if state is None:  # resumed after the best epoch: best.pt holds it
                from .checkpoint import read_checkpoint

                src = self.run_dir if self.run_dir is not None else Path(self.cfg.train.resume)
                state = read_checkpoint((src if src.is_dir() else src.parent) / "best.pt")["model"]
            model.load_state_dict(state)
        res = self.evaluate(self.data.val_loader)
        summary = res.summary(self.bundle.class_names, self.class_counts)
        summary.update(checkpoint="best.pt" if chosen is not None else "last.pt",
                       epoch=chosen if chosen is not None else self.cfg.train.epochs,
                       selected_on=self.bundle.select_split, data=self.cfg.data.path, split=self.cfg.data.val_split)
        if dist.is_main():
            from .rundir import write_json_atomic

            write_json_atomic(self.run_dir / "final_eval.json", summary)
            on = (f"best.pt, epoch {chosen}, chosen on the {self.bundle.select_split} selection split" if chosen
                  else "last epoch, no selection split")
            self.console.print(f"{self.cfg.data.val_split} (reported): top1 {summary['top1']:.2f}%  top5"
                               f" {summary['top5']:.2f}%  ({on})")
        return summary

    def _end_epoch(self, epoch: int, stats: dict[str, Any]) -> None:
        """Start the next epoch's loading, checkpoint the trained epoch, evaluate, log."""
        cfg = self.cfg
        if epoch + 1 < cfg.train.epochs:
            self.epoch_batches.prefetch(epoch + 1)  # the workers load it during evaluation and checkpointing
        record: dict[str, Any] = {"epoch": epoch + 1, **stats}
        sel = self.data.select_loader  # never the reported split: that one is evaluated once, in _final_eval
        evaluating = sel is not None and ((epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs)
        # saved before the evaluation starts: a stop during it (or during the next save) loses no training
        self._save(epoch + 1, 0, is_best=sel is None, pending_record=record if evaluating else None)
        if evaluating:
            self._evaluate_epoch(epoch, record)
        else:
            self._log_epoch(record)

    def _evaluate_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Evaluate the saved epoch `epoch` (0-based) on the selection split, then save again with the result (and
        best.pt), log."""
        res = self.evaluate(self.data.select_loader)
        self.last_top1 = res.top1
        record = {**record, "val_top1": res.top1, "val_top5": res.top5, "val_loss": res.loss_sum / max(1, res.n),
                  "val_mean_class_acc": res.mean_class_acc, "val_n": res.n, "val_split": self.bundle.select_split}
        is_best = res.top1 > self.best
        if is_best:
            self.best, self.best_epoch = res.top1, epoch + 1
            evaluated = self.ema.module if self.ema is not None else self.model
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in evaluated.state_dict().items()}
        self._save(epoch + 1, 0, is_best, epoch_file=False)  # last.pt without eval_pending; the epoch file has it
        self.pending_record = None
        self._log_epoch(record)

    def _log_epoch(self, record: dict[str, Any]) -> None:
        if dist.is_main():
            with self.signals.deferred():
                append_jsonl(self.run_dir / "metrics.jsonl", record)
            self.hooks.on_epoch_end(self, record)
            self.console.print(epoch_line(record, self.cfg.train.epochs))

    def evaluate(self, loader: Any):
        model = self.ema.module if self.ema is not None else self.model
        model.eval()
        amp = autocast(self.device, self.cfg.train)

        def logits_fn(x: torch.Tensor) -> torch.Tensor:
            with amp:
                return self.task.eval_logits(model, x)

        res = evaluate(logits_fn, loader, self.data.normalizer, self.bundle.num_classes, self.device,
                       on_bad=self._report_bad)
        return res

    def _save(self, epoch: int, position: int, is_best: bool, pending_record: dict[str, Any] | None = None,
              epoch_file: bool = True) -> None:
        """`position`: items this rank has consumed in `epoch`; stored as the all-ranks count.  `pending_record`:
        the epoch is trained but not yet evaluated (resuming redoes the evaluation, then logs this record)."""
        if not dist.is_main():
            return
        with self.signals.deferred():  # a signal waits for the write (atomic anyway) and stops right after it
            ckpt = build_checkpoint(self, epoch, position * dist.world_size())
            if pending_record is not None:
                ckpt.update(eval_pending=True, pending_record=pending_record)
            try:
                with worker_deaths_held():
                    save_run_checkpoint(self.run_dir, ckpt, is_best=is_best, keep=self.cfg.train.keep_checkpoints,
                                        epoch_file=epoch_file)
            except LoaderFailed as e:  # a worker died during the write: the checkpoint is complete
                raise crash_error(e.error, self.run_dir) from None

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
                for i, batch in enumerate(guarded(loader, self.signals)):  # each step: a deferred section
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
                        now = {"loss": float(loss_sum) / max(1, s), "acc": float(correct) / max(1, s) * 100,
                               "lr": self.optimizer.param_groups[0]["lr"]}
                        progress.update(i + 1, **now, ips=n_images / max(el, 1e-9))
                        self.hooks.on_step(self, self.global_step, now)  # running means of the epoch so far
                    # under DDP, agreeing is a collective read back to the host: done at progress updates only
                    # (alone, a signal raises at the next batch: guarded() ends the step's deferred section)
                    signum = agreed_signal(self.signals.signum, dev) if at_update and dist.is_dist() else None
                    if signum is not None:
                        raise Interrupted(signum)
            except Interrupted:  # between steps, or while waiting for a batch: every finished step is kept
                self.signals.immediate = False  # stopping: a second signal must not cut the save
                self._save(epoch, items_done, is_best=False)
                raise
            except LoaderFailed as e:  # the batches trained so far are kept: resume continues after them
                self._save(epoch, items_done, is_best=False)
                if self.signals.signum is not None:  # a worker died of the group signal that stops this run
                    raise Interrupted(self.signals.signum) from None
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
            self.ema.update(self.model, step=self.global_step)
        if cfg.train.log_steps and dist.is_main():  # costs a sync, as documented
            rec = {"step": self.global_step, "epoch": epoch + 1, "loss": float(loss.detach())}
            if guard is not None and bool(guard.bad):
                rec.update(loss=None, skipped=True)
            with open(self.run_dir / "steps.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
