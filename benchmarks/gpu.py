"""One-call GPU benchmark: imgcls beside the references, same process, same protocol.

Protocol of ../shared/bench/gpu_anchors.py: bf16 autocast, channels_last, SGD(momentum), batch 256
at 224 px (ResNet-50), synthetic input; median of 3 x N timed steps after warm-up.
  1. training step: torchvision resnet50 eager loop vs imgcls's step (uint8 batch -> on-device
     normalise -> Task.train_step -> fused SGD), eager and with torch.compile;
  2. attention: imgcls resnet50 + se/cbam/coord/nonlocal vs timm seresnet50 / resnet50+CBAM;
  3. end to end from JPEG files at 448 px (cub_subset copied to .bench_data/): `imgcls train`
     vs an ImageFolder + PIL + DataLoader loop, both with all CPU cores as workers;
  4. Grad-CAM ms/image vs pytorch-grad-cam (when installed).
Writes $OUT/gpu_bench.json.   Usage: python benchmarks/gpu.py [--smoke] [--skip-compile]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from timing import median_rate  # noqa: E402  (benchmarks/timing.py)

import imgcls_cli as ic  # noqa: E402
from imgcls_cli.config import build_config  # noqa: E402
from imgcls_cli.data.loader import DeviceNormalizer  # noqa: E402
from imgcls_cli.engine.optim import build_optimizer, param_groups  # noqa: E402
from imgcls_cli.methods import task_class  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--smoke", action="store_true")
p.add_argument("--skip-compile", action="store_true")
p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_bench.json"))
args = p.parse_args()
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
RES: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__,
             "date": time.strftime("%Y-%m-%d %H:%M"), "runs": []}
print(RES, flush=True)


def sync() -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(step, bs: int, steps: int = 30, warm: int = 10) -> tuple[float, float]:
    if args.smoke:
        steps, warm = 2, 1
    return median_rate(step, bs, steps, warm, dev)


def record(name: str, **kw) -> None:
    r = {"name": name, **kw}
    print(r, flush=True)
    RES["runs"].append(r)


def reference_step(make, bs: int, px: int, ncls: int, compile_: bool = False):
    model = make().to(dev).to(memory_format=torch.channels_last)
    if compile_:
        model = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(bs, 3, px, px, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, ncls, (bs,), device=dev)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def imgcls_step(backbone: str, bs: int, px: int, ncls: int, attn: str = "none", compile_: bool = False):
    """What imgcls's trainer does per step, built from its own components."""
    cfg = build_config(None, {"model.backbone": backbone, "model.attn": attn, "loss.label_smoothing": 0.1,
                              "train.finite_check": "log",
                              "optim.weight_decay": 1e-4, "train.channels_last": True, "train.compile": compile_})
    tcls = task_class(cfg)
    model = tcls.build_model(cfg, ncls).to(dev).to(memory_format=torch.channels_last)
    train_model = torch.compile(model) if compile_ else model
    task = tcls(cfg, train_model, ncls, None)
    opt = build_optimizer(cfg.optim, param_groups(model, 1e-4, True), dev)
    norm = DeviceNormalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), dev, channels_last=True)
    xb = torch.randint(0, 256, (bs, 3, px, px), dtype=torch.uint8, device=dev)
    y = torch.randint(0, ncls, (bs,), device=dev)

    def step():
        x = norm(xb)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = task.train_step({"images": x, "targets": y, "soft": None})
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def section(fn) -> None:
    try:
        fn()
    except Exception as e:  # keep going: one failure must not lose the other numbers
        record(f"FAILED {fn.__name__}", error=repr(e)[:400])
    if dev.type == "cuda":
        torch.cuda.empty_cache()


BS, PX = (8, 64) if args.smoke else (256, 224)


def s1_step() -> None:
    ref, w = timed(reference_step(lambda: torchvision.models.resnet50(num_classes=1000), BS, PX, 1000), BS)
    record("tv_resnet50_eager", img_s=round(ref, 1), warm_s=round(w, 1))
    mine, w = timed(imgcls_step("resnet50", BS, PX, 1000), BS)
    record("imgcls_resnet50_eager", img_s=round(mine, 1), ratio_vs_tv=round(mine / ref, 3), warm_s=round(w, 1))
    RES["tv_resnet50_eager"] = ref
    if not args.skip_compile:
        c, w = timed(imgcls_step("resnet50", BS, PX, 1000, compile_=True), BS)
        record("imgcls_resnet50_compiled", img_s=round(c, 1), ratio_vs_tv_eager=round(c / ref, 3),
               warm_s=round(w, 1))


