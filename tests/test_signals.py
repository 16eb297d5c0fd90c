"""Issue 25 (and issue 26's "signalling the whole job"): stop signals honoured at once in every phase,
the epoch saved before its evaluation, one writer per run directory, failed checkpoint writes.

Each phase is made slow in a child process (a patched function sleeps), the signal is sent when the
phase has begun, and the time to stop is measured; before the fix each of these waited for the whole
phase (or died with a traceback / the default action of the signal)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import imgcls_cli as ic
from imgcls_cli.engine import checkpoint as ckmod
from imgcls_cli.engine.checkpoint import read_checkpoint
from imgcls_cli.engine.rundir import RunLock, mark_latest
from imgcls_cli.errors import ImgclsError

from .conftest import make_folder_dataset, quick_overrides

REPO = Path(__file__).resolve().parents[1]

# The child: patches what makes one phase slow (touching `marker` when it starts), then trains or runs the CLI.
CHILD = r'''
import json, os, sys, time
spec = json.loads(sys.argv[1])
def mark():
    if not os.path.exists(spec["marker"]):
        open(spec["marker"], "w").close()
def slowed(owner, name, seconds, when=lambda *a, **k: True):
    orig = getattr(owner, name)
    def f(*a, **k):
        if when(*a, **k):
            mark(); time.sleep(seconds)
        return orig(*a, **k)
    setattr(owner, name, f)
slow = spec.get("slow")
if slow == "eval":
    from imgcls_cli.methods.standard import StandardTask
    slowed(StandardTask, "eval_logits", 0.5)
elif slow == "save":
    import torch
    slowed(torch, "save", 3.0, lambda obj, *a, **k: isinstance(obj, dict) and bool(obj.get("eval_pending"))
           and not os.path.exists(spec["marker"]))  # the first file of the save only (last.pt)
elif slow == "worker_start":
    import imgcls_cli.data.loader as L
    orig_init = L._worker_init
    def init(i):
        orig_init(i); time.sleep(15)
    L._worker_init = init
elif slow == "cam":
    import imgcls_cli.viz.explain as E
    slowed(E, "explain_file", 30)
elif slow == "export":
    import imgcls_cli.export as X
    slowed(X, "verify", 30)
elif slow == "pack":
    import imgcls_cli.data.hdf5 as H
    slowed(H, "_file_and_name", 30)
elif slow == "features":
    import imgcls_cli.models.build as B
    slowed(B, "forward_with_features", 30)
if "train" in spec:
    import imgcls_cli as ic
    ic.train(**spec["train"])
else:
    from imgcls_cli.cli.app import app
    sys.argv = ["imgcls", *spec["argv"]]
    app()
'''


def _child(spec: dict, marker: Path, new_session: bool = False) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps({**spec, "marker": str(marker)})], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=new_session)


def _wait_for(proc: subprocess.Popen, cond, what: str, limit: float = 180) -> None:
    deadline = time.time() + limit
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"child ended before {what}: {proc.communicate()[0][-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{what} never happened: {proc.communicate()[0][-3000:]}")
        time.sleep(0.02)


def _signal_and_time(proc: subprocess.Popen, signum: int, group: bool = False) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    os.killpg(proc.pid, signum) if group else proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out, time.perf_counter() - t0


def _train(data: Path, out: Path, **extra: object) -> dict[str, object]:
    return quick_overrides(**{"data.path": str(data), "data.img_size": 32, "train.batch_size": 4,
                              "train.epochs": 2, "train.out": str(out), "train.log_steps": True,
                              "data.select_split": "auto", **extra})  # val/ evaluated every epoch


def _lines(p: Path) -> list[str]:
    return p.read_text().splitlines() if p.is_file() else []


@pytest.fixture
def data(tmp_path: Path) -> Path:
    # 24 training images (6 steps of 4), 60 validation images: 15 evaluation batches of 4 each epoch (val/ is
    # the selection split because test/ is there to be reported)
    root = make_folder_dataset(tmp_path / "data", classes=3, train=8, val=20)
    make_folder_dataset(tmp_path / "held", classes=3, train=1, val=2)
    (tmp_path / "held" / "val").rename(root / "test")
    return root


@pytest.mark.slow
def test_sigterm_during_evaluation_stops_at_once_and_resume_does_not_retrain(data: Path, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    """Mutations caught: saving after the evaluation (no last.pt of epoch 1, the epoch is retrained: 18 steps),
    a signal only polled between training steps (exit after the whole 7.5 s evaluation), a resumed run that
    skips the interrupted evaluation (no epoch-1 record)."""
    extra = {"train.eval_batch_size": 4}
    # the reference in a child too: the same thread count, so the same floating-point sums (1 vs 2 threads
    # differ in the last bits, and six steps at lr 0.05 make that a different model)
    ref_proc = _child({"train": _train(data, tmp_path / "ref", **extra)}, tmp_path / "ref_marker")
    ref_out, _ = ref_proc.communicate(timeout=120)
    assert ref_proc.returncode == 0, ref_out
    want = [json.loads(x) for x in _lines(tmp_path / "ref" / "metrics.jsonl")]
    run = tmp_path / "cut"
    proc = _child({"train": _train(data, run, **extra), "slow": "eval"}, tmp_path / "m")
    _wait_for(proc, (tmp_path / "m").exists, "the evaluation of epoch 1")
    rc, out, took = _signal_and_time(proc, signal.SIGTERM)
    assert rc == 143, out
    assert took < 4.0, f"{took:.1f} s to stop during evaluation (15 batches of 0.5 s)"
    assert "Traceback" not in out and f"stopped by signal {int(signal.SIGTERM)}" in out
    ck = read_checkpoint(run / "last.pt")
    assert ck["epoch"] == 1 and ck["eval_pending"] and ck["global_step"] == 6, "epoch 1 must be saved before eval"
    assert len(_lines(run / "steps.jsonl")) == 6 and not _lines(run / "metrics.jsonl")
    capsys.readouterr()
    resumed = _child({"train": _train(data, run, **{**extra, "train.resume": str(run)})}, tmp_path / "m2")
    err, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    err = " ".join(err.split())  # rich wraps at 80 columns
    assert "evaluation was interrupted and is redone first" in err and "continues at epoch 2 of 2" in err
    assert len(_lines(run / "steps.jsonl")) == 12, "epoch 1 was trained again"
    got = [json.loads(x) for x in _lines(run / "metrics.jsonl")]
    assert [r["epoch"] for r in got] == [1, 2]
    for k in ("val_top1", "val_loss", "train_loss", "steps"):
        assert [r[k] for r in got] == [r[k] for r in want], k
    assert not read_checkpoint(run / "last.pt").get("eval_pending")
    print(f"\nSIGTERM during evaluation: exit 143 after {took:.2f} s; resumed, epoch 1 evaluated, not retrained")


@pytest.mark.slow
def test_signal_during_checkpoint_write_finishes_the_write_then_stops(data: Path, tmp_path: Path) -> None:
    """Mutation caught: a handler that raises inside the write (no complete last.pt, or exit only after
    the evaluation that follows)."""
    run = tmp_path / "run"
    proc = _child({"train": _train(data, run), "slow": "save"}, tmp_path / "m")
    _wait_for(proc, (tmp_path / "m").exists, "the end-of-epoch save")
    rc, out, took = _signal_and_time(proc, signal.SIGINT)
    assert rc == 130 and "Traceback" not in out, out
    assert took < 3.0 + 3.0, f"{took:.1f} s"
    ck = read_checkpoint(run / "last.pt")  # complete and valid: the write was not cut
    assert ck["epoch"] == 1 and ck["eval_pending"] and not _lines(run / "metrics.jsonl")  # no evaluation after it


@pytest.mark.slow
def test_signal_during_loader_startup_saves_at_once(data: Path, tmp_path: Path) -> None:
    """Workers that take 15 s to start: before the fix the run waited for them and for a first step."""
    run = tmp_path / "run"
    proc = _child({"train": _train(data, run, **{"data.workers": 1}), "slow": "worker_start"}, tmp_path / "m")
    _wait_for(proc, (run / "config.yaml").exists, "the start of training")
    time.sleep(1.0)  # the worker is forked and sleeping in its worker_init_fn
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGUSR1)
    _wait_for(proc, (run / "last.pt").exists, "last.pt", limit=30)
    saved = time.perf_counter() - t0
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1 and "Traceback" not in out, out
    assert saved < 4.0, f"{saved:.1f} s until last.pt"
    ck = read_checkpoint(run / "last.pt")
    assert ck["epoch"] == 0 and ck["position"] == 0 and ck["global_step"] == 0


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_with_workers(tmp_path: Path) -> None:
    """Issue 26: `timeout`/`scancel`/`kill -- -PGID` signal the loader workers too.  Before: the workers died,
    'data loading failed ... fewer --workers' and a traceback, exit 1 or 4.  Now: exit 143, last.pt mid-epoch."""
    data = make_folder_dataset(tmp_path / "data", classes=3, train=40, val=4)  # 30 steps per epoch
    run = tmp_path / "run"
    proc = _child({"train": _train(data, run, **{"data.workers": 2})}, tmp_path / "m", new_session=True)
    _wait_for(proc, lambda: len(_lines(run / "steps.jsonl")) >= 3, "3 steps")
    rc, out, took = _signal_and_time(proc, signal.SIGTERM, group=True)
    assert rc == 143, out
    assert "Traceback" not in out and "data loading failed" not in out and "DataLoader worker" not in out, out
    ck = read_checkpoint(run / "last.pt")
    assert ck["global_step"] == len(_lines(run / "steps.jsonl")) >= 3 and ck["position"] == ck["global_step"] * 4
    assert took < 5.0, f"{took:.1f} s"


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Path]:
    data = make_folder_dataset(tmp_path / "d", classes=2, train=4, val=2)
    res = ic.train(**_train(data, tmp_path / "r", **{"train.epochs": 1, "train.log_steps": False}))
    return data, res.run_dir


COMMANDS = {  # command, the slowed function, signal
    "eval": ("eval", signal.SIGTERM),
    "eval-ncm": ("features", signal.SIGUSR1),
    "cam": ("cam", signal.SIGUSR1),
    "export": ("export", signal.SIGTERM),
    "pack": ("pack", signal.SIGINT),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_commands_stop_at_once_with_128_plus_signal(name: str, trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Before: SIGTERM / SIGUSR1 killed eval, cam, export, pack by the default action (status -N, no message);
    SIGINT printed 'interrupted'.  Now one line 'stopped by signal N (NAME)', exit 128 + N, no partial files."""
    data, run = trained
    slow, signum = COMMANDS[name]
    argv = {"eval": ["eval", str(run), "--device", "cpu", "--batch-size", "1"],
            "eval-ncm": ["eval", str(run), "--device", "cpu", "--classifier", "ncm"],
            "cam": ["cam", str(data / "val"), "--checkpoint", str(run), "--device", "cpu",
                    "--out", str(tmp_path / "c")],
            "export": ["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "x.ts")],
            "pack": ["pack", str(data), str(tmp_path / "p.h5")]}[name]
    proc = _child({"argv": argv, "slow": slow}, tmp_path / "m")
    _wait_for(proc, (tmp_path / "m").exists, f"{name} started")
    rc, out, took = _signal_and_time(proc, signum)
    assert rc == 128 + signum, out
    assert f"stopped by signal {int(signum)} ({signal.Signals(signum).name})" in out and "Traceback" not in out, out
    assert took < 4.0, f"{took:.1f} s"
    assert not list(tmp_path.glob(".*tmp*")) and not (tmp_path / "x.ts").exists() and not (tmp_path / "p.h5").exists()


# ---------------------------------------------------------------------------------------------- one writer
def _hold_lock(run: Path) -> subprocess.Popen:
    code = ("import sys, time; from imgcls_cli.engine.rundir import RunLock; lock = RunLock(__import__('pathlib')"
            ".Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(120)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_refused_and_a_dead_writers_lock_is_stale(tmp_path: Path) -> None:
    """Mutation caught: no lock (the second run writes the same folder), or a lock file that outlives its
    process (the run after the kill is refused)."""
    data = make_folder_dataset(tmp_path / "d", classes=2, train=4, val=2)
    run = tmp_path / "run"
    run.mkdir()
    holder = _hold_lock(run)
    try:
        for extra in ({}, {"train.resume": str(run)}):
            if extra:
                ic.train(**_train(data, tmp_path / "first", **{"train.epochs": 1}))
                extra = {"train.resume": str(tmp_path / "first"), "train.out": str(run)}
            with pytest.raises(ImgclsError, match=rf"another imgcls process \(pid {holder.pid} on ") as e:
                ic.train(**_train(data, run, **{"train.epochs": 1, **extra}))
            assert e.value.exit_code == 2 and "\n" not in str(e.value)
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written by the refused runs
    finally:
        holder.kill()
        holder.wait()
    res = ic.train(**_train(data, run, **{"train.epochs": 1}))  # the killed holder's lock is stale
    assert (res.run_dir / "last.pt").is_file()
    assert f"pid {os.getpid()} " in (run / ".lock").read_text()


def test_lock_without_flock_falls_back_to_the_recorded_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"pid {dead.pid} on {socket.gethostname()} since x\n")
    RunLock(tmp_path).acquire().release()  # a dead pid: stale
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".lock").write_text(f"pid {alive.pid} on {socket.gethostname()} since x\n")
        with pytest.raises(ImgclsError, match=f"pid {alive.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        alive.kill()
        alive.wait()


def test_latest_is_replaced_not_rewritten(tmp_path: Path) -> None:
    """Mutation caught: latest.txt rewritten in place (a reader can see it empty); a hard link to the old
    file shows it: its content must stay."""
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "b").mkdir()
    mark_latest(runs / "a", runs)
    os.link(runs / "latest.txt", tmp_path / "old.txt")
    mark_latest(runs / "b", runs)
    assert (tmp_path / "old.txt").read_text().strip() == str((runs / "a").resolve())
    assert (runs / "latest.txt").read_text().strip() == str((runs / "b").resolve())
    assert (runs / "latest").resolve() == (runs / "b").resolve()
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------------------------- failed writes
@pytest.mark.parametrize("where", ["write", "open"])
def test_failed_checkpoint_write_one_line_previous_intact(where: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while writing (ENOSPC from write) or a read-only folder (EROFS at open) during epoch 2's
    save: one line naming last.pt, exit 2, epoch 1's last.pt intact, no temporary file left.  Mutation caught:
    the RuntimeError torch.save makes of the write error passed through (a traceback), or the tmp kept."""
    data = make_folder_dataset(tmp_path / "d", classes=2, train=4, val=2)
    run = tmp_path / "run"
    real_open = open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            self.f.write(bytes(b)[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def fake_open(path, mode="r", *a, **k):
        failing = ".last.pt.tmp." in str(path) and len(_lines(run / "metrics.jsonl")) >= 1
        if failing and where == "open":
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        f = real_open(path, mode, *a, **k)
        return Full(f) if failing else f

    monkeypatch.setattr(ckmod, "open", fake_open, raising=False)
    with pytest.raises(ImgclsError) as e:
        ic.train(**_train(data, run, **{"train.epochs": 2, "train.log_steps": False}))
    msg = str(e.value)
    want = "No space left on device (ENOSPC)" if where == "write" else "Read-only file system (EROFS)"
    assert e.value.exit_code == 2 and "\n" not in msg
    assert msg.startswith(f"cannot write {run / 'last.pt'}: {want}; the previous file is intact"), msg
    monkeypatch.undo()
    assert read_checkpoint(run / "last.pt")["epoch"] == 1
    assert not list(run.glob(".*.tmp.*"))
