"""Results tables from run directories (`imgcls report`).

Every number comes from a run's own files: `config.yaml` (what was trained) and the evaluation the
trainer wrote once at the end, `final_eval.json` (the checkpoint chosen on the selection split, evaluated on
the reported split: top-1, top-5, many/medium/few).  A run without it (an older or unfinished run) falls back
to `eval.json` (written by `imgcls eval --json RUN/eval.json`), then to the best epoch of `metrics.jsonl`,
whose numbers are on the selection split; the `split` column always says which split a row reports.
Evaluations of the run's checkpoint with another classifier (`imgcls eval RUN/best.pt --tau-norm auto
--json RUN/variant_tau-norm.json`, `--classifier ncm`) are extra rows, one per `variant_*.json`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from .errors import ImgclsError

METRICS = ("top1", "top5", "many", "medium", "few")
COLUMNS = ["run", "data", "backbone", "attention", "head", "loss", "augmentation", "method", "img", "epochs",
           "split", "top1", "top5", "many", "medium", "few"]


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
        **_reported(d, rows),
        "config": cfg,  # the resolved config: `report_stats` groups runs by it
    }
    return out


def read_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's row, then one row per `variant_*.json` evaluation beside it."""
    d = Path(run_dir)
    base = read_run(d)
    rows = [base]
    for p in sorted(d.glob("variant_*.json")):
        e = _read_json(p) or {}
        name = p.stem.removeprefix("variant_")
        rows.append({**base, "run": f"{base['run']}+{name}", "method": f"{base['method']} + {_variant_label(e, name)}",
                     "split": str(e.get("split", "?")), **{k: e.get(k) for k in METRICS},
                     "config": {**base["config"], "variant": name}})  # a group of its own
    return rows


def _variant_label(e: dict[str, Any], name: str) -> str:
    """How the variant's classifier is written: tau-norm with its tau, NCM with its features and distance."""
    if e.get("tau") is not None:
        return f"tau-norm {e['tau']:g}" + (f" (tau on {e['tau_selected_on']})" if e.get("tau_selected_on") else "")
    if e.get("classifier", "linear") != "linear":
        return e["classifier"] + (f" ({e['ncm_features']}, {e['ncm_distance']})" if "ncm_features" in e else "")
    return name


def _reported(d: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row's numbers and the split they are on: final_eval.json; else the best epoch of metrics.jsonl (the
    selection split), with what an eval.json beside it holds (its top-1 and split where it has them)."""
    final = _read_json(d / "final_eval.json")
    if final is not None:
        sel = final.get("selected_on")
        split = str(final.get("split", "?")) + (f" ({final.get('checkpoint', 'best.pt')} on {sel})" if sel else "")
        return {"split": split, **{k: final.get(k) for k in METRICS}}
    evaluated = [r for r in rows if "val_top1" in r]
    best = max(evaluated, key=lambda r: r["val_top1"]) if evaluated else None
    out = {"split": f"{best.get('val_split', 'val')} (selection split: best epoch)" if best else "-",
           "top1": best["val_top1"] if best else None, "top5": best["val_top5"] if best else None,
           "many": None, "medium": None, "few": None}
    ev = _read_json(d / "eval.json")
    if ev is not None:
        out.update({k: ev[k] for k in METRICS if ev.get(k) is not None})
        if ev.get("top1") is not None:
            out["split"] = str(ev.get("split", "?")) + " (eval.json)"
    return out


def _read_json(p: Path) -> dict[str, Any] | None:
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ImgclsError(f"report: {p} is not JSON ({err.msg}); remove it or rerun imgcls eval") from None


def _runs_in(folder: Path) -> list[Path]:
    """The run directories in a folder of runs, by name; a link (runs/latest) stands for the run it points at,
    under that run's own name, and a run listed twice (itself and through a link) once."""
    real = [p.parent for p in folder.glob("*/metrics.jsonl") if not p.parent.is_symlink()]
    linked = [p.parent.resolve() for p in folder.glob("*/metrics.jsonl") if p.parent.is_symlink()]
    return sorted(real, key=lambda p: p.name) + sorted(linked, key=lambda p: p.name)


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories among `paths`: a folder of runs is expanded; a link in it (runs/latest) stands for its run
    under the run's own name, and a run reached twice is listed once."""
    dirs: list[Path] = []
    seen: set[Path] = set()
    for r in map(Path, paths):
        if not r.is_dir():
            raise ImgclsError(f"report: {r}: no such folder" if not r.exists() else
                              f"report: {r}: not a folder (give run directories or a folder of runs)")
        found = [r] if (r / "metrics.jsonl").exists() else _runs_in(r)
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
    """One row per run (and per variant evaluation): markdown, CSV or JSON."""
    shots = any(r[c] is not None for r in runs for c in ("medium", "few"))  # else every class is many-shot
    cols = [c for c in COLUMNS if c not in ("many", "medium", "few") or (shots and any(r[c] is not None for r in runs))]
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
