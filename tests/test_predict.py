"""`imgcls predict` / ic.predict: the checkpoint's own evaluation probabilities on real images, top-k, CSV/JSON,
unreadable files listed, flip TTA."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from .conftest import quick_overrides, shared


@pytest.fixture(scope="module")
def hymenoptera_run(tmp_path_factory):
    """A seconds-long real-image run (ants vs bees at 48 px); the test compares outputs, not accuracy."""
    from imgcls_cli.config import build_config
    from imgcls_cli.engine.trainer import train

    data = shared("hymenoptera")
    out = tmp_path_factory.mktemp("pred") / "run"
    cfg = build_config(None, quick_overrides(**{"data.path": str(data), "data.img_size": 48, "train.out": str(out),
                                                "train.steps_per_epoch": 2, "train.batch_size": 8,
                                                "train.tensorboard": False, "train.curves": False}))
    return train(cfg).run_dir, data


def _eval_probs(run_dir, flip: bool = False) -> dict[str, torch.Tensor]:
    """Softmax of what `imgcls eval` computes for each val file (its loader, normaliser and task)."""
    from imgcls_cli.engine.checkpoint import load_checkpoint
    from imgcls_cli.engine.eval_api import eval_loader
    from imgcls_cli.engine.evaluator import evaluate

    dev = torch.device("cpu")
    ckpt = load_checkpoint(run_dir / "best.pt", dev)
    _, bundle, loader, norm = eval_loader(ckpt, None, None, 16, 0, dev)
    logits: list[torch.Tensor] = []
    evaluate(lambda x: ckpt.model(x.flip(3) if flip else x), loader, norm, ckpt.num_classes, dev, collect=logits)
    probs = torch.cat(logits).softmax(1)
    return {str(f): p for f, p in zip(bundle.val.files, probs, strict=True)}


def test_predict_matches_eval_pipeline_on_real_images(hymenoptera_run, tmp_path) -> None:
    import imgcls_cli as ic

    run_dir, data = hymenoptera_run
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    res = ic.predict([data / "val", bad], checkpoint=run_dir, topk=2, batch_size=7, device="cpu")
    ref = _eval_probs(run_dir)
    assert len(res.files) == len(ref) == 153
    assert [(str(f), r) for f, r in res.unreadable][0][0] == str(bad)
    got = torch.stack([res.probs[i] for i in range(len(res.files))])
    want = torch.stack([ref[str(f)] for f in res.files])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    rows = res.topk(2)
    assert rows[0]["top"][0]["class"] in ("ants", "bees") and rows[0]["top"][0]["prob"] >= rows[0]["top"][1]["prob"]


def test_predict_flip_tta_is_mean_of_softmaxes(hymenoptera_run) -> None:
    import imgcls_cli as ic

    run_dir, data = hymenoptera_run
    res = ic.predict(data / "val" / "bees", checkpoint=run_dir, tta="flip", device="cpu")
    ref, ref_flip = _eval_probs(run_dir), _eval_probs(run_dir, flip=True)
    want = torch.stack([(ref[str(f)] + ref_flip[str(f)]) / 2 for f in res.files])
    torch.testing.assert_close(res.probs, want, rtol=1e-4, atol=1e-5)


def test_predict_cli_csv_json_and_errors(hymenoptera_run, tmp_path) -> None:
    from typer.testing import CliRunner

    from imgcls_cli.cli.app import app

    run_dir, data = hymenoptera_run
    files = sorted((data / "val" / "ants").glob("*.jpg"))[:5]
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    runner = CliRunner()
    args = ["predict", *map(str, files), str(bad), "--checkpoint", str(run_dir), "--device", "cpu"]
    r = runner.invoke(app, [*args, "--topk", "2", "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [row["file"] for row in rows] == [*map(str, files), str(bad)]
    assert rows[-1]["error"] and not rows[-1]["class_1"]
    ref = _eval_probs(run_dir)
    for row, f in zip(rows, files, strict=False):
        p = ref[str(f)]
        assert row["class_1"] == ["ants", "bees"][int(p.argmax())]
        assert float(row["prob_1"]) == pytest.approx(float(p.max()), abs=1e-5)
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    j = json.loads((tmp_path / "p.json").read_text())
    assert len(j["predictions"]) == 5 and len(j["predictions"][0]["top"]) == 2  # the default 5, capped at 2 classes
    assert j["unreadable"][0]["file"] == str(bad)
    for extra, needle in ((["--topk", "3"], "--topk 3"), (["--tta", "rot"], "--tta rot"),
                          (["--out", str(tmp_path / "p.txt")], "--out")):
        r = runner.invoke(app, [*args, *extra])
        assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["predict", str(bad), "--checkpoint", str(run_dir), "--device", "cpu"])
    assert r.exit_code == 2 and "could be read" in r.output
