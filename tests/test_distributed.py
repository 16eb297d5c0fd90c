"""Issue 11: DDP on CPU with gloo and 2 processes launched by `imgcls train --devices 2` (torchrun).

Setup that makes DDP and one process comparable: the same global batch (2 x 8 vs 1 x 16) and seed,
so every step sees the same 16 images with the same augmentation (the sampler makes one global
draw and rank r takes items r, r+2, ...; augmentation is seeded per (seed, epoch, index)); DDP
averages the per-rank mean gradients, which equals the 16-image mean.  BatchNorm would normalise
over 8 images per rank instead of 16 (and SyncBatchNorm has no CPU kernel), so BN runs on its
running statistics (`train.freeze_bn`).  What remains is float summation order in the gradient
all-reduce: final weights agree to rtol 1e-4 / atol 1e-5 after 6 SGD steps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import imgcls_cli as ic
from imgcls_cli.engine.checkpoint import read_checkpoint

from .conftest import make_folder_dataset

REPO = Path(__file__).resolve().parents[1]
COMMON = {"model.backbone": "resnet20", "data.img_size": 32, "train.epochs": 2, "data.workers": 0,
          "train.device": "cpu", "train.progress": False, "train.freeze_bn": True,
          "optim.name": "sgd", "optim.lr": 0.02,
          "optim.schedule": "cosine", "train.seed": 3, "train.keep_checkpoints": 2}


def _ddp(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "imgcls_cli", "train", "--devices", "2", "--device", "cpu",
                           "--backbone", "resnet20", "--img-size", "32", "--workers", "0", "--no-progress",
                           "--set", "train.freeze_bn=true", "--optimizer", "sgd", "--set", "optim.lr=0.02",
                           "--seed", "3", "--keep-checkpoints", "2", *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()  # no "module." prefix: DDP checkpoints are plain models
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{k} differs")
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    data = make_folder_dataset(root / "data", classes=3, train=16, val=5)  # 48 train, 15 val (odd)
    shutil.copytree(data / "val", data / "test")  # test/ is reported once at the end; val/ is evaluated every epoch
    single = ic.train(**{**COMMON, "data.path": str(data), "train.batch_size": 16, "train.out": str(root / "single")})
    proc = _ddp(["--data", str(data), "--epochs", "2", "--batch-size", "8", "--out", str(root / "ddp")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"data": data, "single": single.run_dir, "ddp": root / "ddp", "root": root, "log": proc.stdout + proc.stderr}


@pytest.mark.slow
def test_ddp_final_weights_equal_single_process(runs: dict[str, Path]) -> None:
    a = read_checkpoint(runs["single"] / "last.pt")
    b = read_checkpoint(runs["ddp"] / "last.pt")
    assert a["global_step"] == b["global_step"] == 6
    assert b["config"]["train"]["batch_size"] == 8 and b["config"]["train"]["devices"] == 2
    _close(a["model"], b["model"])
    print(f"\nDDP 2x8 vs 1x16: max |dw| = {_max_diff(a['model'], b['model']):.2e} after 6 steps")
    log = str(runs["log"])
    assert log.count("run directory:") == 2 and log.count("epoch 2/2") == 1  # rank 0 alone logs (+ final line)
    files = sorted(p.name for p in runs["ddp"].iterdir() if p.name != ".lock")  # .lock: the run's one writer
    assert files == ["best.pt", "config.yaml", "epoch_001.pt", "epoch_002.pt", "final_eval.json", "last.pt",
                     "metrics.jsonl", "tensorboard", "training_curves.png"]


@pytest.mark.slow
def test_ddp_evaluation_counts_every_sample_once(runs: dict[str, Path]) -> None:
    recs = [json.loads(x) for x in (runs["ddp"] / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and all(r["val_n"] == 15 for r in recs)  # 15 = 8 on rank 0 + 7 on rank 1, no padding
    single = [json.loads(x) for x in (runs["single"] / "metrics.jsonl").read_text().splitlines()]
    assert abs(recs[-1]["val_top1"] - single[-1]["val_top1"]) < 1e-9  # all-reduced metrics match


@pytest.mark.slow
def test_resume_across_world_sizes(runs: dict[str, Path]) -> None:
    want = read_checkpoint(runs["single"] / "last.pt")["model"]
    # 2 processes -> 1: epoch 1 of the DDP run, epoch 2 in one process with the same global batch
    one = ic.train(**{**COMMON, "data.path": str(runs["data"]), "train.batch_size": 16,
                      "train.out": str(runs["root"] / "d2s"), "train.resume": str(runs["ddp"] / "epoch_001.pt")})
    _close(want, read_checkpoint(one.run_dir / "last.pt")["model"])
    # 1 process -> 2: epoch 1 of the single run, epoch 2 under DDP
    proc = _ddp(["--resume", str(runs["single"] / "epoch_001.pt"), "--data", str(runs["data"]), "--epochs", "2",
                 "--batch-size", "8", "--out", str(runs["root"] / "s2d")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = read_checkpoint(runs["root"] / "s2d" / "last.pt")
    assert got["global_step"] == 6 and "resuming from" in proc.stdout + proc.stderr
    _close(want, got["model"])


@pytest.mark.slow
def test_sigterm_to_every_process_saves_once_at_an_agreed_step(runs: dict[str, Path]) -> None:
    """As SLURM does on preemption, SIGTERM reaches every process of the job (launcher and ranks), maybe at
    different steps.  Ranks agree on stopping at a progress update (train.log_every), so under DDP no
    host read is spent on it per step; rank 0 saves a mid-run checkpoint that resumes."""
    import signal
    import time

    out = runs["root"] / "sig"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "imgcls_cli", "train", "--devices", "2", "--device", "cpu", "--backbone", "resnet20",
           "--img-size", "32", "--workers", "0", "--no-progress", "--set", "train.freeze_bn=true", "--seed", "3",
           "--optimizer", "sgd", "--data", str(runs["data"]), "--epochs", "50", "--batch-size", "8", "--out", str(out),
           "--set", "train.log_steps=true", "--set", "train.log_every=2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    steps = out / "steps.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if steps.is_file() and len(steps.read_text().splitlines()) >= 4:
            os.killpg(proc.pid, signal.SIGTERM)
            break
        time.sleep(0.05)
    log, _ = proc.communicate(timeout=180)
    ckpt = read_checkpoint(out / "last.pt")
    assert "stopped by signal 15" in log, log[-3000:]
    assert 4 <= ckpt["global_step"] < 150 and ckpt["global_step"] == len(steps.read_text().splitlines())
    in_epoch = ckpt["position"] // 16  # steps into the current epoch (3 per epoch): updates come after 2 and 3
    assert in_epoch in (2, 3), ckpt["position"]
    done = _ddp(["--resume", str(out), "--data", str(runs["data"]), "--epochs", str(ckpt["epoch"] + 1),
                 "--batch-size", "8", "--out", str(out)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert read_checkpoint(out / "last.pt")["global_step"] == 3 * (ckpt["epoch"] + 1)


@pytest.mark.slow
def test_a_user_error_in_the_ranks_is_one_line_with_its_exit_status(tmp_path: Path) -> None:
    """Every rank used to print the error, then torchrun its ChildFailedError traceback, and the job exited 1
    (3 after too many non-finite steps was lost too): now one line and the rank's exit status."""
    bad = _ddp(["--data", str(tmp_path / "missing"), "--epochs", "1"])
    text = (bad.stdout + bad.stderr).strip()
    assert bad.returncode == 2 and "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith(f"error: --data {tmp_path / 'missing'}: no such folder or file")
    out = tmp_path / "nan"
    nan = _ddp(["--data", "digits", "--epochs", "1", "--batch-size", "8", "--set", "optim.lr=1e30", "--img-size", "16",
                "--set", "train.steps_per_epoch=4", "--set", "train.max_bad_steps=2", "--set", "train.log_every=1",
                "--out", str(out)])
    last = (nan.stdout + nan.stderr).strip().splitlines()[-1]
    assert nan.returncode == 3 and "Traceback" not in nan.stderr, nan.stderr[-3000:]
    assert last.startswith("error: training diverged") and f"saved in {out}" in last, last
