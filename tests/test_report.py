"""Issue 13: `imgcls report` shows exactly the metrics that the runs recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imgcls_cli as ic

from .conftest import quick_overrides


def _best(run: Path) -> dict:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return max(rows, key=lambda r: r["val_top1"])


def test_report_shows_two_real_runs_exactly(tiny_folder, tmp_path):
    a = ic.train(**quick_overrides(**{"data.path": str(tiny_folder), "data.img_size": 32, "train.epochs": 2,
                                      "train.out": str(tmp_path / "runs" / "a")}))
    b = ic.train(**quick_overrides(**{"data.path": str(tiny_folder), "data.img_size": 32, "train.epochs": 1,
                                      "loss.label_smoothing": 0.1, "train.out": str(tmp_path / "runs" / "b")}))
    csv_out = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(a.run_dir), str(b.run_dir),
                              "--format", "csv"], capture_output=True, text=True, check=True).stdout
    header, *rows = [line.split(",") for line in csv_out.strip().splitlines()]
    got = {r[header.index("run")]: r for r in rows}
    for run in (Path(a.run_dir), Path(b.run_dir)):
        best = _best(run)
        row = got[run.name]
        assert float(row[header.index("top1")]) == best["val_top1"]
        assert float(row[header.index("top5")]) == best["val_top5"]
    assert got["b"][header.index("augmentation")] == "LS 0.1"
    assert got["a"][header.index("epochs")] == "2"
    md = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(tmp_path / "runs")],
                        capture_output=True, text=True, check=True).stdout
    assert md.startswith("| run |") and f"{_best(Path(a.run_dir))['val_top1']:.2f}" in md


def test_report_rejects_non_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no run directories" in proc.stderr


def _fake_run(d: Path, top1: float) -> Path:
    """A run directory as the trainer leaves it, reduced to what `report` reads."""
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("data: {path: digits, img_size: 16}\nmodel: {backbone: resnet20, attn: none, "
                                   "head: linear}\ntrain: {method: standard, epochs: 1}\nloss: {name: ce}\n")
    (d / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_top1": top1, "val_top5": 90.0}) + "\n")
    return d


def test_report_lists_runs_latest_once(tmp_path):
    """`imgcls report runs/` listed the newest run twice: as itself and as the runs/latest link."""
    _fake_run(tmp_path / "runs" / "a", 10.0)
    _fake_run(tmp_path / "runs" / "b", 20.0)
    (tmp_path / "runs" / "latest").symlink_to("b")
    out = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(tmp_path / "runs"), "--format", "csv",
                          "--per-run"],
                         capture_output=True, text=True, check=True).stdout
    assert [r.split(",")[0] for r in out.strip().splitlines()[1:]] == ["a", "b"]


def test_report_bad_files_are_one_line(tmp_path):
    """A cut-short metrics.jsonl line, a broken config.yaml or an unwritable --out gave a traceback."""
    cut = _fake_run(tmp_path / "cut", 10.0)
    with open(cut / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "val_to')
    broken = _fake_run(tmp_path / "broken", 10.0)
    (broken / "config.yaml").write_text("data: [\n")
    ok = _fake_run(tmp_path / "ok", 10.0)
    for args, needle in (([cut], "metrics.jsonl line 2 is not JSON"), ([broken], "config.yaml is not valid YAML"),
                         ([ok, "--out", tmp_path / "no" / "t.md"], "--out")):
        res = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", *map(str, args)], capture_output=True,
                             text=True)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr, res.stderr


def test_report_names_a_capped_training_set(tmp_path):
    """data.max_train_per_class trains on fewer images; the table showed such a run as the full data set."""
    run = _fake_run(tmp_path / "capped", 10.0)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace(
        "data: {path: digits, img_size: 16}", "data: {path: digits, img_size: 16, max_train_per_class: 20}"))
    out = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(run), "--format", "csv"],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[1].split(",")[1] == "digits max20/class"
