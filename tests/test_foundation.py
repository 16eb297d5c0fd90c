"""Issue 2: config, registries, backbones vs torchvision, data, training, eval, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from pydantic import ValidationError

import imgcls_cli as ic
from imgcls_cli.config import Config, build_config, load_config
from imgcls_cli.errors import ImgclsError

from .conftest import make_folder_dataset, quick_overrides

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, check: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "imgcls_cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "COLUMNS": "200"})
    if check and proc.returncode != 0:
        raise AssertionError(f"imgcls {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# ---------------------------------------------------------------- registries and config
def test_components_lists_registries():
    comp = ic.components()
    wanted = {"resnet50", "vgg16_bn", "mobilenet_v2", "mobilenet_v3_large", "resnet20", "resnet32"}
    assert wanted <= set(comp["backbone"])
    assert "ce" in comp["loss"] and "instance" in comp["sampler"] and "standard" in comp["method"]
    assert comp["attn"][0] == "none"


def test_config_is_frozen_and_forbids_extra():
    cfg = Config()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.epochs = 3
    with pytest.raises(ImgclsError, match="train.epochz: unknown key"):
        build_config(None, {"train.epochz": 3})
    with pytest.raises(ImgclsError, match="model.backbone"):
        build_config(None, {"model.backbone": "resnet5O"})


def test_yaml_config_with_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"model": {"backbone": "resnet20"}, "train": {"epochs": 7}}))
    cfg = load_config(p, {"train.epochs": 2})
    assert cfg.model.backbone == "resnet20" and cfg.train.epochs == 2
    assert Config.model_validate(yaml.safe_load(cfg.to_yaml())) == cfg  # round trip


# ---------------------------------------------------------------- backbones vs torchvision
@pytest.mark.parametrize("name", ["resnet50", "vgg16_bn", "mobilenet_v2"])
def test_torchvision_state_dict_gives_equal_logits(name, tmp_path):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), path)
    model = ic.build_model(name, num_classes=1000, weights=str(path)).eval()
    assert list(model.state_dict()) == list(ref.state_dict())  # names match torchvision's
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() <= 1e-5


def test_weights_file_with_other_class_count_replaces_head(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    from imgcls_cli.models.build import log_messages

    model = ic.build_model("resnet18", num_classes=7, weights=str(tmp_path / "r18.pth"))
    assert model.fc.out_features == 7
    assert torch.equal(model.conv1.weight, ref.conv1.weight)
    assert any("head replaced" in m for m in log_messages)


def test_weights_of_wrong_architecture_is_refused(tmp_path):
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "m.pth")
    with pytest.raises(ImgclsError, match="does not fit"):
        ic.build_model("resnet18", num_classes=10, weights=str(tmp_path / "m.pth"))


def test_cifar_resnet32_size_and_shapes():
    m = ic.build_model("resnet32", num_classes=10)
    n = sum(p.numel() for p in m.parameters())
    assert abs(n - 0.46e6) / 0.46e6 < 0.02
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------- data
def test_digits_split_is_fixed_and_stratified():
    from imgcls_cli.data.digits import load_digits_arrays

    a, _ = load_digits_arrays()
    b, _ = load_digits_arrays()
    shapes = {k: v[0].shape[0] for k, v in a.items()}
    assert shapes == {"train": 1437, "val": 180, "test": 180} and a["train"][0].dtype.name == "uint8"
    for k in a:
        assert (a[k][1] == b[k][1]).all() and (a[k][0] == b[k][0]).all()
    for k in ("val", "test"):
        assert min(torch.bincount(torch.from_numpy(a[k][1])).tolist()) >= 17
    # the three splits are disjoint images: no held-out image is also a training one, val and test apart
    rows = {k: {im.tobytes() for im in v[0]} for k, v in a.items()}
    assert not rows["val"] & rows["test"] and not (rows["val"] | rows["test"]) & rows["train"]


def test_folder_training_and_eval_agree(tiny_folder, tmp_path):
    res = ic.train(**quick_overrides(**{"data.path": str(tiny_folder), "train.epochs": 2,
                                        "train.out": str(tmp_path / "r"), "data.img_size": 32}))
    run = Path(res.run_dir)
    for f in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt"):
        assert (run / f).is_file(), f
    saved = yaml.safe_load((run / "config.yaml").read_text())
    # data-set defaults resolved: 32 px images train with the CIFAR pad-and-crop and evaluate as they are
    assert saved["aug"]["hflip"] == 0.5 and saved["aug"]["preset"] == "pad_crop" and saved["aug"]["pad"] == 4
    assert saved["aug"]["crop_scale"] is None and saved["aug"]["eval_crop_pct"] == 1.0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    proc = run_cli("eval", str(run / "best.pt"), "--json", str(tmp_path / "e.json"), check=True)
    out = json.loads((tmp_path / "e.json").read_text())
    assert set(out) >= {"top1", "top5", "per_class", "many", "medium", "few"}
    # no selection split here (quick runs): best.pt is the last epoch, and eval reproduces the run's final_eval.json
    assert res.best_epoch == -1 and out["top1"] == pytest.approx(res.final["top1"], abs=1e-9)
    assert (run / "eval_val" / "confusion.csv").is_file() and (run / "eval_val" / "confusion.png").is_file()
    assert "top-1" in proc.stdout
    ck = ic.load_checkpoint(str(run / "best.pt"))
    assert ck.class_names == ["class_0", "class_1", "class_2"] and ck.class_counts == [8, 8, 8]


def test_existing_out_is_never_overwritten(tiny_folder, tmp_path):
    ov = quick_overrides(**{"data.path": str(tiny_folder), "train.out": str(tmp_path / "r"), "data.img_size": 32})
    ic.train(**ov)
    with pytest.raises(ImgclsError, match="already holds a run"):
        ic.train(**ov)


# ---------------------------------------------------------------- errors: one line, exit 2
@pytest.mark.parametrize("args, needle", [
    (["train", "--backbone", "resnet51"], "--backbone (model.backbone): unknown backbone 'resnet51'"),
    (["train", "--loss", "focal"], "unknown loss 'focal'"),
    (["train", "--data", "/nonexistent/folder"], "--data /nonexistent/folder: no such folder"),
    (["train", "--epochs", "0"], "train.epochs"),
    (["train", "--set", "optim.momentum=abc"], "optim.momentum"),
    (["eval", "/nonexistent.pt"], "file not found"),
])
def test_bad_input_one_line_exit_2(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len([ln for ln in proc.stderr.strip().splitlines() if ln.strip()]) == 1


def test_empty_class_folder_and_non_checkpoint(tmp_path):
    root = make_folder_dataset(tmp_path / "d", classes=2, train=2, val=1)
    (root / "train" / "empty_class").mkdir()
    proc = run_cli("train", "--data", str(root))
    assert proc.returncode == 2 and "train/empty_class has no images" in proc.stderr
    bogus = tmp_path / "not_a_ckpt.pt"
    bogus.write_text("hello")
    proc = run_cli("eval", str(bogus))
    assert proc.returncode == 2 and str(bogus) in proc.stderr and "Traceback" not in proc.stderr
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    proc = run_cli("eval", str(tmp_path / "plain.pt"))
    assert proc.returncode == 2 and "not an imgcls checkpoint" in proc.stderr


def test_wrong_type_option_exit_2():
    proc = run_cli("train", "--epochs", "three")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_help_lists_subcommands():
    proc = run_cli("--help", check=True)
    for cmd in ("train", "eval", "cam", "export", "stats"):
        assert cmd in proc.stdout


# ---------------------------------------------------------------- resume
def test_resume_after_kill_continues_schedule(tmp_path):
    """Stop after epoch 1 (as a kill would leave it), resume: epochs 2-3 match an uninterrupted run."""
    common = quick_overrides(**{"data.path": "digits", "train.epochs": 3, "train.steps_per_epoch": 4,
                                "optim.warmup_epochs": 1.0, "train.keep_checkpoints": 3})
    full = ic.train(**{**common, "train.out": str(tmp_path / "full")})
    ic.train(**{**common, "train.out": str(tmp_path / "cut")})
    cut = tmp_path / "cut"
    # keep only what existed after epoch 1: last.pt := epoch_001.pt, metrics truncated
    (cut / "epoch_001.pt").replace(cut / "last.pt")
    lines = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text(lines[0] + "\n")
    ic.train(**{**common, "train.out": str(cut), "train.resume": str(cut / "last.pt")})
    a = [json.loads(x) for x in (Path(full.run_dir) / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        assert ra["lr"] == pytest.approx(rb["lr"], rel=1e-12)
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)


# ---------------------------------------------------------------- the quick-start run
@pytest.mark.slow
def test_default_digits_run_reaches_95(tmp_path):
    """`imgcls train` with no options: >= 95% top-1 on digits, on val (selection) and test (reported)."""
    proc = run_cli("train", "--out", str(tmp_path / "digits"), "--no-progress", check=True, timeout=900)
    best = float(proc.stdout.split("best val top-1 ")[1].split("%")[0])  # on val, where best.pt is chosen
    assert best >= 95.0, proc.stdout
    final = json.loads((tmp_path / "digits" / "final_eval.json").read_text())
    assert final["split"] == "test" and final["selected_on"] == "val" and final["top1"] >= 95.0, final
    run_cli("eval", str(tmp_path / "digits" / "best.pt"), "--json", str(tmp_path / "e.json"), check=True)
    top1 = json.loads((tmp_path / "e.json").read_text())["top1"]
    assert top1 == pytest.approx(final["top1"], abs=1e-9)  # eval of best.pt reports the test split, as the run did
