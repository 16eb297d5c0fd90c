"""Groups of runs and what their differences mean (`imgcls report`, grouped).

A group is the runs whose resolved configs agree on every key except the seed and where the run was
written (`NOT_RECIPE`): one recipe trained with several seeds.  `group_by=KEYS` instead groups by
those keys' values alone (pooling whatever else differs; `Group.pooled` names it).  Per metric a
group gets the mean, the sample standard deviation (ddof = 1) and n.

Against a baseline group, the difference of the means gets a 95 % confidence interval from
Student's t (two-sided, t = the 0.975 quantile):

- paired, where both groups hold the same seeds once each: d_s = x_s - b_s over the seeds s,
  mean(d) ± t_{n-1} · sd(d) / sqrt(n)                       (= scipy.stats.ttest_rel's interval);
- otherwise Welch:  mean(x) - mean(b) ± t_ν · sqrt(s_x²/n_x + s_b²/n_b), with the
  Welch–Satterthwaite ν = (s_x²/n_x + s_b²/n_b)² / ((s_x²/n_x)²/(n_x-1) + (s_b²/n_b)²/(n_b-1))
                                                             (= scipy.stats.ttest_ind(equal_var=False)).

With fewer than two pairs (or two runs per side) there is a difference but no interval.  An
interval "excludes 0" when both ends lie on the same side of it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ImgclsError

METRICS = ("top1", "top5", "many", "medium", "few")
# where and how a run was written, not what was trained: never splits a group.  train.init_from: a stage-2
# run's stage-1 checkpoint, a path that differs with the seed (--group-by separates stage-1 recipes)
NOT_RECIPE = ("train.out", "train.name", "train.runs_dir", "train.resume", "train.progress", "train.init_from",
              "data.workers")
SEED = "train.seed"


@dataclass(frozen=True)
class Stat:
    mean: float | None
    std: float | None  # sample std (ddof = 1); None with fewer than two values
    n: int


@dataclass(frozen=True)
class Diff:
    diff: float
    low: float | None
    high: float | None
    test: str | None  # "paired", "welch", or None (too few runs for an interval)
    n: int  # pairs (paired) or runs on this side (welch)

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


@dataclass
class Group:
    label: dict[str, Any]  # the grouping keys that tell the groups apart -> this group's values
    runs: list[dict[str, Any]]
    pooled: list[str] = field(default_factory=list)  # keys (besides the seed) that differ inside the group
    stats: dict[str, Stat] = field(default_factory=dict)
    diffs: dict[str, Diff] = field(default_factory=dict)
    is_baseline: bool = False

    @property
    def seeds(self) -> list[int]:
        return [r["_flat"].get(SEED) for r in self.runs]

    def name(self) -> str:
        return ", ".join(f"{short_key(k, self.label)}={_show(v)}" for k, v in self.label.items()) or "all runs"


def _show(v: Any) -> str:
    return "none" if v is None else str(v)


def short_key(key: str, others: Any = ()) -> str:
    """model.attn -> attn, loss.name -> loss; the dotted key where that would be ambiguous among `others`."""
    def short(k: str) -> str:
        sec, _, last = k.rpartition(".")
        return (sec.rpartition(".")[2] if last == "name" and sec else last) or k

    s = short(key)
    return key if sum(short(k) == s for k in others) > 1 else s


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def _frozen(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


# ---- statistics -------------------------------------------------------------------------------
def _t975(df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def summarize(values: list[float]) -> Stat:
    n = len(values)
    if n == 0:
        return Stat(None, None, 0)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n)


def paired_ci(x: list[float], b: list[float]) -> Diff:
    """x[i] and b[i] share a seed."""
    d = [xi - bi for xi, bi in zip(x, b, strict=True)]
    s = summarize(d)
    if s.n < 2:
        return Diff(s.mean, None, None, None, s.n)
    half = _t975(s.n - 1) * s.std / math.sqrt(s.n)
    return Diff(s.mean, s.mean - half, s.mean + half, "paired", s.n)


def welch_ci(x: list[float], b: list[float]) -> Diff:
    sx, sb = summarize(x), summarize(b)
    diff = sx.mean - sb.mean
    if sx.n < 2 or sb.n < 2:
        return Diff(diff, None, None, None, sx.n)
    vx, vb = sx.std ** 2 / sx.n, sb.std ** 2 / sb.n
    se = math.sqrt(vx + vb)
    if se == 0:  # no spread on either side: the difference is exact
        return Diff(diff, diff, diff, "welch", sx.n)
    nu = (vx + vb) ** 2 / (vx ** 2 / (sx.n - 1) + vb ** 2 / (sb.n - 1))
    half = _t975(nu) * se
    return Diff(diff, diff - half, diff + half, "welch", sx.n)


def compare(group: Group, base: Group, metric: str) -> Diff | None:
    """The group's difference from the baseline in `metric`: paired by seed where the seeds match, else Welch."""
    xs = {r["_flat"].get(SEED): r[metric] for r in group.runs if r.get(metric) is not None}
    bs = {r["_flat"].get(SEED): r[metric] for r in base.runs if r.get(metric) is not None}
    x = [r[metric] for r in group.runs if r.get(metric) is not None]
    b = [r[metric] for r in base.runs if r.get(metric) is not None]
    if not x or not b:
        return None
    if len(xs) == len(x) and len(bs) == len(b) and set(xs) == set(bs):  # each seed once on both sides
        seeds = sorted(xs, key=_frozen)
        return paired_ci([xs[s] for s in seeds], [bs[s] for s in seeds])
    return welch_ci(x, b)


