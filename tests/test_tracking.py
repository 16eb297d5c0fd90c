"""Tracking hooks read back with each library's own reader; training_curves.png in every run."""

from __future__ import annotations

import json

import pytest

from .conftest import quick_overrides


def _train(tiny_folder, tmp_path, **extra):
    from imgcls_cli.config import build_config
    from imgcls_cli.engine.trainer import train

    # a selection split (carved from train/: tiny_folder has train/ + val/), so every epoch has val_* metrics to log
    ov = quick_overrides(**{"data.path": str(tiny_folder), "train.out": str(tmp_path / "run"), "train.epochs": 2,
                            "train.batch_size": 8, "train.log_every": 1, "train.tensorboard": False,
                            "data.select_split": "auto", **extra})
    return train(build_config(None, ov))


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_events_scalars_text_and_hparams(tiny_folder, tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'imgcls[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    res = _train(tiny_folder, tmp_path, **{"train.tensorboard": True})
    ea = EventAccumulator(str(res.run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    recs = _records(res.run_dir)
    steps = ea.Scalars("train/loss")
    assert len(steps) == recs[-1]["steps"]  # log_every=1: one point per optimizer step, at its global step
    assert [s.step for s in steps] == list(range(1, recs[-1]["steps"] + 1))
    assert steps[-1].value == pytest.approx(recs[-1]["train_loss"], rel=1e-5)  # the epoch's running mean at its end
    val = ea.Scalars("epoch/val_top1")
    assert [(v.step, round(v.value, 4)) for v in val] == [(r["epoch"], round(r["val_top1"], 4)) for r in recs]
    assert "epoch/lr" in tags["scalars"] and "train/lr" in tags["scalars"]
    text = ea.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "backbone: resnet20" in text
    content = ea.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["model.backbone"].string_value == "resnet20" and hp["train.epochs"].number_value == 2
    assert ea.Scalars("hparam/best_val_top1")[0].value == pytest.approx(res.best_top1, rel=1e-5)


def test_mlflow_store_params_metrics_artifacts(tiny_folder, tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'imgcls[mlflow]')")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = _train(tiny_folder, tmp_path, **{"train.tracker": "mlflow"})
    client = MlflowClient(tracking_uri=f"sqlite:///{(res.run_dir / 'mlflow.db').resolve()}")
    run = client.get_run((res.run_dir / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FINISHED"
    assert run.data.params["model.backbone"] == "resnet20" and run.data.params["train.epochs"] == "2"
    recs = _records(res.run_dir)
    hist = client.get_metric_history(run.info.run_id, "val_top1")
    assert sorted((m.step, round(m.value, 4)) for m in hist) == [(r["epoch"], round(r["val_top1"], 4)) for r in recs]
    assert len(client.get_metric_history(run.info.run_id, "train_loss_step")) == recs[-1]["steps"]
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "best.pt", "metrics.jsonl", "training_curves.png", "final_eval.json"} <= arts
    final = json.loads((res.run_dir / "final_eval.json").read_text())  # the reported split, evaluated once
    assert client.get_metric_history(run.info.run_id, "final_top1")[0].value == pytest.approx(final["top1"])
    local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / "dl"))
    assert open(local).read() == (res.run_dir / "config.yaml").read_text()


def test_mlflow_tracking_uri_is_used(tiny_folder, tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'imgcls[mlflow]')")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    res = _train(tiny_folder, tmp_path, **{"train.tracker": "mlflow", "train.epochs": 1})
    assert not (res.run_dir / "mlflow.db").exists()
    run = MlflowClient(tracking_uri=uri).get_run((res.run_dir / "mlflow_run_id").read_text().strip())
    assert run.info.run_name == res.run_dir.name


def test_training_curves_png_redrawn_each_epoch(tiny_folder, tmp_path, monkeypatch) -> None:
    from PIL import Image

    import imgcls_cli.viz.curves as curves

    seen: list[int] = []
    real = curves.training_curves_png
    monkeypatch.setattr(curves, "training_curves_png",
                        lambda recs, *a, **k: (seen.append(len(recs)), real(recs, *a, **k)))
    res = _train(tiny_folder, tmp_path)
    assert seen == [1, 2]  # once per epoch, with all records so far
    im = Image.open(res.run_dir / "training_curves.png")
    assert im.format == "PNG" and im.size[0] > 600


def test_missing_mlflow_is_one_line_before_the_run(tiny_folder, tmp_path, monkeypatch) -> None:
    import builtins

    from imgcls_cli.errors import ImgclsError

    real_import = builtins.__import__

    def no_mlflow(name, *a, **k):
        if name.startswith("mlflow"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(ImgclsError, match=r"pip install 'imgcls\[mlflow\]'"):
        _train(tiny_folder, tmp_path, **{"train.tracker": "mlflow"})
    assert not (tmp_path / "run").exists()
