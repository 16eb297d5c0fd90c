"""The grouped results table (`imgcls report` over several seeds): Markdown, CSV, JSON, Rich, a plot.

One row per group (see `report_stats`): n, the seeds, mean ± std of top-1, top-5 and many /
medium / few (the shot columns where any run has them) and, beside a baseline, each group's
difference in mean top-1 with its 95 % interval, the test that gave it and `*` where the interval
excludes 0.  CSV and JSON carry every number (each metric's difference too), unrounded.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .report_stats import METRICS, Diff, Group, Stat

DIFF_METRIC = "top1"


def _metrics(groups: list[Group]) -> list[str]:
    """The metrics any run has; many/medium/few only where some run has a medium or few class (on balanced
    data every class is many-shot and the column would repeat top-1)."""
    shots = any(g.stats[m].n for g in groups for m in ("medium", "few"))
    return [m for m in METRICS if any(g.stats[m].n for g in groups) and (shots or m not in ("many", "medium", "few"))]


def _ms(s: Stat) -> str:
    if s.mean is None:
        return "-"
    return f"{s.mean:.2f}" if s.std is None else f"{s.mean:.2f} ± {s.std:.2f}"


def _seeds(g: Group) -> str:
    return " ".join("-" if s is None else str(s) for s in sorted(g.seeds, key=lambda s: (s is None, s)))


def _diff(g: Group) -> tuple[str, str]:
    if g.is_baseline:
        return "baseline", ""
    d: Diff | None = g.diffs.get(DIFF_METRIC)
    if d is None:
        return "-", ""
    if d.low is None:
        return f"{d.diff:+.2f}", "n < 2"
    return f"{d.diff:+.2f} [{d.low:+.2f}, {d.high:+.2f}]{' *' if d.excludes_zero else ''}", d.test


def rows(groups: list[Group]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the table as shown (md and Rich)."""
    ms = _metrics(groups)
    with_base = any(g.is_baseline for g in groups)
    header = ["group", "n", "seeds", *ms] + ([f"Δ{DIFF_METRIC} (95% CI)", "test"] if with_base else [])
    body = []
    for g in groups:
        cells = [g.name(), str(len(g.runs)), _seeds(g), *(_ms(g.stats[m]) for m in ms)]
        body.append(cells + (list(_diff(g)) if with_base else []))
    return header, body


def footnote(groups: list[Group]) -> str:
    base = next((g for g in groups if g.is_baseline), None)
    text = "mean ± sample std over the runs of each group (n)"
    if base is not None:
        text += (f"; Δ{DIFF_METRIC}: difference of the mean from the baseline ({base.name()}) with its 95% CI,"
                 " paired t over the seeds where both groups hold the same seeds, else Welch's t;"
                 " * the interval excludes 0")
    return text


def markdown(groups: list[Group]) -> str:
    header, body = rows(groups)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
    return "\n".join(lines) + f"\n\n{footnote(groups)}\n"


def records(groups: list[Group]) -> list[dict[str, Any]]:
    out = []
    for g in groups:
        rec: dict[str, Any] = {"group": g.name(), **{f"{k}": v for k, v in g.label.items()}, "n": len(g.runs),
                               "seeds": g.seeds, "runs": [r["run"] for r in g.runs], "baseline": g.is_baseline}
        for m in METRICS:
            s = g.stats[m]
            rec.update({f"{m}_mean": s.mean, f"{m}_std": s.std, f"{m}_n": s.n})
        for m in METRICS:
            d = g.diffs.get(m)
            if d is not None and not g.is_baseline:
                rec.update({f"{m}_diff": d.diff, f"{m}_ci_low": d.low, f"{m}_ci_high": d.high, f"{m}_test": d.test,
                            f"{m}_ci_excludes_0": d.excludes_zero})
        if g.pooled:
            rec["pooled"] = g.pooled
        out.append(rec)
    return out


def to_json(groups: list[Group]) -> str:
    return json.dumps(records(groups), indent=2) + "\n"


def to_csv(groups: list[Group]) -> str:
    recs = records(groups)
    cols: list[str] = []
    for r in recs:
        cols += [k for k in r if k not in cols and k not in ("runs", "pooled")]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in recs:
        w.writerow(["" if r.get(c) is None else " ".join(map(str, r[c])) if isinstance(r.get(c), list) else r[c]
                    for c in cols])
    return buf.getvalue()


