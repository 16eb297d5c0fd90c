"""Issue 12, faults during training: non-finite steps, SIGTERM/SIGINT, DataLoader worker death,
and exact mid-epoch resume on CPU (per-step losses of interrupted + resumed == uninterrupted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import get_worker_info

import imgcls_cli as ic
from imgcls_cli.data.dataset import ImageDataset
from imgcls_cli.data.loader import DeviceNormalizer
from imgcls_cli.engine.checkpoint import read_checkpoint
from imgcls_cli.engine.faults import LoaderCrashed, LoaderFailed, TrainingDiverged, worker_deaths_held

from .conftest import make_folder_dataset, quick_overrides

REPO = Path(__file__).resolve().parents[1]


def _overrides(data: Path, out: Path, **extra: object) -> dict[str, object]:
    return quick_overrides(**{"data.path": str(data), "data.img_size": 32, "train.batch_size": 4,
                              "train.epochs": 2, "train.out": str(out), "train.log_steps": True, **extra})


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "steps.jsonl").read_text().splitlines()]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_folder_dataset(tmp_path / "data", classes=3, train=8, val=2)  # 24 images: 6 steps per epoch


def _nan_after(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int] | int) -> None:
    """Data hook: the normalised batch becomes NaN on the given calls (or from call N on)."""
    orig, calls = DeviceNormalizer.__call__, [0]

    def hooked(self, images):
        calls[0] += 1
        x = orig(self, images)
        bad = calls[0] >= bad_calls if isinstance(bad_calls, int) else calls[0] in bad_calls
        return x * float("nan") if bad else x

    monkeypatch.setattr(DeviceNormalizer, "__call__", hooked)


def test_nonfinite_steps_skipped_then_training_continues(data: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _nan_after(monkeypatch, {3, 4})  # two bad steps in a row, fewer than max_bad_steps=3
    res = ic.train(**_overrides(data, tmp_path / "run", **{"train.max_bad_steps": 3, "train.epochs": 1}))
    ckpt = read_checkpoint(res.run_dir / "last.pt")
    assert ckpt["global_step"] == 6 and ckpt["skipped_steps"] == 2  # skipped steps still advance the schedule
    steps = [json.loads(x) for x in (res.run_dir / "steps.jsonl").read_text().splitlines()]
    assert [s.get("skipped", False) for s in steps] == [False, False, True, True, False, False]
    assert all(s["loss"] is None if s.get("skipped") else s["loss"] > 0 for s in steps)
    record = json.loads((res.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped_steps"] == 2 and record["train_loss"] == record["train_loss"]  # not NaN
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_k_consecutive_nonfinite_steps_stop_with_last_good_weights(data: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _nan_after(monkeypatch, 3)  # steps 1-2 good, then every step NaN
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite") as e:  # found at the 5th step's update
        ic.train(**_overrides(data, tmp_path / "run", **{"train.max_bad_steps": 3, "train.log_every": 1}))
    assert e.value.exit_code == 3
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["global_step"] == 5 and ckpt["skipped_steps"] == 3 and ckpt["epoch"] == 0
    assert ckpt["position"] == 5 * 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_consecutive_bad_steps_found_at_the_next_progress_update(data: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default log_every (10) the 6-step epoch is polled once, at its end: the run stops there,
    with the weights of step 2, since the four bad steps never reached the weights."""
    _nan_after(monkeypatch, 3)
    with pytest.raises(TrainingDiverged, match="4 consecutive non-finite steps by epoch 1 batch 6"):
        ic.train(**_overrides(data, tmp_path / "run", **{"train.max_bad_steps": 3}))
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["global_step"] == 6 and ckpt["skipped_steps"] == 4 and ckpt["position"] == 6 * 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_log_mode_stops_without_saving_poisoned_weights(data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """finite_check=log (no per-step sync, for GPUs): a NaN run stops at the next progress update and
    never overwrites a checkpoint with the poisoned weights."""
    _nan_after(monkeypatch, 9)  # epoch 1 (6 steps) is clean and saved; epoch 2 goes NaN at its 3rd step
    with pytest.raises(TrainingDiverged, match="finite_check=log") as e:
        ic.train(**_overrides(data, tmp_path / "run", **{"train.finite_check": "log", "train.log_steps": False}))
    assert e.value.exit_code == 3
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def _start_child(overrides: dict[str, object]) -> subprocess.Popen:
    code = ("import sys, imgcls_cli as ic; ic.train(**eval(sys.argv[1]))")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, repr(overrides)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _signal_after_steps(proc: subprocess.Popen, steps_file: Path, n: int, signum: int) -> tuple[int, str]:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if steps_file.is_file() and len(steps_file.read_text().splitlines()) >= n:
            proc.send_signal(signum)
            break
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_mid_epoch_and_resume_is_exact(data: Path, tmp_path: Path, signum: int, code: int) -> None:
    # the child runs with one thread; bit-exact comparison needs the same reduction order here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _signal_and_compare(data, tmp_path, signum, code)
    finally:
        torch.set_num_threads(threads)


def _signal_and_compare(data: Path, tmp_path: Path, signum: int, code: int) -> None:
    extra = {"aug.mixup": 0.4, "model.drop_rate": 0.2}  # mixing generator and dropout RNG must resume too
    ref = ic.train(**_overrides(data, tmp_path / "ref", **extra))
    want = _losses(ref.run_dir)
    assert len(want) == 12
    run = tmp_path / "cut"
    rc, out = _signal_after_steps(_start_child(_overrides(data, run, **extra)), run / "steps.jsonl", 8, signum)
    assert rc == code, out
    ckpt = read_checkpoint(run / "last.pt")
    done = len(_losses(run))
    assert ckpt["global_step"] == done and 8 <= done < 12, out
    assert ckpt["epoch"] == 1 and ckpt["position"] == (done - 6) * 4  # mid-epoch 2, sampler position saved
    assert f"stopped by signal {int(signum)}" in out
    ic.train(**_overrides(data, run, **{**extra, "train.resume": str(run)}))
    got = _losses(run)
    assert got == want, f"resumed after step {done}: per-step losses differ"  # bit-exact on CPU
    print(f"\n{signal.Signals(signum).name}: stopped after step {done}/12 (exit {rc}), resumed, 12/12 losses equal")


def test_a_worker_death_during_a_checkpoint_write_waits_for_the_write(tmp_path: Path) -> None:
    """The DataLoader's SIGCHLD handler raises in whatever the main thread runs; inside torch.save that broke the
    zip writer ("unexpected pos 64 vs 0") and surfaced as a RuntimeError instead of the loader crash."""
    def dataloader_handler(signum, frame):  # what torch.utils.data's handler does when a worker died
        raise RuntimeError("DataLoader worker (pid 12345) is killed by signal: Killed.")

    old = signal.signal(signal.SIGCHLD, dataloader_handler)
    try:
        with pytest.raises(LoaderFailed):
            with worker_deaths_held():
                os.kill(os.getpid(), signal.SIGCHLD)  # the worker dies mid-write
                torch.save({"w": torch.arange(10)}, tmp_path / "ck.pt")
                (tmp_path / "written").touch()
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert (tmp_path / "written").exists() and torch.load(tmp_path / "ck.pt")["w"].sum() == 45


def test_dataloader_worker_crash_saves_checkpoint(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orig = ImageDataset.__getitem__

    def dying(self, item):  # a worker is killed (OOM killer, segfault) while loading epoch 2
        if get_worker_info() is not None and isinstance(item, tuple) and item[1] == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(self, item)

    monkeypatch.setattr(ImageDataset, "__getitem__", dying)
    run = tmp_path / "run"
    with pytest.raises(LoaderCrashed) as e:
        ic.train(**_overrides(data, run, **{"data.workers": 1}))
    msg = str(e.value)
    assert e.value.exit_code == 4 and "\n" not in msg and "DataLoader worker" in msg and str(run) in msg
    ckpt = read_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 6
    monkeypatch.setattr(ImageDataset, "__getitem__", orig)
    res = ic.train(**_overrides(data, run, **{"data.workers": 1, "train.resume": str(run)}))
    assert res.epochs_run == 2 and read_checkpoint(run / "last.pt")["global_step"] == 12