# ---- grouping --------------------------------------------------------------------------------
def resolve_key(key: str, known: list[str], option: str, aliases: dict[str, str] | None = None) -> str:
    """A dotted config key, a CLI option name (`aliases`: attn -> model.attn) or a key's unique last part."""
    key = key.strip()
    if key in known:
        return key
    if aliases and key.replace("-", "_") in aliases and aliases[key.replace("-", "_")] in known:
        return aliases[key.replace("-", "_")]
    hits = [k for k in known if k.endswith("." + key)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ImgclsError(f"{option} {key}: ambiguous, it could be {', '.join(hits)}; give the dotted key")
    import difflib

    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else " (a dotted config key, e.g. model.attn)"
    raise ImgclsError(f"{option} {key}: not a key of these runs' configs{hint}")


def group_runs(rows: list[dict[str, Any]], group_by: list[str] | None = None,
               aliases: dict[str, str] | None = None) -> list[Group]:
    """Rows as `report.read_run` returns them (with their `config`), grouped in order of first appearance."""
    for r in rows:
        r["_flat"] = flatten(r["config"])
    known = sorted({k for r in rows for k in r["_flat"]})
    recipe = [k for k in known if k not in NOT_RECIPE and k != SEED]
    keys = [resolve_key(k, known, "--group-by", aliases) for k in group_by] if group_by else recipe
    buckets: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        buckets.setdefault(_frozen([r["_flat"].get(k) for k in keys]), []).append(r)
    members = list(buckets.values())
    # the label: the grouping keys whose values tell the groups apart (all of --group-by's keys)
    shown = keys if group_by else [k for k in keys if len({_frozen(m[0]["_flat"].get(k)) for m in members}) > 1]
    groups = []
    for runs in members:
        pooled = [k for k in recipe if k not in keys and len({_frozen(r["_flat"].get(k)) for r in runs}) > 1]
        g = Group({k: runs[0]["_flat"].get(k) for k in shown}, runs, pooled)
        g.stats = {m: summarize([r[m] for r in runs if r.get(m) is not None]) for m in METRICS}
        groups.append(g)
    return groups


def parse_assignments(text: str, option: str) -> dict[str, str]:
    """`attn=none,loss=ce` -> {"attn": "none", "loss": "ce"}."""
    out = {}
    for part in (p.strip() for p in text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ImgclsError(f"{option} {text!r}: expected KEY=VALUE[,KEY=VALUE...], e.g. attn=none,loss=ce")
        out[key.strip()] = value.strip()
    return out


def _matches(value: Any, text: str) -> bool:
    import yaml

    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = text
    return value == parsed or _show(value) == text or (isinstance(value, tuple) and list(value) == parsed)


def set_baseline(groups: list[Group], spec: dict[str, str], aliases: dict[str, str] | None = None) -> Group:
    """Mark the one group matching `spec` as the baseline and give every group its differences from it."""
    known = sorted({k for g in groups for r in g.runs for k in r["_flat"]})
    want = {resolve_key(k, known, "--baseline", aliases): v for k, v in spec.items()}
    hits = [g for g in groups if all(_matches(g.runs[0]["_flat"].get(k), v) for k, v in want.items())]
    text = ",".join(f"{k}={v}" for k, v in spec.items())
    if len(hits) != 1:
        names = "; ".join(g.name() for g in groups)
        what = "no group" if not hits else f"{len(hits)} groups"
        raise ImgclsError(f"--baseline {text}: {what} of these runs match (groups: {names}); name the keys"
                          f" that pick exactly one")
    base = hits[0]
    base.is_baseline = True
    for g in groups:
        g.diffs = {m: d for m in METRICS if (d := compare(g, base, m)) is not None}
    return base
