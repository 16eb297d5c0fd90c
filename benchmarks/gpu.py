"""One-call GPU benchmark: imgcls beside the references, same process, same protocol.

Protocol of ../shared/bench/gpu_anchors.py: bf16 autocast, channels_last, SGD(momentum), batch 256
at 224 px (ResNet-50), synthetic input; median of 3 x N timed steps after warm-up.  Sections, in
priority order (each is skipped when it would start after --budget seconds, so one device call
always returns the most important numbers):
  micro     attention gate kernels alone: CBAM spatial conv (cuDNN vs im2col) and CA (conv vs matmul)
  step      torchvision resnet50 eager loop vs imgcls's step (uint8 -> on-device normalise ->
            Task.train_step -> fused SGD)
  guard     imgcls's step with train.finite_check=step (the default: non-finite steps skipped on the
            device) vs log (no checks), alternating rounds
  attn      imgcls resnet50 + se/cbam/coord (fused gates) / nonlocal, eager, cost vs plain
  compiled  imgcls resnet50 and torchvision resnet50 with torch.compile
  e2e       JPEG files -> GPU training at 448 px, batch 64: `imgcls train` vs an ImageFolder + PIL loop,
            all cores as workers, over .bench_data/cub_subset repeated x16 (symlinks), vs synthetic;
            imgcls with data.decode=workers (the default) and data.decode=device (nvJPEG)
  attn_compiled   whole-model torch.compile of resnet50 + se/cbam/coord, cost vs compiled plain
  timm      timm seresnet50 / resnet50+CBAM eager (the issue's reference costs)
  cam       Grad-CAM ms/image vs pytorch-grad-cam
  cudagraphs      torchvision resnet50, torch.compile(mode="reduce-overhead") + fused SGD
  attn_mobilenet  MobileNetV2 + se/cbam/coord (fused gates), eager, cost vs plain
  e2e_fewcores    data.decode=workers vs device with 2 loader workers (few CPU cores per GPU), 448 px
Writes $OUT/gpu_bench.json.   Usage: python benchmarks/gpu.py [--smoke] [--budget S] [--only a,b]
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
from imgcls_cli.engine.step_guard import StepGuard  # noqa: E402
from imgcls_cli.methods import task_class  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--smoke", action="store_true")
p.add_argument("--budget", type=float, default=1e9, help="seconds; later sections are skipped past it")
p.add_argument("--only", default="", help="comma-separated sections (default: all)")
p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_bench.json"))
args = p.parse_args()
T0 = time.perf_counter()
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
RES: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__,
             "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "runs": []}
print(RES, flush=True)


def sync() -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def record(name: str, **kw) -> None:
    r = {"name": name, **kw}
    print(r, flush=True)
    RES["runs"].append(r)


def reference_step(make, bs: int, px: int, ncls: int, compile_: bool = False, mode: str | None = None):
    """The idiomatic torchvision step; mode="reduce-overhead": compiled with CUDA graphs and fused SGD."""
    base = make().to(dev).to(memory_format=torch.channels_last)
    model = torch.compile(base, mode=mode) if compile_ or mode else base
    graphs = mode == "reduce-overhead"
    fused = {"fused": True} if graphs else {}
    opt = torch.optim.SGD(base.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, **fused)
    x = torch.randn(bs, 3, px, px, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, ncls, (bs,), device=dev)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def imgcls_step(backbone: str, bs: int, px: int, ncls: int, attn: str = "none", compile_: bool = False,
                mode: str = "default", guard: bool = False):
    """What imgcls's trainer does per step, built from its own components (mode: train.compile_mode;
    guard: train.finite_check=step, the trainer's default, instead of log)."""
    cfg = build_config(None, {"model.backbone": backbone, "model.attn": attn, "loss.label_smoothing": 0.1,
                              "train.finite_check": "log", "train.compile_mode": mode,
                              "optim.weight_decay": 1e-4, "train.channels_last": True, "train.compile": compile_})
    tcls = task_class(cfg)
    model = tcls.build_model(cfg, ncls).to(dev).to(memory_format=torch.channels_last)
    train_model = torch.compile(model, mode=mode) if compile_ else model
    graphs = compile_ and mode in ("reduce-overhead", "max-autotune")
    task = tcls(cfg, train_model, ncls, None)
    opt = build_optimizer(cfg.optim, param_groups(model, 1e-4, True), dev)
    norm = DeviceNormalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), dev, channels_last=True)
    xb = torch.randint(0, 256, (bs, 3, px, px), dtype=torch.uint8, device=dev)
    y = torch.randint(0, ncls, (bs,), device=dev)
    g = StepGuard(model, task.loss_modules(), opt, dev, scaler_enabled=False) if guard else None
    scaler = torch.amp.GradScaler(dev.type, enabled=False)

    def step():
        if graphs:  # as the trainer does
            torch.compiler.cudagraph_mark_step_begin()
        if g is not None:
            g.begin()
        x = norm(xb)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = task.train_step({"images": x, "targets": y, "soft": None})
        if g is not None:
            g.loss_ok(out["loss"])
        out["loss"].backward()
        if g is not None:
            g.check_grads(model.parameters())
            g.step(opt, scaler)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        if g is not None:
            g.end()

    return step


