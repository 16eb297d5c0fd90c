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


def _final(run: Path) -> dict:
    return json.loads((run / "final_eval.json").read_text())


def test_report_shows_two_real_runs_exactly(tiny_folder, tmp_path):
    """The row is the run's final evaluation (best.pt on the reported split), not a selection-split epoch."""
    a = ic.train(**quick_overrides(**{"data.path": str(tiny_folder), "data.img_size": 32, "train.epochs": 2,
                                      "data.select_split": "auto", "train.out": str(tmp_path / "runs" / "a")}))
    b = ic.train(**quick_overrides(**{"data.path": str(tiny_folder), "data.img_size": 32, "train.epochs": 1,
                                      "loss.label_smoothing": 0.1, "train.out": str(tmp_path / "runs" / "b")}))
    csv_out = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(a.run_dir), str(b.run_dir),
                              "--format", "csv"], capture_output=True, text=True, check=True).stdout
    header, *rows = [line.split(",") for line in csv_out.strip().splitlines()]
    got = {r[header.index("run")]: r for r in rows}
    for run in (Path(a.run_dir), Path(b.run_dir)):
        final, row = _final(run), got[run.name]
        assert float(row[header.index("top1")]) == final["top1"]
        assert float(row[header.index("top5")]) == final["top5"]
    assert got["a"][header.index("split")] == "val (best.pt on carve)"  # tiny_folder: train/ + val/, val reported
    assert got["b"][header.index("split")] == "val"  # no selection split: last.pt
    assert got["b"][header.index("augmentation")] == "LS 0.1"
    assert got["a"][header.index("epochs")] == "2"
    md = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(tmp_path / "runs")],
                        capture_output=True, text=True, check=True).stdout
    assert md.startswith("| run |") and f"{_final(Path(a.run_dir))['top1']:.2f}" in md


def test_report_without_final_eval_says_it_shows_the_selection_split(tmp_path):
    run = _fake_run(tmp_path / "old", 42.0)
    out = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(run), "--format", "csv"],
                         capture_output=True, text=True, check=True).stdout
    header, row = [line.split(",") for line in out.strip().splitlines()]
    assert row[header.index("top1")] == "42.0" and row[header.index("split")] == "val (selection split: best epoch)"


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


def test_report_adds_a_row_per_variant_evaluation(tmp_path):
    """`imgcls eval RUN/best.pt --tau-norm auto --json RUN/variant_tau-norm.json` is a row of its own."""
    run = _fake_run(tmp_path / "ce", 40.0)
    (run / "variant_tau-norm.json").write_text(json.dumps({"top1": 47.5, "top5": 90.0, "many": 58.1, "medium": 45.9,
                                                           "few": 23.5, "tau": 1.9, "tau_selected_on": "carve",
                                                           "split": "test"}))
    out = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(run), "--format", "csv"],
                         capture_output=True, text=True, check=True).stdout
    header, base, var = [line.split(",") for line in out.strip().splitlines()]
    assert base[header.index("top1")] == "40.0" and var[header.index("run")] == "ce+tau-norm"
    assert var[header.index("method")] == "standard + tau-norm 1.9 (tau on carve)"
    assert [var[header.index(k)] for k in ("split", "top1", "few")] == ["test", "47.5", "23.5"]


def _seeded_run(d: Path, seed: int, top1: float, lr: float = 0.1) -> Path:
    run = _fake_run(d, 0.0)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace(
        "train: {method: standard, epochs: 1}", f"train: {{method: standard, epochs: 1, seed: {seed}, out: {d}}}")
        + f"optim: {{lr: {lr}}}\n")
    (run / "final_eval.json").write_text(json.dumps({"top1": top1, "top5": 99.0, "split": "test"}))
    return run


def test_grouped_report_keeps_variant_evaluations_apart_from_their_runs(tmp_path):
    """Seeds of one recipe are one group; each run's tau-norm evaluation is a group of its own, not pooled in."""
    for seed, top1 in ((0, 40.0), (1, 42.0), (2, 47.0)):
        run = _seeded_run(tmp_path / "runs" / f"ce-s{seed}", seed, top1)
        (run / "variant_tau-norm.json").write_text(json.dumps({"top1": top1 + 10, "tau": 1.0, "split": "test"}))
    _seeded_run(tmp_path / "runs" / "other-lr", 0, 10.0, lr=0.05)  # another recipe: never averaged in
    out = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(tmp_path / "runs"), "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    groups = json.loads(out)
    assert sorted((g["n"], round(g["top1_mean"], 2)) for g in groups) == [(1, 10.0), (3, 43.0), (3, 53.0)], groups
    assert {g.get("variant") for g in groups if g["n"] == 3} == {None, "tau-norm"}
