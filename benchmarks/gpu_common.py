"""Shared set-up of the GPU benchmark scripts (benchmarks/gpu.py and gpu_attn.py): options, device, the
result record, timing, and the two training steps compared everywhere: the idiomatic torchvision step
and imgcls's trainer step built from its own components."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from timing import median_rate  # noqa: E402  (benchmarks/timing.py)

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
                mode: str = "default", guard: bool = True):
    """What imgcls's trainer does per step by default, built from its own components (mode: train.compile_mode;
    guard: train.finite_check=step, the default; guard=False is finite_check=log, no checks)."""
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