BS, PX = (8, 64) if args.smoke else (256, 224)
STEPS, WARM = (2, 1) if args.smoke else (20, 8)


def rate(step, bs: int = BS, steps: int = STEPS, warm: int = WARM) -> tuple[float, float]:
    return median_rate(step, bs, steps, warm, dev)


def micro() -> None:
    """Gate kernels alone, fwd + bwd on ResNet-50 stage shapes, weighted by blocks per stage (3, 4, 6, 3)."""
    from imgcls_cli.models.attention.cbam import CBAM
    from imgcls_cli.models.attention.coord import CoordAttention

    shapes = [(256, 56, 3), (512, 28, 4), (1024, 14, 6), (2048, 7, 3)]
    b = 2 if args.smoke else BS
    ms: dict = {}
    for cls, attr, variants in ((CBAM, "spatial", ("conv", "unfold")), (CoordAttention, "matmul", (False, True))):
        for v in variants:
            setattr(cls, attr, v)
            total = 0.0
            for c, hw, n in shapes:
                m = cls(c).to(dev)
                x = torch.randn(b, c, hw, hw, device=dev).to(memory_format=torch.channels_last).requires_grad_()

                def fb(m=m, x=x) -> None:
                    with torch.autocast(dev.type, dtype=torch.bfloat16):
                        y = m.gate_forward(x)
                    y.float().sum().backward()

                r, _ = median_rate(fb, 1, 5 if not args.smoke else 1, 2, dev)
                total += n * 1000 / r
            ms[f"{cls.__name__}.{attr}={v}"] = round(total, 2)
        best = min(variants, key=lambda v: ms[f"{cls.__name__}.{attr}={v}"])
        setattr(cls, attr, best)  # the sections below use the faster form
        ms[f"{cls.__name__}.{attr} chosen"] = best
    record("micro_gate_ms_per_resnet50_step_fwd_bwd_eager", **ms)


def step() -> None:
    ref, w = rate(reference_step(lambda: torchvision.models.resnet50(num_classes=1000), BS, PX, 1000))
    record("tv_resnet50_eager", img_s=round(ref, 1), warm_s=round(w, 1))
    mine, w = rate(imgcls_step("resnet50", BS, PX, 1000))
    record("imgcls_resnet50_eager", img_s=round(mine, 1), ratio_vs_tv=round(mine / ref, 3), warm_s=round(w, 1))
    RES["tv_resnet50_eager"], RES["imgcls_resnet50_eager"] = ref, mine


