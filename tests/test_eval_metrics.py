"""Macro P/R/F1 and ECE against scikit-learn / torchmetrics on the same predictions; confusions; eval's files."""

from __future__ import annotations

import json

import pytest
import torch

from imgcls_cli.engine.evaluator import evaluate

from .conftest import quick_overrides


def _predictions(n: int = 600, classes: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a half-right classifier; class 6 never occurs as a label nor as a prediction."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes - 1, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g) * 1.5
    logits[torch.arange(n), y] += torch.rand(n, generator=g) * 3  # right more often when confident
    logits[:, classes - 1] = -30.0
    return logits, y


def _run(logits: torch.Tensor, y: torch.Tensor, bs: int = 64):
    batches = [{"images": logits[i:i + bs], "targets": y[i:i + bs], "indices": torch.arange(i, min(i + bs, len(y))),
                "bad": []} for i in range(0, len(y), bs)]
    return evaluate(lambda x: x, batches, lambda x: x, logits.shape[1], torch.device("cpu"))


def test_macro_prf_matches_sklearn_and_torchmetrics() -> None:
    from sklearn.metrics import precision_recall_fscore_support

    logits, y = _predictions()
    s = _run(logits, y).summary([f"c{i}" for i in range(7)])
    pred = logits.argmax(1)
    p, r, f1, _ = precision_recall_fscore_support(y.numpy(), pred.numpy(), average="macro", zero_division=0)
    assert s["macro_precision"] == pytest.approx(p * 100, abs=1e-9)
    assert s["macro_recall"] == pytest.approx(r * 100, abs=1e-9)
    assert s["macro_f1"] == pytest.approx(f1 * 100, abs=1e-9)
    tm = pytest.importorskip("torchmetrics.classification")
    f1_tm = tm.MulticlassF1Score(num_classes=7, average="macro")(logits, y)
    assert s["macro_f1"] == pytest.approx(float(f1_tm) * 100, abs=1e-4)


def test_ece_matches_torchmetrics_and_reliability_bins() -> None:
    tm = pytest.importorskip("torchmetrics.classification")
    logits, y = _predictions(seed=3)
    res = _run(logits, y)
    s = res.summary([f"c{i}" for i in range(7)])
    probs = logits.softmax(1)
    assert float(probs.max(1).values.max()) < 1.0  # no confidence on the 1.0 edge (binned differently there)
    ref = tm.MulticlassCalibrationError(num_classes=7, n_bins=15, norm="l1")(probs, y)
    assert s["ece"] == pytest.approx(float(ref) * 100, abs=1e-4)
    rel = s["reliability"]
    assert rel["bins"] == 15 and sum(rel["count"]) == len(y)
    conf, pred = probs.max(1)
    m = 4  # the 5th bin, (4/15, 5/15]
    inside = (conf > m / 15) & (conf <= (m + 1) / 15)
    assert rel["count"][m] == int(inside.sum())
    assert rel["accuracy"][m] == pytest.approx(float((pred == y)[inside].double().mean()))


def test_confident_mistakes_and_confused_pairs_brute_force() -> None:
    logits, y = _predictions(seed=5)
    res = _run(logits, y, bs=50)
    conf, pred = logits.softmax(1).max(1)
    wrong = (pred != y).nonzero().flatten()
    order = wrong[conf[wrong].argsort(descending=True)][:16]
    assert [m["index"] for m in res.mistakes] == order.tolist()
    assert [m["pred"] for m in res.mistakes] == pred[order].tolist()
    s = res.summary([f"c{i}" for i in range(7)])
    cm = torch.zeros(7, 7, dtype=torch.long)
    cm.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    cm.fill_diagonal_(0)
    first = s["confused_pairs"][0]
    i, j = divmod(int(cm.argmax()), 7)
    assert (first["true"], first["pred"], first["count"]) == (f"c{i}", f"c{j}", int(cm.max()))
    assert first["rate"] == pytest.approx(int(cm.max()) / int((y == i).sum()) * 100)


def test_eval_writes_metrics_pictures_and_pairs(tiny_folder, tmp_path) -> None:
    from typer.testing import CliRunner

    from imgcls_cli.cli.app import app
    from imgcls_cli.config import build_config
    from imgcls_cli.engine.trainer import train

    res = train(build_config(None, quick_overrides(**{"data.path": str(tiny_folder), "train.out": str(tmp_path / "r"),
                                                       "train.tensorboard": False, "train.curves": False})))
    out = tmp_path / "ev"
    r = CliRunner().invoke(app, ["eval", str(res.run_dir), "--out", str(out), "--json", str(tmp_path / "m.json"),
                                 "--workers", "0", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "m.json").read_text())
    for key in ("top1", "top5", "per_class", "macro_precision", "macro_recall", "macro_f1", "ece", "reliability",
                "confused_pairs", "mistakes"):
        assert key in s
    from PIL import Image

    for png in ("confusion.png", "reliability.png"):
        assert Image.open(out / png).size[0] > 100
    assert (out / "confused_pairs.csv").read_text().startswith("true,pred,count,rate")
    if s["mistakes"]:
        assert Image.open(out / "mistakes.png").size[0] > 100
        assert all(m["file"].endswith(".jpg") for m in s["mistakes"])


def test_confusion_png_lists_pairs_for_200_classes(tmp_path) -> None:
    from imgcls_cli.viz.plots import confusion_png

    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 2, (200, 200), generator=g) * (torch.rand(200, 200, generator=g) > 0.98)
    cm = torch.diag(torch.full((200,), 20)) + noise
    cm[3, 7] = 9
    names = [f"species_{i:03d}" for i in range(200)]
    confusion_png(cm, names, tmp_path / "c.png")
    from PIL import Image

    w, h = Image.open(tmp_path / "c.png").size
    assert w > 1500 and h > 1000
