"""Results tables from run directories (`imgcls report`).

Every number comes from a run's own files: `config.yaml` (what was trained) and `metrics.jsonl`
(per-epoch validation metrics); `eval.json` in the run directory, when present (written by
`imgcls eval --json RUN/eval.json`), adds many/medium/few.  The reported top-1 is the best epoch's
(the one `best.pt` holds), with its top-5.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from .errors import ImgclsError

COLUMNS = ["run", "data", "backbone", "attention", "head", "loss", "augmentation", "method", "img", "epochs",
           "top1", "top5", "many", "medium", "few"]


def _aug(cfg: dict[str, Any]) -> str:
    a, loss = cfg.get("aug", {}), cfg.get("loss", {})
    parts = []
    if loss.get("label_smoothing"):
        parts.append(f"LS {loss['label_smoothing']:g}")
    if a.get("mixup"):
        parts.append(f"mixup {a['mixup']:g}")
    if a.get("cutmix"):
        parts.append(f"cutmix {a['cutmix']:g}")
    if a.get("autoaugment"):
        parts.append(f"AA {a['autoaugment']}")
    return ", ".join(parts) or "-"


def _head(cfg: dict[str, Any]) -> str:
    """The head the model really had: ArcFace switches a linear head to the cosine one."""
    loss = cfg.get("loss", {})
    arc = loss.get("name") == "arcface" or (loss.get("name") == "center" and loss.get("center_on") == "arcface")
    return "cosine" if arc and cfg["model"]["head"] == "linear" else cfg["model"]["head"]


def read_run(run_dir: str | Path) -> dict[str, Any]:
    d = Path(run_dir)
    cfg_p, met_p = d / "config.yaml", d / "metrics.jsonl"
    if not cfg_p.is_file() or not met_p.is_file():
        raise ImgclsError(f"report: {d} is not a run directory (needs config.yaml and metrics.jsonl)")
    try:
        cfg = yaml.safe_load(cfg_p.read_text())
    except yaml.YAMLError as e:
        raise ImgclsError(f"report: {cfg_p} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or not all(isinstance(cfg.get(k), dict) for k in ("data", "model", "train", "loss")):
        raise ImgclsError(f"report: {cfg_p} is not an imgcls run config (needs the data, model, train, loss sections)")
    rows = []
    for n, line in enumerate(met_p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:  # e.g. a line cut short by a full disk
            raise ImgclsError(f"report: {met_p} line {n} is not JSON ({e.msg}); fix or remove that line") from None
    evaluated = [r for r in rows if "val_top1" in r]
    best = max(evaluated, key=lambda r: r["val_top1"]) if evaluated else None
    m, t = cfg["model"], cfg["train"]
    sampler = cfg["data"].get("sampler", "instance")
    method = t["method"] + ("" if sampler == "instance" else f" ({sampler})")
    lt, cap = cfg["data"].get("imbalance_ratio"), cfg["data"].get("max_train_per_class")
    out: dict[str, Any] = {
        "run": d.name,
        "data": Path(cfg["data"]["path"]).name + (f" LT{lt:g}" if lt else "") + (f" max{cap}/class" if cap else ""),
        "backbone": m["backbone"], "attention": m["attn"], "head": _head(cfg), "loss": cfg["loss"]["name"],
        "augmentation": _aug(cfg), "method": method, "img": cfg["data"].get("img_size"),
        "epochs": f"{len(rows)}/{t['epochs']}" if len(rows) != t["epochs"] else str(t["epochs"]),
        "top1": best["val_top1"] if best else None, "top5": best["val_top5"] if best else None,
        "many": None, "medium": None, "few": None,
        "config": cfg,  # the resolved config: `report_stats` groups runs by it
    }
    ev = d / "eval.json"
    if ev.is_file():
        e = json.loads(ev.read_text())
        for k in ("many", "medium", "few"):
            out[k] = e.get(k)
    return out


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories among `paths`: a folder of runs is expanded; runs/latest (a link to one listed anyway) is not."""
    dirs: list[Path] = []
    seen: set[Path] = set()
    for r in map(Path, paths):
        found = [r] if (r / "metrics.jsonl").exists() else sorted(p.parent for p in r.glob("*/metrics.jsonl"))
        for d in found:
            if d.resolve() not in seen:
                seen.add(d.resolve())
                dirs.append(d)
    if not dirs:
        raise ImgclsError(f"report: no run directories found in {', '.join(map(str, paths))}")
    return dirs


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def table(runs: list[dict[str, Any]], fmt: str = "md") -> str:
    cols = [c for c in COLUMNS if c not in ("many", "medium", "few") or any(r[c] is not None for r in runs)]
    if fmt == "json":
        return json.dumps([{c: r[c] for c in cols} for r in runs], indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(cols)
        for r in runs:
            w.writerow(["" if r[c] is None else r[c] for c in cols])
        return buf.getvalue()
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in runs]
    return "\n".join(lines) + "\n"