def guard() -> None:
    """The default finite_check=step (device-side skip of non-finite steps) against log (no checks), eager, in
    alternating rounds; its cost should be noise (no host sync; a grad-norm pass and a few tiny kernels)."""
    ref = RES.get("tv_resnet50_eager") or rate(reference_step(lambda: torchvision.models.resnet50(), BS, PX, 1000))[0]
    steps = {"log": imgcls_step("resnet50", BS, PX, 1000), "step": imgcls_step("resnet50", BS, PX, 1000, guard=True)}
    got: dict[str, list[float]] = {"log": [], "step": []}
    for _ in range(2):
        for k, fn in steps.items():
            got[k].append(rate(fn)[0])
    best = {k: max(v) for k, v in got.items()}
    record("imgcls_resnet50_eager_finite_check", log_img_s=round(best["log"], 1), step_img_s=round(best["step"], 1),
           step_vs_log=round(best["step"] / best["log"], 3), step_vs_tv=round(best["step"] / ref, 3),
           rounds={k: [round(x, 1) for x in v] for k, v in got.items()})


def attn() -> None:
    plain = RES.get("imgcls_resnet50_eager") or rate(imgcls_step("resnet50", BS, PX, 1000))[0]
    for a in ("se", "cbam", "coord", "nonlocal"):
        v, w = rate(imgcls_step("resnet50", BS, PX, 1000, attn=a))
        record(f"imgcls_resnet50_{a}_eager", img_s=round(v, 1), cost_vs_plain=round(1 - v / plain, 3),
               warm_s=round(w, 1), fused=a != "nonlocal")


def attn_mobilenet() -> None:
    """MobileNetV2 (its gate sits after the depthwise conv: `fused.gate`, no residual tail), eager."""
    plain, _ = rate(imgcls_step("mobilenet_v2", BS, PX, 1000))
    record("imgcls_mobilenet_v2_eager", img_s=round(plain, 1))
    for a in ("se", "cbam", "coord"):
        v, w = rate(imgcls_step("mobilenet_v2", BS, PX, 1000, attn=a))
        record(f"imgcls_mobilenet_v2_{a}_eager", img_s=round(v, 1), cost_vs_plain=round(1 - v / plain, 3),
               warm_s=round(w, 1))


def compiled() -> None:
    c, w = rate(imgcls_step("resnet50", BS, PX, 1000, compile_=True))
    RES["imgcls_resnet50_compiled"] = c
    record("imgcls_resnet50_compiled", img_s=round(c, 1), warm_s=round(w, 1))
    r, w = rate(reference_step(lambda: torchvision.models.resnet50(num_classes=1000), BS, PX, 1000, compile_=True))
    record("tv_resnet50_compiled", img_s=round(r, 1), warm_s=round(w, 1), imgcls_ratio=round(c / r, 3))


def cudagraphs() -> None:
    """torch.compile(mode="reduce-overhead"): CUDA graphs for forward and backward (launch gaps)."""
    one = reference_step(lambda: torchvision.models.resnet50(num_classes=1000), BS, PX, 1000,
                         mode="reduce-overhead")
    r, w = rate(one)
    c = RES.get("imgcls_resnet50_compiled")
    record("tv_resnet50_compiled_cudagraphs_fusedsgd", img_s=round(r, 1), warm_s=round(w, 1),
           vs_imgcls_compiled=round(r / c, 3) if c else None)


def compiled_modes() -> None:
    """`--compile` with train.compile_mode: CUDA graphs (reduce-overhead) and Triton/cuBLAS autotuning without graphs,
    against the default mode measured in `compiled` (goal: >= 7000 img/s on an H200)."""
    base = RES.get("imgcls_resnet50_compiled")
    for mode in ("reduce-overhead", "max-autotune-no-cudagraphs"):
        c, w = rate(imgcls_step("resnet50", BS, PX, 1000, compile_=True, mode=mode))
        record(f"imgcls_resnet50_compiled_{mode}", img_s=round(c, 1), warm_s=round(w, 1),
               vs_default_mode=round(c / base, 3) if base else None)
        torch._dynamo.reset()