def rich_table(groups: list[Group]):
    from rich.table import Table

    header, body = rows(groups)
    t = Table(caption=footnote(groups), caption_justify="left")
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i in (0, 2) or h == "test" else "right", no_wrap=i > 0)
    for r, g in zip(body, groups, strict=True):
        t.add_row(*r, style="bold" if g.is_baseline else None)
    return t


def plot(groups: list[Group], path: Path) -> None:
    """One panel per metric: each group's mean with ± std error bars, and each run's value as a dot."""
    from .viz.plots import _plt

    plt = _plt()
    ms = _metrics(groups)
    fig, axes = plt.subplots(1, len(ms), figsize=(max(4.0, 0.9 * len(groups) + 1.5) * len(ms) ** 0.5 * 1.6, 4.0),
                             squeeze=False)
    names = [g.name() for g in groups]
    for ax, m in zip(axes[0], ms, strict=True):
        for i, g in enumerate(groups):
            s = g.stats[m]
            if s.mean is None:
                continue
            vals = [r[m] for r in g.runs if r.get(m) is not None]
            ax.scatter([i] * len(vals), vals, s=12, color="0.55", zorder=2)
            ax.errorbar([i], [s.mean], yerr=[[s.std or 0.0], [s.std or 0.0]], fmt="o", capsize=5,
                        color="C3" if g.is_baseline else "C0", zorder=3)
        ax.set_xticks(range(len(groups)), names, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_title(f"{m} (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("mean ± std per group (dots: runs)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class Report:
    """Runs read from their directories; grouped (one row per recipe) or one row per run.

    `grouped` is True where `group_by` or `baseline` is given, or where some runs differ only in the
    seed; `per_run=True` keeps one row per run regardless.
    """

    def __init__(self, runs: list[dict[str, Any]], groups: list[Group], grouped: bool):
        self.runs, self.groups, self.grouped = runs, groups, grouped

    @property
    def baseline(self) -> Group | None:
        return next((g for g in self.groups if g.is_baseline), None)

    def text(self, fmt: str = "md") -> str:
        from .report import table

        if not self.grouped:
            return table(self.runs, fmt)
        return {"md": markdown, "csv": to_csv, "json": to_json}[fmt](self.groups)

    def rich(self):
        from rich.table import Table

        if self.grouped:
            return rich_table(self.groups)
        header, *body = [r.split(",") for r in self.text("csv").splitlines()]
        t = Table(*header)
        for r in body:
            t.add_row(*r)
        return t

    def plot(self, path: str | Path) -> Path:
        plot(self.groups, Path(path))
        return Path(path)


FORMATS = ("md", "csv", "json", "rich")


def make_report(runs: Any, group_by: str | list[str] | None = None, baseline: str | dict[str, str] | None = None,
                per_run: bool = False, aliases: dict[str, str] | None = None) -> Report:
    """Read the run directories in `runs` (folders of runs are expanded) and group them (see `report_stats`)."""
    from .errors import ImgclsError
    from .report import find_runs, read_rows
    from .report_stats import group_runs, parse_assignments, set_baseline

    paths = [runs] if isinstance(runs, (str, Path)) else list(runs)
    rows_ = [row for d in find_runs(paths) for row in read_rows(d)]
    if isinstance(group_by, str):
        group_by = [k for k in group_by.split(",") if k.strip()]
        if not group_by:
            raise ImgclsError("--group-by: give one or more config keys, e.g. --group-by model.attn,loss.name")
    if isinstance(baseline, str):
        baseline = parse_assignments(baseline, "--baseline")
    groups = group_runs(rows_, group_by, aliases)
    if baseline:
        set_baseline(groups, baseline, aliases)
    grouped = not per_run and bool(group_by or baseline or any(len(g.runs) > 1 for g in groups))
    if per_run and (group_by or baseline):
        raise ImgclsError("--per-run lists each run; --group-by and --baseline need the grouped table (leave out"
                          " --per-run)")
    return Report(rows_, groups, grouped)
