"""CIFAR-10-LT (R = 100) table: CE, CE + mixup, cRT, LWS, tau-norm, NCM, BBN with ResNet-32.

Runs the examples/cifar10_lt_*.yaml recipes on ../shared/data/cifar10_jpg with the epoch counts given
here (the recipes' 200 epochs need a GPU), evaluates each on the balanced test split and prints a
markdown table of many / medium / few / all top-1.  Not a pytest module.

    python benchmarks/longtail_table.py --quick              # 2 + 1 epochs, CPU smoke run
    python benchmarks/longtail_table.py --epochs 200 --stage2-epochs 10 --device cuda
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "cifar10_jpg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 stage-1 epochs, 1 stage-2 epoch")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--stage2-epochs", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/longtail_table")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is absent (../shared/data beside the checkout)")
    e1, e2 = (2, 1) if args.quick else (args.epochs, args.stage2_epochs)

    import imgcls_cli as ic
    from imgcls_cli.config import load_config
    from imgcls_cli.engine.eval_api import evaluate_checkpoint
    from imgcls_cli.methods.decoupling import eval_variant

    out = Path(args.out)

    def run(name: str, epochs: int, **extra: Any) -> Path:
        cfg = load_config(REPO / "examples" / f"cifar10_lt_{name}.yaml")
        ov: dict[str, Any] = {"data.path": str(DATA), "train.epochs": epochs, "train.out": str(out / name),
                              "train.device": args.device, "data.workers": args.workers, "train.progress": False,
                              "train.eval_every": epochs, **extra}
        # scale the warm-up (and milestones) to the shortened run: a warm-up as long as the run is refused
        ov["optim.warmup_epochs"] = cfg.optim.warmup_epochs * epochs / cfg.train.epochs
        if cfg.optim.schedule == "multistep":
            ov["optim.milestones"] = [max(1, round(m * epochs / cfg.train.epochs)) for m in cfg.optim.milestones]
        t = time.perf_counter()
        res = ic.train(cfg.replace(**ov))
        times[name] = time.perf_counter() - t
        return res.run_dir / "last.pt"

    times: dict[str, float] = {}
    rows: list[tuple[str, dict[str, Any]]] = []
    ce = run("ce", e1)
    rows.append((f"CE ({e1} ep)", evaluate_checkpoint(ce, device=args.device).summary))
    for label, tau, clf in (("tau-norm (CE + tau auto)", "auto", "default"), ("NCM (CE features)", None, "ncm")):
        transform, extra = eval_variant(ce, tau, clf, device=args.device)
        s = evaluate_checkpoint(ce, device=args.device, logits_transform=transform).summary
        rows.append((label + (f", tau={extra['tau']:.1f}" if "tau" in extra else ""), s))
    for name in ("crt", "lws"):
        ck = run(name, e2, **{"train.init_from": str(ce)})
        rows.append((f"{name.upper()} (CE + {e2} ep)", evaluate_checkpoint(ck, device=args.device).summary))
    for name in ("ce_mixup", "bbn"):
        ck = run(name, e1)
        label = f"{name.replace('_', ' + ').upper()} ({e1} ep)"
        rows.append((label, evaluate_checkpoint(ck, device=args.device).summary))

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    print("\n| method | many | medium | few | all top-1 | mean class acc |")
    print("|---|---|---|---|---|---|")
    for label, s in rows:
        print(f"| {label} | {pct(s['many'])} | {pct(s['medium'])} | {pct(s['few'])} | {pct(s['top1'])}"
              f" | {pct(s['mean_class_acc'])} |")
    print("\ntraining time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
