"""Attention sections of benchmarks/gpu.py (issue 3: every gate costs <= 25 % of ResNet-50's training throughput).

  micro           each bottleneck tail as it runs in training (conv3 output -> bn3 -> gate -> + identity -> ReLU,
                  bf16, channels_last; the gate part a fused region of models/attention/fused.py), fwd + bwd summed
                  over ResNet-50's 16 block shapes, beside the plain tail; CBAM's spatial conv as cuDNN ("conv")
                  and as shift-and-add ("stencil"); bn3 eager before the region or inside it (`fuse_norm`); the
                  faster form of each gate is used below
  attn_profile    CUDA kernels of each tail on the largest block shape (256 x 56 x 56): where the time goes
  attn            imgcls resnet50 + se / cbam / coord in the chosen form and the other forms, nonlocal, eager,
                  cost vs plain
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
KINDS = {"se": SqueezeExcitation, "cbam": CBAM, "coord": CoordAttention}
# name -> (gate kind or None for the plain tail, CBAM.spatial or None, fuse_norm: the block's BN inside the region)
GATES = {"plain_tail": (None, None, False),
         "se": ("se", None, False), "se_norm": ("se", None, True),
         "cbam_conv": ("cbam", "conv", False), "cbam_stencil": ("cbam", "stencil", False),
         "cbam_conv_norm": ("cbam", "conv", True),
         "coord": ("coord", None, False), "coord_norm": ("coord", None, True)}


def _configure(kind: str | None, spatial: str | None, norm: bool) -> None:
    """Class attributes read per call: CBAM.spatial (Dynamo guards on it: one set of graphs per form) and
    fuse_norm (picks the region: `_residual` with the BN eager before it, or `_residual_norm`)."""
    if kind is None:
        return
    KINDS[kind].fuse_norm = norm
    if spatial:
        CBAM.spatial = spatial


def _gate_step(name: str, c: int, hw: int, b: int):
    """One fwd + bwd of a ResNet-50 bottleneck's tail as training runs it: conv3's output (bf16, channels_last)
    -> bn3 -> gate -> + identity -> ReLU; the plain tail is torchvision's eager `bn3; out += identity; relu`."""
    kind, spatial, norm = GATES[name]
    m = KINDS[kind](c).to(dev).train() if kind else None
    bn = torch.nn.BatchNorm2d(c).to(dev).train()
    x, idt = (torch.randn(b, c, hw, hw, device=dev, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
              .requires_grad_() for _ in range(2))
    gy = torch.randn_like(x)

    def fb() -> None:
        x.grad = idt.grad = None  # assigned, not accumulated (no extra pass over the maps)
        _configure(kind, spatial, norm)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            if m is None:
                y = bn(x)
                y += idt
                y = torch.relu(y)
            else:
                y = fused.residual(m, x, idt, bn)
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
    spatial = min(("conv", "stencil"), key=lambda v: ms[f"cbam_{v}"])
    norm = {"se": ms["se_norm"] < ms["se"], "cbam": ms["cbam_conv_norm"] < ms["cbam_conv"],
            "coord": ms["coord_norm"] < ms["coord"]}
    RES["attn_choice"] = {k: (spatial if k == "cbam" else None, v) for k, v in norm.items()}
    extra = {k: round(v - ms["plain_tail"], 2) for k, v in ms.items() if k != "plain_tail"}
    record("micro_fused_gate_ms_per_resnet50_step_fwd_bwd", batch=b, ms=ms, extra_over_plain_tail_ms=extra,
           cbam_spatial_chosen=spatial, fuse_norm_chosen=norm)
    _choose()


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
    _choose()


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


def _choose() -> None:
    """Set each gate kind to the form the micro section found faster (the library defaults where it did not run)."""
    for kind, (spatial, norm) in RES.get("attn_choice", {}).items():
        _configure(kind, spatial, norm)


def attn() -> None:
    """Each gate in its chosen form, then its other BN placement (and CBAM's other spatial form): model-level
    costs; the graphs were compiled in `micro` at the same shapes."""
    plain = RES.get("imgcls_resnet50_eager") or rate(imgcls_step("resnet50", BS, PX, 1000))[0]
    choice = RES.get("attn_choice") or {"se": (None, False), "cbam": (CBAM.spatial, False), "coord": (None, False)}
    runs = []
    for kind, (spatial, norm) in choice.items():
        runs += [(kind, spatial, norm), (kind, spatial, not norm)]
    other = "stencil" if choice["cbam"][0] == "conv" else "conv"
    runs += [("cbam", other, choice["cbam"][1]), ("nonlocal", None, False)]
    for kind, spatial, norm in runs:
        _configure(kind if kind in KINDS else None, spatial, norm)
        v, w = rate(imgcls_step("resnet50", BS, PX, 1000, attn=kind))
        tag = (f"_spatial_{spatial}" if spatial else "") + ("_norm_in_region" if norm else "")
        chosen = kind not in KINDS or (spatial, norm) == choice[kind]
        record(f"imgcls_resnet50_{kind}_eager{tag}", img_s=round(v, 1), cost_vs_plain=round(1 - v / plain, 3),
               warm_s=round(w, 1), fused=kind != "nonlocal", chosen=chosen)
    _choose()


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
