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
import statistics
from pathlib import Path
from typing import Any

import yaml

from .errors import ImgclsError

METRICS = ("top1", "top5", "many", "medium", "few")
COLUMNS = ["run", "data", "backbone", "attention", "head", "loss", "augmentation", "method", "img", "epochs",
           "seeds", "split", "top1", "top5", "many", "medium", "few"]


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
        "seed": t.get("seed"), "_key": _seed_free(cfg), "_variant": None,
    }
    return out


# fields that say where a run went or how it was watched, not what was trained: ignored when grouping by seed
# (train.init_from names the stage-1 run, which differs by seed too)
NOT_THE_RECIPE = {"train": ("seed", "out", "name", "resume", "init_from", "progress", "tensorboard"),
                  "data": ("workers",)}


def _seed_free(cfg: dict[str, Any]) -> str:
    c = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    for section, keys in NOT_THE_RECIPE.items():
        for k in keys:
            c.get(section, {}).pop(k, None)
    return json.dumps(c, sort_keys=True, default=str)


def read_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's row, then one row per `variant_*.json` evaluation beside it."""
    d = Path(run_dir)
    base = read_run(d)
    rows = [base]
    for p in sorted(d.glob("variant_*.json")):
        try:
            e = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise ImgclsError(f"report: {p} is not JSON ({err.msg}); remove it or rerun imgcls eval") from None
        name = p.stem.removeprefix("variant_")
        rows.append({**base, "run": f"{base['run']}+{name}", "_variant": name, "_base_method": base["method"],
                     "_label": _variant_label(e, name), "method": f"{base['method']} + " + _variant_label(e, name)(
                         _variant_detail(e)), "_detail": _variant_detail(e), "split": str(e.get("split", "?")),
                     **{k: e.get(k) for k in METRICS}})
    return rows


def _variant_detail(e: dict[str, Any]) -> str:
    return f"{e['tau']:g}" if e.get("tau") is not None else ""


def _variant_label(e: dict[str, Any], name: str) -> Any:
    """How the variant's classifier is written, given its per-run detail (the tau chosen)."""
    if e.get("tau") is not None:
        on = f" (tau on {e['tau_selected_on']})" if e.get("tau_selected_on") else ""
        return lambda detail: f"tau-norm {detail}{on}"
    if e.get("classifier", "linear") != "linear":
        how = f" ({e['ncm_features']}, {e['ncm_distance']})" if "ncm_features" in e else ""
        return lambda detail: e["classifier"] + how
    return lambda detail: name


def group_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per recipe: finished runs whose configs differ only in the seed (and where they went,
    NOT_THE_RECIPE), reported on the same split, are merged, each metric as (mean, sample std, n); a recipe
    run once stays a plain row."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        # an unfinished run, or one reported on another split, is not averaged with the others
        groups.setdefault((r["_key"], r["_variant"], r["epochs"], r["split"]), []).append(r)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append({**members[0], "seeds": str(members[0]["seed"])})
            continue
        first = members[0]
        row = dict(first)
        row["run"] = f"{first['run']} .. {members[-1]['run']}"
        row["seeds"] = " ".join(str(m["seed"]) for m in members)
        if first["_variant"] is not None:
            row["method"] = f"{first['_base_method']} + " + first["_label"]("/".join(m["_detail"] for m in members))
        for k in METRICS:
            vals = [m[k] for m in members]
            row[k] = None if any(v is None for v in vals) else (statistics.mean(vals), statistics.stdev(vals),
                                                                  len(vals))
        out.append(row)
    return out


def _reported(d: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row's numbers and the split they are on: final_eval.json, else eval.json, else the best epoch."""
    for name in ("final_eval.json", "eval.json"):
        p = d / name
        if p.is_file():
            try:
                e = json.loads(p.read_text())
            except json.JSONDecodeError as err:
                raise ImgclsError(f"report: {p} is not JSON ({err.msg}); remove it or rerun imgcls eval") from None
            sel = e.get("selected_on")
            split = str(e.get("split", "?")) + (f" ({e.get('checkpoint', 'best.pt')} on {sel})" if sel else "")
            return {"split": split, **{k: e.get(k) for k in METRICS}}
    evaluated = [r for r in rows if "val_top1" in r]
    best = max(evaluated, key=lambda r: r["val_top1"]) if evaluated else None
    split = f"{best.get('val_split', 'val')} (selection split: best epoch)" if best else "-"
    return {"split": split, "top1": best["val_top1"] if best else None, "top5": best["val_top5"] if best else None,
            "many": None, "medium": None, "few": None}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, tuple):  # grouped over seeds
        return f"{v[0]:.2f} ± {v[1]:.2f}"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def table(runs: list[dict[str, Any]], fmt: str = "md") -> str:
    """Markdown or CSV; grouped metrics are "mean ± std" in markdown, a value and a `<metric>_std` column in CSV."""
    cols = [c for c in COLUMNS if (c not in ("many", "medium", "few") or any(r[c] is not None for r in runs))
            and (c != "seeds" or any("seeds" in r for r in runs))]
    if fmt == "csv":
        grouped = {k for k in METRICS if any(isinstance(r.get(k), tuple) for r in runs)}
        header = [h for c in cols for h in ([c, f"{c}_std"] if c in grouped else [c])]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        for r in runs:
            cells = []
            for c in cols:
                v = r.get(c)
                if c in grouped:
                    cells += ["", ""] if v is None else ([v[0], v[1]] if isinstance(v, tuple) else [v, ""])
                else:
                    cells.append("" if v is None else v)
            w.writerow(cells)
        return buf.getvalue()
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in runs]
    return "\n".join(lines) + "\n"