def attn_compiled() -> None:
    plain = RES.get("imgcls_resnet50_compiled") or rate(imgcls_step("resnet50", BS, PX, 1000, compile_=True))[0]
    for a in ("cbam", "coord", "se"):
        v, w = rate(imgcls_step("resnet50", BS, PX, 1000, attn=a, compile_=True))
        record(f"imgcls_resnet50_{a}_compiled", img_s=round(v, 1), cost_vs_compiled_plain=round(1 - v / plain, 3),
               warm_s=round(w, 1))


def timm_refs() -> None:
    import timm

    base = RES.get("tv_resnet50_eager")
    for name, make in [("timm_seresnet50", lambda: timm.create_model("seresnet50", num_classes=1000)),
                       ("timm_resnet50_cbam", lambda: timm.create_model("resnet50", num_classes=1000,
                                                                         block_args={"attn_layer": "cbam"}))]:
        v, _ = rate(reference_step(make, BS, PX, 1000))
        record(name, img_s=round(v, 1), cost_vs_tv=round(1 - v / base, 3) if base else None)


def _repeat_folder(src: Path, times: int) -> Path:
    """src/{train,test}/<class>/*.jpg -> a temporary tree whose train split holds each file `times` times
    (symlinks), so that an epoch lasts long enough to time the steady state."""
    dst = Path(tempfile.mkdtemp()) / "data"
    for split, k in (("train", times), ("test", 1)):
        for f in sorted((src / split).glob("*/*")):
            (dst / split / f.parent.name).mkdir(parents=True, exist_ok=True)
            for r in range(k):
                (dst / split / f.parent.name / f"{r}_{f.name}").symlink_to(f.resolve())
    return dst


def e2e() -> None:
    src = REPO / ".bench_data" / "cub_subset"
    if not (src / "train").is_dir():
        record("e2e_skipped", reason=f"{src} absent")
        return
    from torchvision import transforms as T

    bs, px, workers, times = (8, 64, 2, 1) if args.smoke else (64, 448, os.cpu_count(), 16)
    data = _repeat_folder(src, times)
    tf = T.Compose([T.RandomResizedCrop(px), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(str(data / "train"), tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, pin_memory=True,
                                     drop_last=True, persistent_workers=True)
    model = torchvision.models.resnet50(num_classes=len(ds.classes)).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    crit = torch.nn.CrossEntropyLoss()
    n, t = 0, None
    for i, (x, y) in enumerate(dl):  # one epoch; the clock starts at batch 10 (workers and cuDNN warm)
        if t is None and i == (10 if not args.smoke else 1):
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
    del dl, model, opt
    record("e2e_448_torchvision_imagefolder_pil", img_s=round(ref, 1), workers=workers, images=len(ds))
    syn, _ = rate(imgcls_step("resnet50", bs, px, len(ds.classes)), bs, steps=10, warm=3)
    for decode in ("workers", "device"):  # data.decode=device: nvJPEG batch decode + crop/flip on the GPU
        per_epoch = _imgcls_e2e(data, px, bs, workers, 3 if not args.smoke else 1, decode)
        mine = max(per_epoch)
        record("e2e_448_imgcls_train" + ("" if decode == "workers" else "_decode_device"), img_s=round(mine, 1),
               per_epoch=per_epoch, synthetic_img_s=round(syn, 1), e2e_fraction_of_synthetic=round(mine / syn, 3),
               ratio_vs_tv_loop=round(mine / ref, 3), workers=workers, decode=decode)


def _imgcls_e2e(data: Path, px: int, bs: int, workers: int, epochs: int, decode: str) -> list[float]:
    """`imgcls train` ResNet-50 on `data`; images/s of each epoch (metrics.jsonl)."""
    tmp = tempfile.TemporaryDirectory()  # ResNet-50 checkpoints: ~200 MB per run
    out = Path(tmp.name)
    ic.train(**{"data.path": str(data), "data.img_size": px, "data.workers": workers, "model.backbone": "resnet50",
                "train.epochs": epochs, "train.batch_size": bs, "optim.lr": 0.01, "data.decode": decode,
                "train.out": str(out / "r"), "train.progress": False, "train.eval_every": 100,
                "train.finite_check": "log", "train.tensorboard": False})
    rows = [json.loads(x) for x in (out / "r" / "metrics.jsonl").read_text().splitlines()]
    tmp.cleanup()
    return [round(r["img_per_s"], 1) for r in rows if "img_per_s" in r]


def e2e_fewcores() -> None:
    """The case data.decode=device is for: few CPU cores per GPU.  Both decode paths with 2 loader workers, 448 px,
    over cub_subset repeated x4 (2 epochs), against the synthetic-input step."""
    src = REPO / ".bench_data" / "cub_subset"
    if not (src / "train").is_dir():
        record("e2e_fewcores_skipped", reason=f"{src} absent")
        return
    bs, px, workers, times = (8, 64, 1, 1) if args.smoke else (64, 448, 2, 4)
    data = _repeat_folder(src, times)
    ncls = sum(1 for d in (src / "train").iterdir() if d.is_dir())
    syn, _ = rate(imgcls_step("resnet50", bs, px, ncls), bs, steps=10, warm=3)
    for decode in ("workers", "device"):
        per_epoch = _imgcls_e2e(data, px, bs, workers, 2 if not args.smoke else 1, decode)
        record(f"e2e_{px}_{workers}workers_decode_{decode}", img_s=max(per_epoch), per_epoch=per_epoch,
               synthetic_img_s=round(syn, 1), e2e_fraction_of_synthetic=round(max(per_epoch) / syn, 3))


def cam() -> None:
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        record("cam_skipped", reason="pytorch-grad-cam not installed")
        return
    model = ic.build_model("resnet50", num_classes=1000).to(dev).eval()
    x = torch.randn(16 if not args.smoke else 2, 3, 224, 224, device=dev)
    targets = model(x).argmax(1).tolist()
    ref_cam = GradCAM(model=model, target_layers=[model.layer4[-1]])
    a, _ = rate(lambda: ic.cam(model, x, method="gradcam"), x.shape[0], steps=5, warm=2)
    b, _ = rate(lambda: ref_cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]), x.shape[0],
                steps=5, warm=2)
    record("gradcam_ms_per_image", imgcls=round(1000 / a, 3), pytorch_grad_cam=round(1000 / b, 3),
           speedup=round(a / b, 3))


