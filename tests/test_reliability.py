"""Issue 12, checkpoints: atomic saves under SIGKILL, damaged files, pickle payloads, pruning.

Every test counts what it tried and prints it (pytest -s shows the figures quoted in
docs/reliability.md).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import imgcls_cli as ic
from imgcls_cli.cli.app import app
from imgcls_cli.config import Config
from imgcls_cli.engine.checkpoint import FORMAT, VERSION, atomic_save, read_checkpoint, safe_load
from imgcls_cli.engine.state import newest_valid_checkpoint, prune
from imgcls_cli.errors import CheckpointError

from .conftest import make_folder_dataset, quick_overrides

runner = CliRunner()


def _big_ckpt(counter: int, numel: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"format": FORMAT, "version": VERSION, "config": Config().to_dict(), "class_names": ["a", "b"],
            "model": {"w": torch.randn(numel, generator=g)}, "counter": counter}


def _writer(path: str, start: int, ckpt: dict) -> None:  # runs in a forked child until SIGKILLed
    i = start
    while True:
        ckpt["counter"] = i
        atomic_save(ckpt, path)
        i += 1


@pytest.mark.slow
def test_sigkill_during_save_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    numel = 16 * 2**20  # 64 MiB of float32
    path = tmp_path / "last.pt"
    first = _big_ckpt(0, numel)
    head = first["model"]["w"][:8].clone()
    t0 = time.perf_counter()
    atomic_save(first, path)
    save_s = time.perf_counter() - t0
    rng = random.Random(12)
    ctx = mp.get_context("fork")
    kills, survived, mid_write, prev = 20, 0, 0, 0
    for k in range(kills):
        proc = ctx.Process(target=_writer, args=(str(path), prev + 1, first))
        proc.start()
        time.sleep(rng.uniform(0.0, 1.3 * save_s))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        mid_write += any(path.parent.glob(f".{path.name}.tmp.{proc.pid}"))
        ckpt = read_checkpoint(path)  # raises on a half-written or damaged file
        assert ckpt["counter"] >= prev, f"kill {k}: went back from {prev} to {ckpt['counter']}"
        assert torch.equal(ckpt["model"]["w"][:8], head)
        prev = ckpt["counter"]
        survived += 1
    print(f"\nSIGKILL during save: {kills} kills, {survived} left a loadable checkpoint, {mid_write} landed mid-write,"
          f" save of {numel * 4 / 2**20:.0f} MiB takes {save_s:.2f}s")
    assert survived == kills
    assert mid_write >= kills // 4, "too few kills landed during a write to test anything"
    atomic_save(_big_ckpt(0, 8), path)  # the next save removes the killed writers' temporary files
    assert not list(path.parent.glob(".last.pt.tmp.*"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rel")
    data = make_folder_dataset(root / "data", classes=3, train=6, val=2)
    res = ic.train(**quick_overrides(**{"data.path": str(data), "train.epochs": 3, "train.out": str(root / "run"),
                                       "train.batch_size": 6, "train.keep_checkpoints": 2,
                                       "data.img_size": 32}))
    return res.run_dir


def _damaged(src: Path, dst: Path, kind: str) -> Path:
    b = bytearray(src.read_bytes())
    if kind == "truncated":
        b = b[: len(b) // 2]
    elif kind == "empty":
        b = bytearray()
    elif kind.startswith("bitflip"):
        pos = random.Random(kind).randrange(64, len(b) - 64)
        b[pos] ^= 1 << (pos % 8)
    dst.write_bytes(bytes(b))
    return dst


DAMAGE = ["truncated", "empty"] + [f"bitflip{i}" for i in range(6)]


def _one_line_error(result, name: str) -> str:
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert name in text, text
    return text


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_checkpoint_refused_by_eval_and_resume(run_dir: Path, tmp_path: Path, kind: str) -> None:
    bad = _damaged(run_dir / "last.pt", tmp_path / f"{kind}.pt", kind)
    with pytest.raises(CheckpointError, match=bad.name):
        read_checkpoint(bad)
    _one_line_error(runner.invoke(app, ["eval", str(bad)]), bad.name)
    _one_line_error(runner.invoke(app, ["train", "--resume", str(bad), "--out", str(tmp_path / "r")]), bad.name)


def test_auto_resume_falls_back_to_newest_valid(run_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    d.mkdir()
    for p in run_dir.glob("*.pt"):
        (d / p.name).write_bytes(p.read_bytes())
    epochs = sorted(d.glob("epoch_*.pt"))
    assert [p.name for p in epochs] == ["epoch_002.pt", "epoch_003.pt"]
    _damaged(d / "last.pt", d / "last.pt", "truncated")
    assert newest_valid_checkpoint(d) == d / "epoch_003.pt"
    _damaged(d / "epoch_003.pt", d / "epoch_003.pt", "bitflip9")
    assert newest_valid_checkpoint(d) == d / "epoch_002.pt"
    res = ic.train(**quick_overrides(**{"data.path": read_checkpoint(d / "epoch_002.pt")["config"]["data"]["path"],
                                       "train.epochs": 3, "train.batch_size": 6, "train.out": str(d),
                                       "data.img_size": 32,
                                       "train.resume": "auto"}))
    assert res.epochs_run == 3 and read_checkpoint(d / "last.pt")["epoch"] == 3
    for p in d.glob("*.pt"):
        (p.unlink())
    with pytest.raises(Exception, match="no loadable checkpoint"):
        ic.train(**quick_overrides(**{"train.out": str(d), "train.resume": "auto"}))
    print("\nauto-resume: 2 fallbacks tried (damaged last.pt, then damaged newest epoch file), both resumed")


def test_pruning_never_deletes_the_only_valid_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    good = run_dir / "epoch_002.pt"
    tried = 0
    for n_epochs in (3, 5):
        d = tmp_path / f"p{n_epochs}"
        d.mkdir()
        (d / "epoch_001.pt").write_bytes(good.read_bytes())
        for e in range(2, n_epochs + 1):
            _damaged(good, d / f"epoch_{e:03d}.pt", "truncated")
        _damaged(good, d / "last.pt", "empty")
        prune(d, keep=2)
        assert (d / "epoch_001.pt").is_file(), "the only valid checkpoint was pruned"
        assert newest_valid_checkpoint(d) == d / "epoch_001.pt"
        tried += 1
    d = tmp_path / "normal"  # with valid newer files, old ones do go
    d.mkdir()
    for e in range(1, 5):
        (d / f"epoch_{e:03d}.pt").write_bytes(good.read_bytes())
    prune(d, keep=2)
    assert sorted(p.name for p in d.glob("epoch_*.pt")) == ["epoch_003.pt", "epoch_004.pt"]
    print(f"\npruning: {tried} folders whose only valid file was the oldest; it survived every time")


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_payload_refused_and_never_runs(run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    ckpt["config"] = _Payload(str(marker))
    evil = tmp_path / "evil.pt"
    torch.save(ckpt, evil)
    plain = tmp_path / "evil_plain.pt"
    torch.save({"x": _Payload(str(marker))}, plain)
    for f in (evil, plain):
        with pytest.raises(CheckpointError, match="refused"):
            safe_load(f)
        for args in (["eval", str(f)], ["train", "--resume", str(f), "--out", str(tmp_path / "r")]):
            text = _one_line_error(runner.invoke(app, args), f.name)
            assert "refused" in text
        assert not marker.exists(), "the pickle payload ran"
    print("\npickle payload: 2 files x (load, eval, resume) refused; marker file never created")


def _walk(obj: object, path: str = "ckpt") -> int:
    if isinstance(obj, torch.Tensor):
        return 1
    if isinstance(obj, dict):
        return sum(_walk(v, f"{path}[{k!r}]") for k, v in obj.items() if isinstance(k, (str, int)) or
                   pytest.fail(f"{path}: key {k!r} is a {type(k).__name__}"))
    if isinstance(obj, (list, tuple)):
        return sum(_walk(v, f"{path}[{i}]") for i, v in enumerate(obj))
    assert obj is None or isinstance(obj, (str, int, float, bool)), f"{path} is a {type(obj).__name__}"
    return 1


def test_own_checkpoints_hold_only_tensors_and_primitives(run_dir: Path) -> None:
    for name in ("last.pt", "best.pt", "epoch_003.pt"):
        ckpt = torch.load(run_dir / name, weights_only=True)  # no pickle fallback needed
        leaves = _walk(ckpt)
        assert leaves > 50 and {"digest", "model"} <= set(ckpt)
        assert ({"rng", "optimizer"} <= set(ckpt)) == (name != "best.pt")  # best.pt: the weights only
    ckpt = ic.load_checkpoint(str(run_dir / "best.pt"))
    assert ckpt.class_names == ["class_0", "class_1", "class_2"]
