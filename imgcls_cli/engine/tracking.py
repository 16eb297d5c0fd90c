"""Trainer hooks: experiment tracking (TensorBoard, MLflow) and the training-curves picture.

The trainer calls a `Hooks` list at four points and knows no tracker by name:
    on_fit_start(trainer)                      run directory ready, config.yaml written
    on_step(trainer, step, scalars)            at each progress update (every train.log_every batches; the
                                               values are read there anyway, so no extra host sync)
    on_epoch_end(trainer, record)              the epoch's metrics.jsonl record
    on_fit_end(trainer, status)                "FINISHED", "FAILED" or "KILLED"
Hooks run on the main process only.  A hook whose library is missing is refused before the run starts
(one line naming the extra), except TensorBoard, which is on by default and only says once that it is off.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ImgclsError


def flat_config(cfg: Any) -> dict[str, Any]:
    """{"model.backbone": "resnet18", ...}: scalars kept, None and sequences as text (hparams, MLflow params)."""
    out: dict[str, Any] = {}
    for section, fields in cfg.to_dict().items():
        for k, v in fields.items():
            out[f"{section}.{k}"] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def numeric(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k != "epoch"}


class TrainHook:
    def on_fit_start(self, trainer: Any) -> None:
        pass

    def on_step(self, trainer: Any, step: int, scalars: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, trainer: Any, status: str) -> None:
        pass


class Hooks(TrainHook):
    def __init__(self, hooks: list[TrainHook]):
        self.hooks = hooks

    def on_fit_start(self, trainer: Any) -> None:
        for h in self.hooks:
            h.on_fit_start(trainer)

    def on_step(self, trainer: Any, step: int, scalars: dict[str, float]) -> None:
        for h in self.hooks:
            h.on_step(trainer, step, scalars)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        for h in self.hooks:
            h.on_epoch_end(trainer, record)

    def on_fit_end(self, trainer: Any, status: str) -> None:
        for h in self.hooks:
            h.on_fit_end(trainer, status)


class TensorBoardHook(TrainHook):
    """Events in RUN/tensorboard/: train/loss and train/lr per step, epoch/<key> per epoch, the config as text,
    and the hparams plugin's session (flattened config -> best val top-1) at the end."""

    def __init__(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer_cls = SummaryWriter
        self.writer: Any = None

    def on_fit_start(self, trainer: Any) -> None:
        self.writer = self._writer_cls(log_dir=str(trainer.run_dir / "tensorboard"))
        self.writer.add_text("config", "```yaml\n" + trainer.cfg.to_yaml() + "```", trainer.global_step)

    def on_step(self, trainer: Any, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(f"train/{k}", v, step)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        for k, v in numeric(record).items():
            self.writer.add_scalar(f"epoch/{k}", v, record["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer: Any, status: str) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = {"hparam/best_val_top1": float(trainer.best), "hparam/best_epoch": float(trainer.best_epoch)}
        # written into this run's own event file (SummaryWriter.add_hparams would open a sub-run per call)
        for summary in hparams(flat_config(trainer.cfg), metrics):
            self.writer.file_writer.add_summary(summary, trainer.global_step)
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, trainer.global_step)
        self.writer.close()


class MlflowHook(TrainHook):
    """MLflow's own client (no global active run): params = flattened config, metrics per step and epoch,
    artifacts at the end (config.yaml, metrics.jsonl, best.pt, final_eval.json, every PNG of the run).

    Store: MLFLOW_TRACKING_URI when set, else sqlite:///RUN/mlflow.db with artifacts in RUN/mlartifacts (MLflow's
    local backend; its plain-folder store is deprecated and refused by MLflow 3.x).  A resumed run continues its
    MLflow run (id kept in RUN/mlflow_run_id)."""

    EXPERIMENT = "imgcls"

    def __init__(self) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ImgclsError("--tracker mlflow: mlflow is not installed (pip install 'imgcls[mlflow]')") from None
        self._client_cls = MlflowClient
        self.client: Any = None
        self.run_id: str | None = None

    def on_fit_start(self, trainer: Any) -> None:
        run_dir: Path = trainer.run_dir
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        local = not uri
        if local:
            uri = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        try:
            self.client = self._client_cls(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(self.EXPERIMENT)
            if exp is None:
                art = (run_dir / "mlartifacts").resolve().as_uri() if local else None
                exp_id = self.client.create_experiment(self.EXPERIMENT, artifact_location=art)
            else:
                exp_id = exp.experiment_id
            id_file = run_dir / "mlflow_run_id"
            if id_file.is_file() and trainer.resume_from is not None:
                self.run_id = id_file.read_text().strip()
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                run = self.client.create_run(exp_id, run_name=run_dir.name, tags={"imgcls.run_dir": str(run_dir)})
                self.run_id = run.info.run_id
                id_file.write_text(self.run_id + "\n")
                from mlflow.entities import Param

                params = [Param(k, str(v)) for k, v in flat_config(trainer.cfg).items()]
                for i in range(0, len(params), 100):  # MLflow's batch limit
                    self.client.log_batch(self.run_id, params=params[i:i + 100])
        except Exception as e:  # an unreachable server or a broken store: one line, before any training
            raise ImgclsError(f"--tracker mlflow: cannot use the tracking store {uri} ({type(e).__name__}:"
                              f" {str(e).splitlines()[0][:160] if str(e) else ''})") from None

    def on_step(self, trainer: Any, step: int, scalars: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"train_{k}_step", v, now, step) for k, v in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, record["epoch"])
                                                    for k, v in numeric(record).items()])

    def on_fit_end(self, trainer: Any, status: str) -> None:
        run_dir: Path = trainer.run_dir
        final = run_dir / "final_eval.json"
        if final.is_file():
            try:
                s = json.loads(final.read_text())
                for k, v in numeric(s).items():
                    self.client.log_metric(self.run_id, f"final_{k}", v)
            except (OSError, ValueError):
                pass
        for name in ("config.yaml", "metrics.jsonl", "best.pt", "final_eval.json", "steps.jsonl"):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        for png in sorted(run_dir.rglob("*.png")):
            rel = png.parent.relative_to(run_dir)
            if "mlartifacts" not in rel.parts:
                self.client.log_artifact(self.run_id, str(png), None if rel == Path(".") else rel.as_posix())
        self.client.set_terminated(self.run_id, status=status)


class CurvesHook(TrainHook):
    """RUN/training_curves.png redrawn after every epoch from the metrics.jsonl records."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: Any) -> None:
        path = trainer.run_dir / "metrics.jsonl"
        if trainer.resume_from is not None and path.is_file():  # a resumed run's earlier epochs
            for line in path.read_text().splitlines():
                try:
                    self.records.append(json.loads(line))
                except ValueError:
                    continue

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        from ..viz.curves import training_curves_png

        self.records = [r for r in self.records if r.get("epoch", 0) < record["epoch"]] + [record]
        training_curves_png(self.records, trainer.run_dir / "training_curves.png", trainer.cfg.train.epochs)


def build_hooks(cfg: Any, console: Any) -> Hooks:
    """The hooks a config asks for; a tracker whose package is missing is refused here, before the run starts."""
    hooks: list[TrainHook] = []
    if cfg.train.curves:
        hooks.append(CurvesHook())
    if cfg.train.tensorboard:
        try:
            hooks.append(TensorBoardHook())
        except ImportError:
            console.print("[dim]tensorboard is not installed, so no TensorBoard events are written"
                          " (pip install 'imgcls[tensorboard]', or --no-tensorboard)[/dim]")
    if cfg.train.tracker == "mlflow":
        hooks.append(MlflowHook())
    return Hooks(hooks)