# (section, rough seconds on an H200 incl. compilation, as measured 2026-11-28): skipped when it would end past
# --budget.  Next run: `--only step,guard,compiled,compiled_modes,cudagraphs,e2e,e2e_fewcores` (guard,
# compiled_modes, e2e_fewcores and the data.decode=device rows of e2e never measured, so their seconds here are
# estimates; max-autotune compiles for minutes)
SECTIONS = [(micro, 20), (step, 40), (guard, 60), (attn, 130), (compiled, 120), (e2e, 140), (compiled_modes, 300),
            (cudagraphs, 70), (e2e_fewcores, 150), (attn_compiled, 330), (timm_refs, 30), (cam, 15),
            (attn_mobilenet, 120)]
only = set(filter(None, args.only.split(",")))
for fn, est in SECTIONS:
    if only and fn.__name__ not in only:
        continue
    elapsed = time.perf_counter() - T0
    if elapsed + est > args.budget:
        record(f"SKIPPED {fn.__name__}", reason=f"{elapsed:.0f}s elapsed + ~{est}s > budget {args.budget:.0f}s")
        continue
    t = time.perf_counter()
    try:
        fn()
    except Exception as e:  # keep going: one failure must not lose the other numbers
        record(f"FAILED {fn.__name__}", error=repr(e)[:600])
    RES.setdefault("section_s", {})[fn.__name__] = round(time.perf_counter() - t, 1)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(RES, indent=1))
print("\n== summary ==")
for r in RES["runs"]:
    print(" ", json.dumps(r))
print("section seconds:", RES.get("section_s"), "total", round(time.perf_counter() - T0))
