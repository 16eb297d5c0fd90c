"""Reference for the CIFAR-10-LT CE row: an idiomatic torchvision loop, no imgcls code.

The recipe of Cao et al. (LDAM-DRW, arXiv:1906.07413, `cifar_train.py`) that the decoupling and BBN
papers use for their CIFAR-LT baselines: ResNet-32 (option-A shortcuts), SGD momentum 0.9, lr 0.1,
weight decay 2e-4, batch 128, 200 epochs, 5 linear warm-up epochs, lr x0.1 at epochs 160 and 180;
training transform RandomCrop(32, padding=4) + RandomHorizontalFlip, test images as they are.
The long-tailed subset keeps the first n_c = floor(1000 * 100^(-c/9)) files of class c (sorted file
names), as ../shared/data/cifar10_jpg/README.md defines it.

Reported: the **last** epoch's top-1 on the balanced test set (overall and many > 100 / medium
20-100 / few < 20 training images), because this loop has no validation split to choose a checkpoint
on.  (The LDAM script prints the best test accuracy over epochs, which is selected on the test set.)
Deviation, matching scripts/results.sh: `--bf16` runs the forward pass under CPU bf16 autocast.

    OMP_NUM_THREADS=1 python benchmarks/cifar10_lt_torchvision.py --seed 0 --bf16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpg"


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x
        if self.stride != 1 or self.extra:  # option A: subsample, zero-pad the new channels
            s = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.extra // 2, self.extra // 2))
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + s)


class ResNet32(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(5):
                layers.append(Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn(self.conv(x))))  # (B, 64, 8, 8)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def longtail_subset(ds, ratio: float = 100.0):
    """First n_c samples of class c in ImageFolder's (sorted) order."""
    n_max = max(ds.targets.count(c) for c in range(len(ds.classes)))
    want = [math.floor(n_max * ratio ** (-c / (len(ds.classes) - 1)) + 1e-9) for c in range(len(ds.classes))]
    taken, keep = [0] * len(ds.classes), []
    for i, y in enumerate(ds.targets):
        if taken[y] < want[y]:
            taken[y] += 1
            keep.append(i)
    return torch.utils.data.Subset(ds, keep), taken


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="CPU bf16 autocast (as train.cpu_amp)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    full = ImageFolder(str(Path(args.data) / "train"), train_tf)
    train_ds, counts = longtail_subset(full)
    test_ds = ImageFolder(str(Path(args.data) / "test"), T.Compose([T.ToTensor(), norm]))
    dl = torch.utils.data.DataLoader(train_ds, 128, shuffle=True, num_workers=args.workers,
                                     persistent_workers=args.workers > 0)
    tl = torch.utils.data.DataLoader(test_ds, 256, num_workers=args.workers)
    model = ResNet32(len(full.classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)

    def lr_at(epoch: int) -> float:  # LDAM's adjust_learning_rate, epochs counted from 1
        if epoch <= 5:
            return 0.1 * epoch / 5
        return 0.1 * (0.01 if epoch > 180 else 0.1 if epoch > 160 else 1.0)

    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    for epoch in range(1, args.epochs + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch)
        model.train()
        for x, y in dl:
            with amp:
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch % 20 == 0 or epoch == args.epochs:
            print(f"epoch {epoch}/{args.epochs}  loss {loss.item():.4f}  {time.perf_counter() - t0:.0f}s", flush=True)
    model.eval()
    correct = torch.zeros(len(full.classes))
    total = torch.zeros(len(full.classes))
    with torch.no_grad(), amp:
        for x, y in tl:
            pred = model(x).argmax(1)
            total += torch.bincount(y, minlength=len(total)).float()
            correct += torch.bincount(y[pred == y], minlength=len(total)).float()
    acc = correct / total
    n = torch.tensor(counts)
    groups = {"many": n > 100, "medium": (n >= 20) & (n <= 100), "few": n < 20}
    res = {"top1": round(100 * float(correct.sum() / total.sum()), 2),
           **{g: round(100 * float(acc[m].mean()), 2) for g, m in groups.items() if m.any()},
           "train_images": int(n.sum()), "class_counts": counts, "epochs": args.epochs, "seed": args.seed,
           "bf16": args.bf16, "checkpoint": "last epoch", "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
