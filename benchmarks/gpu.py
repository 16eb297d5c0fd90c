"""One-call GPU benchmark: imgcls beside the references, same process, same protocol.

Protocol of ../shared/bench/gpu_anchors.py: bf16 autocast, channels_last, SGD(momentum), batch 256
at 224 px (ResNet-50), synthetic input; median of 3 x N timed steps after warm-up.  Sections, in
priority order (each is skipped when it would start after --budget seconds, so one device call
always returns the most important numbers); the attention sections live in gpu_attn.py:
  step      torchvision resnet50 eager loop vs imgcls's default step (uint8 -> on-device normalise ->
            Task.train_step -> device-side finite check -> fused SGD); every imgcls step below is that one
  micro     attention block tails alone (bn3 -> gate -> add -> ReLU), fused as in training, vs the plain tail;
            picks each gate's form (CBAM's spatial conv; bn3 inside the fused region or not)
  attn      imgcls resnet50 + se/cbam/coord (fused gates, each form) / nonlocal, eager, cost vs plain
  attn_profile    CUDA kernels of each block tail on the largest block shape
  e2e       JPEG files -> GPU training at 448 px, batch 64: `imgcls train` vs an ImageFolder + PIL loop,
            all cores as workers, over .bench_data/cub_subset repeated x16 (symlinks), vs synthetic;
            imgcls with data.decode=workers (the default) and data.decode=device (nvJPEG)
  guard     imgcls's step with train.finite_check=step (the default: non-finite steps skipped on the
            device) vs log (no checks), alternating rounds
  compiled  imgcls resnet50 and torchvision resnet50 with torch.compile
  compiled_modes  `--compile` with train.compile_mode reduce-overhead / max-autotune-no-cudagraphs
  cudagraphs      torchvision resnet50, torch.compile(mode="reduce-overhead") + fused SGD
  e2e_fewcores    data.decode=workers vs device with 2 loader workers (few CPU cores per GPU), 448 px
  attn_compiled   whole-model torch.compile of resnet50 + se/cbam/coord, cost vs compiled plain
  timm_refs       timm seresnet50 / resnet50+CBAM eager (the issue's reference costs)
  cam       Grad-CAM ms/image vs pytorch-grad-cam
  attn_mobilenet  MobileNetV2 + se/cbam/coord (fused gates), eager, cost vs plain
Writes $OUT/gpu_bench.json.   Usage: python benchmarks/gpu.py [--smoke] [--budget S] [--only a,b]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_attn import attn, attn_compiled, attn_mobilenet, attn_profile, micro, timm_refs  # noqa: E402
from gpu_common import BS, PX, REPO, RES, T0, args, dev, imgcls_step, rate, record, reference_step, sync  # noqa: E402

import imgcls_cli as ic  # noqa: E402


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
    steps = {"log": imgcls_step("resnet50", BS, PX, 1000, guard=False), "step": imgcls_step("resnet50", BS, PX, 1000)}
    got: dict[str, list[float]] = {"log": [], "step": []}
    for _ in range(2):
        for k, fn in steps.items():
            got[k].append(rate(fn)[0])
    best = {k: max(v) for k, v in got.items()}
    record("imgcls_resnet50_eager_finite_check", log_img_s=round(best["log"], 1), step_img_s=round(best["step"], 1),
           step_vs_log=round(best["step"] / best["log"], 3), step_vs_tv=round(best["step"] / ref, 3),
           rounds={k: [round(x, 1) for x in v] for k, v in got.items()})


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
    syn, _ = rate(imgcls_step("resnet50", bs, px, len(ds.classes)), bs, steps=10, warm=3)  # the trainer's step
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
                "train.tensorboard": False})  # the default finite_check=step, as the synthetic step above
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


# (section, rough seconds on an H200 incl. compilation): skipped when it would end past --budget.  Measured
# 2026-11-28: step 21, attn (3 gate kinds compiled) 92, compiled 53, e2e (workers only) 76; the rest are estimates
# (micro compiles the four gate kinds for the attn section, which then reuses the graphs; CBAM's stencil form is a
# 98-term graph, slower to compile; max-autotune compiles for minutes).  One device call of --budget 560 returns
# step, micro, attn, attn_profile, e2e and, time allowing, guard.
SECTIONS = [(step, 40), (micro, 240), (attn, 90), (attn_profile, 25), (e2e, 140), (guard, 60), (compiled, 120),
            (compiled_modes, 300), (cudagraphs, 70), (e2e_fewcores, 150), (attn_compiled, 330), (timm_refs, 30),
            (cam, 15), (attn_mobilenet, 120)]
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