def s2_attention() -> None:
    import timm

    base = RES.get("tv_resnet50_eager")
    plain, _ = timed(imgcls_step("resnet50", BS, PX, 1000), BS)
    record("imgcls_resnet50_plain", img_s=round(plain, 1))
    for attn in [a for a in ic.components()["attn"] if a != "none"]:
        v, _ = timed(imgcls_step("resnet50", BS, PX, 1000, attn=attn), BS)
        record(f"imgcls_resnet50_{attn}", img_s=round(v, 1), cost_vs_plain=round(1 - v / plain, 3))
    for name, make in [("timm_seresnet50", lambda: timm.create_model("seresnet50", num_classes=1000)),
                       ("timm_resnet50_cbam", lambda: timm.create_model("resnet50", num_classes=1000,
                                                                         block_args={"attn_layer": "cbam"}))]:
        v, _ = timed(reference_step(make, BS, PX, 1000), BS)
        record(name, img_s=round(v, 1), cost_vs_tv=round(1 - v / base, 3) if base else None)


def s3_end_to_end() -> None:
    data = REPO / ".bench_data" / "cub_subset"
    if not (data / "train").is_dir():
        record("e2e_skipped", reason=f"{data} absent")
        return
    from torchvision import transforms as T

    bs, px, workers = (8, 64, 2) if args.smoke else (64, 448, os.cpu_count())
    tf = T.Compose([T.RandomResizedCrop(px), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(str(data / "train"), tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, pin_memory=True,
                                     drop_last=True, persistent_workers=True)
    model = torchvision.models.resnet50(num_classes=len(ds.classes)).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    crit = torch.nn.CrossEntropyLoss()
    n, t = 0, None
    for _epoch in range(2 if not args.smoke else 1):
        for i, (x, y) in enumerate(dl):
            if t is None and i == 2:
                sync()
                t, n = time.perf_counter(), 0
            x = x.to(dev, non_blocking=True).to(memory_format=torch.channels_last)
            y = y.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += x.shape[0]
    sync()
    ref = n / (time.perf_counter() - t)
    record("e2e_448_torchvision_imagefolder", img_s=round(ref, 1), workers=workers)
    out = Path(tempfile.mkdtemp())
    ic.train(**{"data.path": str(data), "data.img_size": px, "data.workers": workers, "model.backbone": "resnet50",
                "train.epochs": 3 if not args.smoke else 1, "train.batch_size": bs, "optim.lr": 0.01,
                "train.out": str(out / "r"), "train.progress": False, "train.eval_every": 100,
                "train.finite_check": "log"})
    rows = [json.loads(x) for x in (out / "r" / "metrics.jsonl").read_text().splitlines()]
    mine = max(r["img_per_s"] for r in rows)
    record("e2e_448_imgcls_train", img_s=round(mine, 1), ratio_vs_ref=round(mine / ref, 3), workers=workers,
           per_epoch=[round(r["img_per_s"], 1) for r in rows])
    syn, _ = timed(imgcls_step("resnet50", bs, px, len(ds.classes)), bs, steps=10, warm=3)
    record("synthetic_448_imgcls_step", img_s=round(syn, 1), e2e_fraction=round(mine / syn, 3))


def s4_cam() -> None:
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        record("cam_skipped", reason="pytorch-grad-cam not installed")
        return
    model = ic.build_model("resnet50", num_classes=1000).to(dev).eval()
    x = torch.randn(16 if not args.smoke else 2, 3, 224, 224, device=dev)
    targets = model(x).argmax(1).tolist()

    def mine():
        ic.cam(model, x, method="gradcam")

    ref_cam = GradCAM(model=model, target_layers=[model.layer4[-1]])

    def ref():
        ref_cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])

    a, _ = timed(mine, x.shape[0], steps=5, warm=2)
    b, _ = timed(ref, x.shape[0], steps=5, warm=2)
    record("gradcam_ms_per_image", imgcls=round(1000 / a, 3), pytorch_grad_cam=round(1000 / b, 3),
           speedup=round(a / b, 3))


for fn in (s1_step, s2_attention, s4_cam, s3_end_to_end):
    section(fn)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(RES, indent=1))
print(json.dumps(RES, indent=1))
