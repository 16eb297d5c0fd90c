"""Issue 24: `imgcls sweep` runs a grid × seeds as ordinary runs; invalid cells are skipped; a restart resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import imgcls_cli as ic
from imgcls_cli.cli.sweep_cmd import split_values
from imgcls_cli.errors import ImgclsError
from imgcls_cli.sweeps import plan_sweep

QUICK = {"model.backbone": "resnet20", "data.img_size": 16, "data.workers": 0, "train.device": "cpu",
         "train.batch_size": 16, "train.steps_per_epoch": 2, "train.epochs": 1}


def _sets(d: dict) -> list[str]:
    return [a for k, v in d.items() for a in ("--set", f"{k}={v}")]


def test_dry_run_lists_runs_and_skips_invalid_cells(tmp_path: Path):
    """reduction=8 is refused with --attn none: that cell is listed with the config's reason, the rest planned."""
    res = subprocess.run([sys.executable, "-m", "imgcls_cli", "sweep", "--grid", "model.attn=none,se",
                          "--grid", "model.reduction=16,8", "--seeds", "0,1", "--out", str(tmp_path / "s"),
                          "--dry-run", *_sets(QUICK)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "6 runs (3 cells × 2 seeds; 1 invalid cells skipped)" in res.stdout
    assert "skipped cell attn=none, reduction=8: " in res.stdout and "model.reduction is used only by" in res.stdout
    assert "new    attn-se_reduction-8_seed1" in res.stdout and "6 runs, 6 to start" in res.stdout
    assert not (tmp_path / "s").exists()  # a dry run writes nothing


def test_yaml_sweep_section_and_options_over_it(tmp_path: Path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"model": {"backbone": "resnet20"}, "sweep": {
        "grid": {"model.attn": ["none", "se"]}, "seeds": [0, 1, 2], "out": str(tmp_path / "y"), "jobs": 2,
        "launcher": {"name": "slurm", "partition": "gpu", "time": "1:30:00"}}}))
    plan = plan_sweep(base, grid={"loss.name": ["ce", "arcface"]}, seeds=[5], overrides={"launcher.qos": "low"})
    assert len(plan.runs) == 4 and {r.seed for r in plan.runs} == {5} and plan.spec.jobs == 2
    assert plan.spec.launcher.time == 90 and plan.spec.launcher.qos == "low" and plan.spec.launcher.partition == "gpu"
    assert {r.config.model.backbone for r in plan.runs} == {"resnet20"}
    for bad, needle in (({"sweep": {"grdi": {}}}, "sweep.grdi: unknown key"),
                        ({"sweep": {"grid": {"train.seed": [1]}}}, "set by the sweep"),
                        ({"sweep": {"launcher": {"time": "soon"}}}, "launcher.time")):
        base.write_text(yaml.safe_dump(bad))
        res = subprocess.run([sys.executable, "-m", "imgcls_cli", "sweep", "--config", str(base), "--dry-run"],
                             capture_output=True, text=True)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr, res.stderr


def test_grid_values_keep_bracketed_commas():
    assert split_values("none,se,[1, 2],'a,b'") == ["none", "se", "[1, 2]", "'a,b'"]


def test_restart_skips_finished_resumes_partial_and_refuses_other_configs(tmp_path: Path):
    """The run folders' own files decide: catches a plan that redoes finished runs or continues another config's."""
    grid = {"model.attn": ["none", "se"]}
    plan = plan_sweep(None, grid, [0], tmp_path / "s", overrides=QUICK)
    done, partial = plan.runs
    for r in (done, partial):
        r.dir.mkdir(parents=True)
        (r.dir / "config.yaml").write_text(r.config.to_yaml())
    (done.dir / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_top1": 50.0}) + "\n")
    (partial.dir / "last.pt").write_bytes(b"")
    again = plan_sweep(None, grid, [0], tmp_path / "s", overrides=QUICK)
    assert [r.status for r in again.runs] == ["done", "resume"]
    with pytest.raises(ImgclsError, match="train.epochs=1"):
        plan_sweep(None, grid, [0], tmp_path / "s", overrides={**QUICK, "train.epochs": 3})


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path: Path):
    """Kill -9 the sweep while its second run trains; the same command again skips the first and resumes the second."""
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "imgcls_cli", "sweep", "--seeds", "0,1", "--out", str(out),
           *_sets({**QUICK, "train.epochs": 4, "train.steps_per_epoch": 12})]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    second = out / "seed1"
    deadline = time.time() + 300
    while not (second / "metrics.jsonl").exists():  # epoch 1 checkpointed and logged
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first_metrics = (out / "seed0" / "metrics.jsonl").read_text()
    assert len(first_metrics.splitlines()) == 4
    n_before = len((second / "metrics.jsonl").read_text().splitlines())
    assert n_before < 4, "the second run finished before the kill"
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 finished (skipped), 1 to resume, 0 new" in res.stdout and "started  seed1 (resuming)" in res.stderr
    assert "started  seed0" not in res.stderr and (out / "seed0" / "metrics.jsonl").read_text() == first_metrics
    epochs = [json.loads(x)["epoch"] for x in (second / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 5))  # continued after the kept epochs, none trained twice
    assert "resuming from" in (second / "train.log").read_text()


def test_slurm_path_under_submitits_local_executor(tmp_path: Path):
    """The SLURM launcher's job array, run by submitit's local executor: each task a normal `imgcls train`."""
    pytest.importorskip("submitit")
    res = ic.sweep(None, grid={"model.attn": ["se"]}, seeds=[3], out=tmp_path / "s",
                   launcher={"name": "slurm", "cluster": "local", "time": 10, "cpus_per_task": 1}, **QUICK)
    assert not res.failed and len(res.results) == 1, res.results
    run = tmp_path / "s" / "attn-se_seed3"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 3
    assert (run / "best.pt").is_file() and list((tmp_path / "s" / "slurm").glob("*_0_result.pkl"))
    rep = ic.report_runs(tmp_path / "s")
    assert rep.runs[0]["run"] == "attn-se_seed3" and rep.runs[0]["top1"] is not None
