"""GPU check and throughput of the fine-grained heads: B-CNN and WS-DAN vs a plain ResNet-50 step.

Same synthetic batch, bf16 autocast, channels_last, SGD, one process; prints img/s and the ratio to
torchvision ResNet-50 (the reference).  Also checks that the float32 pooling under autocast agrees
with a float32 forward.  Needs only torch + torchvision (no data, no config).
    python benchmarks/finegrained_gpu.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
import torchvision

from imgcls_cli.losses.cross_entropy import CrossEntropy
from imgcls_cli.methods.wsdan import FeatureCenters, WSDANTask
from imgcls_cli.models.bilinear import BilinearCNN
from imgcls_cli.models.trunk import TRUNKS, feature_channels
from imgcls_cli.models.wsdan import WSDAN


def trunk(name: str, family: str) -> torch.nn.Module:
    return TRUNKS[family](getattr(torchvision.models, name)(weights=None))[0]


def bench(step, bs: int, iters: int, dev: torch.device) -> float:
    for _ in range(3):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return bs * iters / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny CPU-sized run")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not a.quick else "cpu")
    res, bs, iters, k = (64, 4, 2, 10) if a.quick else (448, 32, 10, 200)
    x = torch.randn(bs, 3, res, res, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, k, (bs,), device=dev)
    ce = torch.nn.CrossEntropyLoss()
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def make_step(model, loss_fn):
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step():
            with amp:
                loss = loss_fn(model)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    ref = torchvision.models.resnet50(num_classes=k).to(dev, memory_format=torch.channels_last)
    ref_ips = bench(make_step(ref, lambda m: ce(m(x), y)), bs, iters, dev)
    print(f"{dev} {torch.cuda.get_device_name() if dev.type == 'cuda' else ''} res {res} batch {bs}")
    print(f"torchvision resnet50 (reference): {ref_ips:.1f} img/s")
    for name, fam in (("resnet50", "resnet"), ("vgg16", "vgg")):
        t = trunk(name, fam)
        net = BilinearCNN(t, feature_channels(t), k).to(dev, memory_format=torch.channels_last)
        ips = bench(make_step(net, lambda m: ce(m(x), y)), bs, iters, dev)
        net.eval()
        with torch.no_grad():
            z32 = net(x[:4].float())
            with amp:
                zbf = net(x[:4])
        err = float((zbf.float() - z32).abs().max() / z32.abs().max().clamp_min(1e-6))
        print(f"B-CNN {name}: {ips:.1f} img/s, ratio to reference {ips / ref_ips:.2f}; bf16 vs fp32 rel err {err:.3g}")
    t = trunk("resnet50", "resnet")
    net = WSDAN(t, feature_channels(t), k, 32).to(dev, memory_format=torch.channels_last)
    task = WSDANTask.__new__(WSDANTask)  # no config tree here: set what train_step reads
    task.cfg = SimpleNamespace(train=SimpleNamespace(seed=0))
    task.model, task.epoch, task.step, task.gen = net, 0, 0, torch.Generator()
    task.ce = CrossEntropy(k)
    task.centers = FeatureCenters(k, 32 * 2048, 0.05).to(dev)
    ips = bench(make_step(net, lambda m: task.train_step({"images": x, "targets": y})["loss"]), bs, iters, dev)
    print(f"WS-DAN resnet50 train step (3 passes): {ips:.1f} img/s, ratio to reference {ips / ref_ips:.2f}")
    net.eval()
    with amp:
        ev = bench(lambda: task.eval_logits(net, x), bs, iters, dev)
        z = task.eval_logits(net, x)
    print(f"WS-DAN refined eval (2 passes): {ev:.1f} img/s; logits finite {bool(torch.isfinite(z).all())}")
    if dev.type == "cuda":
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
