"""Issue 24: `imgcls report` groups runs over seeds; its intervals are scipy.stats' on the same numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import imgcls_cli as ic
from imgcls_cli.report_stats import paired_ci, summarize, welch_ci

NONE = [90.0, 91.0, 92.5, 90.4]
SE = [91.5, 93.0, 93.2, 92.9]
CBAM = [92.0, 96.5, 91.0, 94.8, 93.1]  # other seeds, more of them, larger spread: Welch


def _fake(d: Path, attn: str, seed: int, top1: float, lr: float = 0.1, shots: bool = False) -> Path:
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(
        f"data: {{path: digits, img_size: 16}}\nmodel: {{backbone: resnet20, attn: {attn}, head: linear}}\n"
        f"optim: {{lr: {lr}}}\ntrain: {{method: standard, epochs: 1, seed: {seed}, out: {d}}}\nloss: {{name: ce}}\n")
    (d / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_top1": top1, "val_top5": top1 + 5}) + "\n")
    if shots:
        (d / "eval.json").write_text(json.dumps({"many": top1 + 1, "medium": top1 - 1, "few": top1 - 10}))
    return d


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for attn, vals, seeds in (("none", NONE, range(4)), ("se", SE, range(4)), ("cbam", CBAM, range(10, 15))):
        for s, v in zip(seeds, vals, strict=True):
            _fake(root / f"{attn}-{s}", attn, s, v, shots=True)
    return root


def test_std_and_intervals_are_scipys():
    """Catches: std with ddof=0; z=1.96 for t; pooled variance or df n1+n2-2 instead of Welch's; unpaired for paired."""
    assert summarize(NONE).std == pytest.approx(np.std(NONE, ddof=1))
    p = paired_ci(SE, NONE)
    ci = stats.ttest_rel(SE, NONE).confidence_interval(0.95)
    assert (p.low, p.high, p.test) == (pytest.approx(ci.low), pytest.approx(ci.high), "paired")
    w = welch_ci(CBAM, NONE)
    ci = stats.ttest_ind(CBAM, NONE, equal_var=False).confidence_interval(0.95)
    assert (w.low, w.high, w.test) == (pytest.approx(ci.low), pytest.approx(ci.high), "welch")
    assert w.diff == pytest.approx(np.mean(CBAM) - np.mean(NONE))


def test_grouped_report_pairs_by_seed_and_matches_scipy(runs: Path):
    """Runs differing only in the seed form a group; matching seeds are paired, others Welch (catches swapping them)."""
    rep = ic.report_runs(runs, baseline="attn=none")
    by = {g.label["model.attn"]: g for g in rep.groups}
    assert rep.grouped and sorted(by) == ["cbam", "none", "se"] and len(by["se"].runs) == 4
    assert by["none"].is_baseline and by["se"].stats["top1"].mean == pytest.approx(np.mean(SE))
    se, cbam = by["se"].diffs["top1"], by["cbam"].diffs["top1"]
    ci_rel = stats.ttest_rel(SE, NONE).confidence_interval()
    ci_w = stats.ttest_ind(CBAM, NONE, equal_var=False).confidence_interval()
    assert se.test == "paired" and (se.low, se.high) == (pytest.approx(ci_rel.low), pytest.approx(ci_rel.high))
    assert cbam.test == "welch" and (cbam.low, cbam.high) == (pytest.approx(ci_w.low), pytest.approx(ci_w.high))
    assert se.excludes_zero == (ci_rel.low > 0)
    few = by["se"].diffs["few"]  # every metric is compared, the shot columns too
    assert few.diff == pytest.approx(np.mean(SE) - np.mean(NONE))


def test_report_cli_formats(runs: Path, tmp_path: Path):
    """md has mean ± std of every shot column and the Δ column with its mark; json/csv carry scipy's interval."""
    cmd = [sys.executable, "-m", "imgcls_cli", "report", str(runs), "--baseline", "attn=none"]
    md = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    header = md.splitlines()[0]
    for col in ("top1", "top5", "many", "medium", "few", "Δtop1 (95% CI)", "n", "seeds"):
        assert f" {col} |" in header, header
    ci = stats.ttest_rel(SE, NONE).confidence_interval()
    se_row = next(ln for ln in md.splitlines() if ln.startswith("| attn=se |"))
    mark = " *" if ci.low > 0 or ci.high < 0 else ""
    assert f"{np.mean(SE) - np.mean(NONE):+.2f} [{ci.low:+.2f}, {ci.high:+.2f}]{mark} | paired |" in se_row
    assert f"{np.mean(SE):.2f} ± {np.std(SE, ddof=1):.2f}" in se_row
    js = json.loads(subprocess.run(cmd + ["--format", "json"], capture_output=True, text=True, check=True).stdout)
    se = next(g for g in js if g["model.attn"] == "se")
    assert se["top1_ci_low"] == pytest.approx(ci.low) and se["seeds"] == [0, 1, 2, 3] and se["n"] == 4
    csv_out = subprocess.run(cmd + ["--format", "csv", "--plot", str(tmp_path / "g.png")], capture_output=True,
                             text=True, check=True).stdout
    head, *rows = [r.split(",") for r in csv_out.strip().splitlines()]
    se_csv = next(r for r in rows if r[0] == "attn=se")
    assert len(rows) == 3 and float(se_csv[head.index("top1_ci_high")]) == pytest.approx(ci.high)
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_group_by_pools_and_says_so(runs: Path):
    """--group-by groups by those keys alone; runs differing in another key are pooled, and the note names it."""
    _fake(runs / "se-lr", "se", 7, 95.0, lr=0.05, shots=True)
    plain = ic.report_runs(runs)
    assert len(plain.groups) == 4  # lr 0.05 is another recipe
    proc = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(runs), "--group-by", "attn",
                           "--baseline", "attn=none"], capture_output=True, text=True, check=True)
    assert "| attn=se | 5 |" in proc.stdout and "pools runs that differ in optim.lr" in proc.stderr


@pytest.mark.parametrize("args,needle", [
    (["--baseline", "attn=nope"], "--baseline attn=nope: no group"),
    (["--baseline", "attn"], "expected KEY=VALUE"),
    (["--group-by", "model.atn"], "--group-by model.atn: not a key"),
    (["--format", "xml"], "valid formats are md, csv, json, rich"),
])
def test_report_bad_grouping_is_one_line(runs: Path, args: list[str], needle: str):
    res = subprocess.run([sys.executable, "-m", "imgcls_cli", "report", str(runs), *args], capture_output=True,
                         text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr, res.stderr


def test_single_runs_keep_the_per_run_table(tmp_path: Path):
    """Where every recipe ran once, the table is the per-run one (top-1 of the run itself)."""
    _fake(tmp_path / "r" / "a", "none", 0, 10.0)
    _fake(tmp_path / "r" / "b", "se", 0, 20.0)
    rep = ic.report_runs(tmp_path / "r")
    assert not rep.grouped and rep.text("md").startswith("| run |")
