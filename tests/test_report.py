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
