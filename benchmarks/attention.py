"""Training-step throughput of each backbone x attention pair vs the plain backbone and vs timm.

One process, same data and settings for every model: SGD step (fwd + bwd + update) with
label-smoothing CE; on a GPU bf16 autocast + channels_last, batch 256 at 224 px (as in
../shared/bench/gpu_anchors.py).  References in the same run: timm `seresnet50` and timm `resnet50`
with `attn_layer="cbam"` against timm `resnet50`.  "cost" = 1 - attn_img_s / plain_img_s.
On CUDA imgcls's SE/CBAM/CA gates run fused (models/attention/fused.py); `--no-fuse` times the
eager modules instead.

    python benchmarks/attention.py --quick            # CPU: batch 8 at 64 px, a few steps
    python benchmarks/attention.py --out results/     # GPU defaults, writes attention.json
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from timing import median_rate  # benchmarks/timing.py (this script's folder is on sys.path)
from torch import nn

import imgcls_cli as ic


def throughput(make: Callable[[], nn.Module], bs: int, px: int, steps: int, warm: int, dev: str,
               compile_: bool) -> float:
    torch.manual_seed(0)
    model = make().to(dev).to(memory_format=torch.channels_last)
    if compile_:
        model = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(bs, 3, px, px, generator=g).to(dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (bs,), generator=g).to(dev)
    lossf = nn.CrossEntropyLoss(label_smoothing=0.1)
    amp = dev == "cuda"

    def step() -> None:
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            loss = lossf(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return median_rate(step, bs, steps, warm, dev)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short CPU run: batch 8, 64 px, 2 steps")
    p.add_argument("--backbones", default="resnet50,mobilenet_v2", help="comma-separated imgcls backbones")
    attns = ",".join(a for a in ic.components()["attn"] if a != "none")
    p.add_argument("--attn", default=attns, help="comma-separated attentions")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile every model (imgcls and timm)")
    p.add_argument("--no-timm", action="store_true")
    p.add_argument("--no-fuse", action="store_true", help="eager attention gates (train.fuse_attention=false)")
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for attention.json")
    a = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    from imgcls_cli.models.attention import fused

    fused.set_enabled(not a.no_fuse)
    bs = a.batch_size or (8 if a.quick else 256)
    px = a.img_size or (64 if a.quick else 224)
    steps, warm = (a.steps or 2, 1) if a.quick else (a.steps or 20, 10)
    res: dict = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__,
                 "batch": bs, "px": px, "steps": steps, "compile": a.compile, "fused": not a.no_fuse,
                 "img_s": {}, "cost": {}}

    def run(name: str, make: Callable[[], nn.Module]) -> float:
        v = throughput(make, bs, px, steps, warm, dev, a.compile)
        if dev == "cuda":
            torch.cuda.empty_cache()
        res["img_s"][name] = round(v, 1)
        print(f"{name:32s} {v:10.1f} img/s", flush=True)
        return v

    for bb in a.backbones.split(","):
        base = run(bb, lambda bb=bb: ic.build_model(bb, 1000))
        for attn in a.attn.split(","):
            v = run(f"{bb}+{attn}", lambda bb=bb, attn=attn: ic.build_model(bb, 1000, attn=attn))
            res["cost"][f"{bb}+{attn}"] = round(1 - v / base, 3)
    if not a.no_timm:
        import timm

        base = run("timm_resnet50", lambda: timm.create_model("resnet50", num_classes=1000))
        for name, make in {
            "timm_seresnet50": lambda: timm.create_model("seresnet50", num_classes=1000),
            "timm_resnet50_cbam": lambda: timm.create_model("resnet50", num_classes=1000,
                                                            block_args=dict(attn_layer="cbam")),
        }.items():
            res["cost"][name] = round(1 - run(name, make) / base, 3)
    print("\ncost = 1 - img_s / plain img_s (goal on GPU: <= 0.25 for resnet50)")
    for k, v in res["cost"].items():
        print(f"  {k:32s} cost {v:6.3f}   ratio {1 - v:5.3f}")
    for ours, ref in (("resnet50+se", "timm_seresnet50"), ("resnet50+cbam", "timm_resnet50_cbam")):
        if ours in res["img_s"] and ref in res["img_s"]:
            r = res["img_s"][ours] / res["img_s"][ref]
            res[f"{ours}_vs_{ref}"] = round(r, 3)
            print(f"  {ours} / {ref} img/s ratio: {r:.3f}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "attention.json").write_text(json.dumps(res, indent=1))
    print(f"wrote {out / 'attention.json'}")


if __name__ == "__main__":
    main()
