"""Attention sections of benchmarks/gpu.py (issue 3: every gate costs <= 25 % of ResNet-50's training throughput).

  micro           each gate alone as it runs in training (the fused region of models/attention/fused.py:
                  gate + residual add + ReLU, bf16, channels_last), fwd + bwd summed over ResNet-50's 16 block
                  shapes, beside the plain block tail; CBAM's spatial conv as cuDNN ("conv") and as shift-and-add
                  ("stencil"), and the faster one is used below
  attn_profile    CUDA kernels of each fused gate on the largest block shape (256 x 56 x 56): where the time goes
  attn            imgcls resnet50 + se / cbam (both spatial forms) / coord / nonlocal, eager, cost vs plain
  attn_compiled   whole-model torch.compile of resnet50 + se/cbam/coord, cost vs compiled plain
  timm_refs       timm seresnet50 / resnet50+CBAM eager (the issue's reference costs)
  attn_mobilenet  MobileNetV2 + se/cbam/coord (fused gates), eager, cost vs plain
"""

from __future__ import annotations

import torch
from gpu_common import BS, PX, RES, args, dev, imgcls_step, median_rate, rate, record, reference_step, sync

from imgcls_cli.models.attention import fused
from imgcls_cli.models.attention.cbam import CBAM
from imgcls_cli.models.attention.coord import CoordAttention
from imgcls_cli.models.attention.se import SqueezeExcitation

SHAPES = [(256, 56, 3), (512, 28, 4), (1024, 14, 6), (2048, 7, 3)]  # ResNet-50 block outputs: C, H = W, blocks
# name -> (module class or None for the plain tail, CBAM.spatial or None)
GATES = {"plain_tail": (None, None), "se": (SqueezeExcitation, None), "cbam_conv": (CBAM, "conv"),
         "cbam_stencil": (CBAM, "stencil"), "coord": (CoordAttention, None)}


def _gate_step(name: str, c: int, hw: int, b: int):
    """One fwd + bwd of `relu(gate(x) + identity)` as a ResNet block's tail runs it in training (bf16 maps)."""
    cls, spatial = GATES[name]
    m = cls(c).to(dev).train() if cls else None
    x, idt = (torch.randn(b, c, hw, hw, device=dev, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
              .requires_grad_() for _ in range(2))
    gy = torch.randn_like(x)

    def fb() -> None:
        x.grad = idt.grad = None  # assigned, not accumulated (no extra pass over the maps)
        if spatial:
            CBAM.spatial = spatial  # a class attribute: Dynamo guards on it, so each form has its own graphs
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            y = fused.residual(m, x, idt) if m is not None else torch.relu(x + idt)
        y.backward(gy)

    return fb


def micro() -> None:
    b = 2 if args.smoke else BS
    ms: dict = {}
    for name in GATES:
        total = 0.0
        for c, hw, n in SHAPES:
            r, _ = median_rate(_gate_step(name, c, hw, b), 1, 5 if not args.smoke else 1, 3, dev)
            total += n * 1000 / r
        ms[name] = round(total, 2)
    best = min(("conv", "stencil"), key=lambda v: ms[f"cbam_{v}"])
    CBAM.spatial = best
    RES["cbam_spatial"] = best
    extra = {k: round(v - ms["plain_tail"], 2) for k, v in ms.items() if k != "plain_tail"}
    record("micro_fused_gate_ms_per_resnet50_step_fwd_bwd", batch=b, ms=ms, extra_over_plain_tail_ms=extra,
           cbam_spatial_chosen=best)


def attn_profile() -> None:
    """Top CUDA kernels of each fused gate's fwd + bwd at 256 x 56 x 56 (stage 1: 3 of 16 blocks, half the maps)."""
    from torch.profiler import ProfilerActivity, profile

    b, reps = (2 if args.smoke else BS), 3
    for name in GATES:
        fb = _gate_step(name, 256, 56, b)
        for _ in range(3):
            fb()
        sync()
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(reps):
                fb()
            sync()
        record(f"profile_{name}_256x56x56", batch=b, **_top(prof, reps))


def _top(prof, reps: int, k: int = 12) -> dict:
    """Time per fwd + bwd by kernel (CUDA) or op (CPU): total us, distinct names, the top `k` [name, us, calls]."""
    from torch.autograd import DeviceType

    per: dict[str, list[float]] = {}
    for e in prof.events():
        if dev.type == "cuda" and e.device_type != DeviceType.CUDA:
            continue
        us = e.time_range.elapsed_us() if dev.type == "cuda" else e.self_cpu_time_total
        acc = per.setdefault(e.name[:110], [0.0, 0])
        acc[0] += us / reps
        acc[1] += 1
    top = sorted(per.items(), key=lambda kv: kv[1][0], reverse=True)
    return {"us_total": round(sum(v[0] for v in per.values()), 1), "distinct": len(per),
            "top": [[name, round(us, 1), n // reps] for name, (us, n) in top[:k]]}


def attn() -> None:
    plain = RES.get("imgcls_resnet50_eager") or rate(imgcls_step("resnet50", BS, PX, 1000))[0]
    chosen = RES.get("cbam_spatial", CBAM.spatial)
    runs = [("se", None), ("cbam", chosen), ("cbam", "stencil" if chosen == "conv" else "conv"), ("coord", None),
            ("nonlocal", None)]
    for a, spatial in runs:
        if spatial:
            CBAM.spatial = spatial
        v, w = rate(imgcls_step("resnet50", BS, PX, 1000, attn=a))
        record(f"imgcls_resnet50_{a}_eager" + (f"_spatial_{spatial}" if spatial else ""), img_s=round(v, 1),
               cost_vs_plain=round(1 - v / plain, 3), warm_s=round(w, 1), fused=a != "nonlocal")
    CBAM.spatial = chosen


def attn_mobilenet() -> None:
    """MobileNetV2 (its gate sits after the depthwise conv: `fused.gate`, no residual tail), eager."""
    plain, _ = rate(imgcls_step("mobilenet_v2", BS, PX, 1000))
    record("imgcls_mobilenet_v2_eager", img_s=round(plain, 1))
    for a in ("se", "cbam", "coord"):
        v, w = rate(imgcls_step("mobilenet_v2", BS, PX, 1000, attn=a))
        record(f"imgcls_mobilenet_v2_{a}_eager", img_s=round(v, 1), cost_vs_plain=round(1 - v / plain, 3),
               warm_s=round(w, 1))


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
