"""Grad-CAM speed: `imgcls_cli.cam` vs pytorch-grad-cam's `GradCAM`, same model, images and run.

Both compute Grad-CAM of the top-1 class at the same target layer of the same (randomly
initialised, no download) model on the same normalised batch of real photos from
../shared/data/cam_demo, and both return maps at the input resolution.  The script prints
milliseconds per image for each and the ratio imgcls / reference (lower is better; goal <= 1),
plus the correlation of the two maps (should be ~1).

    python benchmarks/cam.py --quick                      # CPU, well under a minute
    python benchmarks/cam.py --backbone resnet50 --img-size 224 --batch 16 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEMO = REPO.parent / "shared" / "data" / "cam_demo"


def load_batch(folder: Path, n: int, size: int, dev: torch.device) -> torch.Tensor:
    import albumentations as A

    from imgcls_cli.data.decode import decode_file

    files = sorted(folder.glob("*.jpg"))
    if not files:
        sys.exit(f"no photos in {folder} (../shared/data/cam_demo beside the checkout); pass --images DIR")
    tf = A.Compose([A.SmallestMaxSize(max_size=size), A.CenterCrop(size, size)])
    imgs = [tf(image=decode_file(files[i % len(files)]))["image"] for i in range(n)]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # (1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dev)


def timed(fn, repeats: int, dev: torch.device) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=Path, default=DEMO)
    ap.add_argument("--quick", action="store_true", help="resnet18, 160 px, batch 4, 3 repeats")
    args = ap.parse_args()
    if args.quick:
        args.backbone, args.img_size, args.batch, args.repeats = "resnet18", 160, 4, 3

    from pytorch_grad_cam import GradCAM

    import imgcls_cli as ic

    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = ic.build_model(args.backbone, num_classes=1000).to(dev).eval()
    layer = model.imgcls["cam_layer"]
    x = load_batch(args.images, args.batch, args.img_size, dev)

    def ours() -> np.ndarray:
        return ic.cam(model, x, method="gradcam").cpu().numpy()

    def reference() -> np.ndarray:
        with GradCAM(model=model, target_layers=[model.get_submodule(layer)]) as g:
            return g(input_tensor=x, targets=None)  # None = each image's arg-max class, as ours

    t_ref, m_ref = timed(reference, args.repeats, dev)
    t_ours, m_ours = timed(ours, args.repeats, dev)
    t_ref2, _ = timed(reference, args.repeats, dev)  # both sides before and after: drift shows up here
    t_ref = min(t_ref, t_ref2)
    r = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(m_ours, m_ref, strict=True) if b.max() > 0]
    n = args.batch
    print(f"{args.backbone} @ {args.img_size}px, batch {n}, layer {layer}, device {dev},"
          f" threads {torch.get_num_threads()}")
    print(f"pytorch-grad-cam GradCAM: {1000 * t_ref / n:8.2f} ms/image")
    print(f"imgcls cam(gradcam):      {1000 * t_ours / n:8.2f} ms/image")
    print(f"ratio imgcls / reference: {t_ours / t_ref:.3f}   (map correlation min {min(r):.5f})")


if __name__ == "__main__":
    main()
