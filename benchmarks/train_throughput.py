"""Training-epoch wall time: `imgcls train` vs an idiomatic torchvision loop, same run.

Both sides train the same model on the same JPEG files with the same batch size, optimizer,
augmentation (random-resized-crop + flip), worker count and seed, for one epoch, and the script
prints the ratio imgcls / reference (lower is better; issue goal <= 0.8 on the 2-core CPU), of the
epoch wall time and of the CPU seconds the epoch used (process + loader workers), which other load on a
shared machine disturbs less.

The reference is what a user would write: torchvision ImageFolder + PIL transforms (ToTensor +
Normalize in the workers), DataLoader(shuffle=True), a float32 loop with loss.item() per step.

    python benchmarks/train_throughput.py --quick            # CPU, 3 alternating rounds, ~6 minutes
    python benchmarks/train_throughput.py --data DIR --backbone resnet50 --img-size 224 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torchvision import transforms as T

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imgcls_cli.engine.progress import cpu_seconds  # noqa: E402


def reference_epoch(args: argparse.Namespace, dev: torch.device) -> dict:
    torch.manual_seed(0)
    tf = T.Compose([T.RandomResizedCrop(args.img_size, scale=(0.35, 1.0)), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(str(Path(args.data) / "train"), tf)
    if args.limit:
        ds = torch.utils.data.Subset(ds, list(range(0, len(ds), max(1, len(ds) // args.limit)))[: args.limit])
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                     pin_memory=dev.type == "cuda", drop_last=True)
    import imgcls_cli as ic  # only for the same architecture; the loop below is plain torch

    model = ic.build_model(args.backbone, num_classes=len(ds.dataset.classes if args.limit else ds.classes)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    crit = torch.nn.CrossEntropyLoss()
    model.train()
    t0, c0, n = time.perf_counter(), cpu_seconds(), 0
    for x, y in dl:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        n += x.shape[0]
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    del dl  # its workers have exited at the end of the epoch; their CPU time is counted once reaped
    return {"side": "torchvision loop", "epoch_s": dt, "cpu_s": cpu_seconds() - c0, "img_s": n / dt, "images": n}


def imgcls_epoch(args: argparse.Namespace, dev: torch.device, extra: dict) -> dict:
    import imgcls_cli as ic

    tmp = tempfile.TemporaryDirectory()  # checkpoints of every round would otherwise pile up in /tmp
    out = Path(tmp.name) / "run"
    ov = {"data.path": args.data, "data.img_size": args.img_size, "data.workers": args.workers,
          "aug.crop_scale": [0.35, 1.0], "aug.hflip": 0.5, "model.backbone": args.backbone, "train.epochs": 1,
          "train.batch_size": args.batch_size, "optim.lr": 0.05, "train.device": str(dev), "train.out": str(out),
          "train.progress": False, "data.val_split": "__none__"}
    if args.limit:
        ov["data.max_train_per_class"] = max(1, args.limit // 10)
    ov.update(extra)
    ov.pop("data.val_split")
    t0 = time.perf_counter()
    ic.train(**ov)
    total = time.perf_counter() - t0
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    tmp.cleanup()
    n = rec["img_per_s"] * rec["time_s"]
    return {"side": "imgcls " + ",".join(f"{k}={v}" for k, v in extra.items()), "epoch_s": rec["time_s"],
            "cpu_s": rec.get("cpu_s", float("nan")),
            "img_s": rec["img_per_s"], "images": round(n), "total_s_incl_eval": total}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10_jpg"))
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="use about this many training images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads for both sides (0: torch's default);"
                   " 1 avoids OpenMP barrier stalls when other jobs share the cores")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None, help="alternating rounds (reference, imgcls, ...); the"
                   " ratio is of the median epoch times (default: 3 with --quick, else 1)")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    args = p.parse_args()
    if args.quick:
        args.limit = args.limit or 3000
    if not (Path(args.data) / "train").is_dir():
        sys.exit(f"skip: {args.data}/train is absent (../shared/data beside the checkout)")
    dev = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "load_avg_before": os.getloadavg(),
           "date": time.strftime("%Y-%m-%d"), "args": vars(args), "runs": []}
    variants = [{}]
    if dev.type == "cpu":
        variants.append({"train.cpu_amp": True})  # bf16 autocast + channels_last (the reference stays float32)
    rounds = args.repeats or (3 if args.quick else 1)
    refs, mine = [], {i: [] for i in range(len(variants))}
    for _ in range(rounds):  # alternate, so that load from elsewhere hits both sides alike
        refs.append(reference_epoch(args, dev))
        print(refs[-1], flush=True)
        for i, extra in enumerate(variants):
            mine[i].append(imgcls_epoch(args, dev, extra))
            print(mine[i][-1], flush=True)
    res["runs"] = refs + [r for rs in mine.values() for r in rs]
    med = statistics.median
    ref_s, ref_cpu = med(r["epoch_s"] for r in refs), med(r["cpu_s"] for r in refs)
    res["summary"] = []
    for rs in mine.values():
        per_round = [r["epoch_s"] / f["epoch_s"] for r, f in zip(rs, refs, strict=True)]
        e, c = med(r["epoch_s"] for r in rs), med(r["cpu_s"] for r in rs)
        res["summary"].append({"side": rs[0]["side"], "median_epoch_s": e, "median_ref_epoch_s": ref_s,
                               "ratio_epoch_time_vs_ref": e / ref_s, "ratio_cpu_time_vs_ref": c / ref_cpu,
                               "ratios_per_round": per_round})
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "train_throughput.json").write_text(json.dumps(res, indent=1))
    print(f"{rounds} alternating round(s), {torch.get_num_threads()} thread(s), load average before "
          f"{res['load_avg_before'][0]:.1f}, after {os.getloadavg()[0]:.1f}; medians:")
    for r in res["summary"]:
        print(f"{r['side']}: epoch {r['median_epoch_s']:.1f}s vs reference {ref_s:.1f}s -> ratio "
              f"{r['ratio_epoch_time_vs_ref']:.2f} (goal <= 0.8; per round "
              f"{', '.join(f'{x:.2f}' for x in r['ratios_per_round'])}); CPU time ratio "
              f"{r['ratio_cpu_time_vs_ref']:.2f}")

if __name__ == "__main__":
    main()
