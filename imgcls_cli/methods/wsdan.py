"""WS-DAN training method (`--method wsdan`) and its attention-map CAM (`wsdan-attention`).

Paper: Hu, Qi, Huang, Lu, "See Better Before Looking Closer: Weakly Supervised Data Augmentation
Network for Fine-Grained Visual Classification", arXiv:1901.09891.  The model and the crop/drop
operations are in models/wsdan.py.  Per training step (section 3.2-3.3, Algorithm 1):

1. raw forward -> logits, the (B, M*C) feature matrix and the M attention maps;
2. per image pick one attention map for cropping and one for dropping; theta_c ~ U(0.4, 0.6),
   theta_d ~ U(0.2, 0.5); crop (box padded by 10 %) and drop;
3. loss = (CE(raw) + CE(crop) + CE(drop)) / 3 + L_A, with the feature-centre loss (eq. 8)
   L_A = sum_k ||f_k - c_k||^2 (authors' code: summed over the M*C feature, averaged over images),
   and the centres c moved towards the features: c <- c + beta (f - c) (eq. 9, beta = 0.05).

Deliberate deviations / choices (following the authors' PyTorch code where the paper is silent):
- the map is drawn with probability proportional to sqrt(its mass) (authors' code), independently
  for cropping and dropping (the code draws two maps per image), with a seeded torch.Generator;
- centres are updated with the per-class mean of (f - c/|c|) over the batch (the code's indexed
  `+=` keeps only the last image of a class); the loss uses the normalised centres as the code does;
- centres live in the Task's loss module (saved in training checkpoints, not in the model weights).
Test time (section 3.4): the raw logits are averaged with the logits of the crop guided by the
mean attention map (`WSDAN.refined_logits`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImgclsError
from ..losses import loss_from_config
from ..models.trunk import TRUNKS, backbone_trunk
from ..models.wsdan import WSDAN, crop_boxes, crop_resize, drop_masks, upsample_maps
from ..registry import CAM_METHODS, METHODS
from .base import Task, model_from_config

CROP_THETA, DROP_THETA, CROP_PADDING = (0.4, 0.6), (0.2, 0.5), 0.1


class FeatureCenters(nn.Module):
    """Class centres of the attention feature (a buffer, moved by eq. 9, not by the optimizer)."""

    def __init__(self, num_classes: int, dim: int, beta: float):
        super().__init__()
        self.beta = beta
        self.register_buffer("centers", torch.zeros(num_classes, dim))

    def forward(self, feature: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        c = F.normalize(self.centers[targets], dim=1)  # (B, D) centres of each image's class
        loss = (feature.float() - c).pow(2).sum(1).mean()  # eq. 8
        if self.training:
            with torch.no_grad():  # eq. 9, per-class mean of the batch's moves
                delta = torch.zeros_like(self.centers).index_add_(0, targets, feature.detach().float() - c)
                # scatter_add_, not bincount, which reads min/max back to the host on CUDA
                count = torch.zeros(self.centers.shape[0], device=targets.device, dtype=torch.long)
                count = count.scatter_add_(0, targets, torch.ones_like(targets)).clamp_min(1)  # (K,)
                self.centers += self.beta * delta / count.unsqueeze(1)
        return loss


def pick_maps(maps: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One map per image, p proportional to sqrt(mass): (B, M, h, w), u (B,) in [0, 1) -> (B, h, w)."""
    w = torch.sqrt(maps.float().sum((2, 3)) + 1e-12)  # (B, M)
    cdf = w.cumsum(1)  # (B, M)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1)).clamp_max(maps.shape[1] - 1)  # (B, 1)
    return maps[torch.arange(maps.shape[0], device=maps.device), idx[:, 0]]  # (B, h, w)


@METHODS.register("wsdan")
class WSDANTask(Task):
    backbone_families = tuple(TRUNKS)

    @classmethod
    def build_model(cls, cfg: Any, num_classes: int, class_counts: list[int] | None = None,
                    for_inference: bool = False) -> nn.Module:
        m = cfg.model
        for bad, why in ((m.head != "linear", f"--head {m.head}"), (m.feature_dim, "--feature-dim"),
                         (cfg.loss.name != "ce", f"--loss {cfg.loss.name}")):
            if bad:
                raise ImgclsError(f"--method wsdan: {why} is not supported (WS-DAN has its own attention-pooling"
                                  " head and cross-entropy loss; valid: --head linear --loss ce)")
        base = model_from_config(cfg, num_classes, weights=None if for_inference else m.weights,
                                 pretrained=False if for_inference else None, head="linear")
        trunk, channels, cam = backbone_trunk(base, base.imgcls["family"], "--method wsdan")
        net = WSDAN(trunk, channels, num_classes, m.wsdan_maps, m.drop_rate)
        net.imgcls = {**base.imgcls, "head": "head", "classifier": "head.fc", "head_kind": "wsdan",
                      "cam_layer": "features" + (f".{cam}" if cam else ""), "feat_dim": m.wsdan_maps * channels,
                      "num_maps": m.wsdan_maps}
        return net

    def __init__(self, cfg: Any, model: nn.Module, num_classes: int, class_counts: list[int] | None):
        super().__init__(cfg, model, num_classes, class_counts)
        self.ce = loss_from_config("ce", cfg.loss, num_classes)
        net = model.module if hasattr(model, "module") else model  # DDP wraps the WSDAN
        self.centers = FeatureCenters(num_classes, net.imgcls["feat_dim"], cfg.train.wsdan_beta)
        self.gen = torch.Generator()
        self.step = 0

    def loss_modules(self) -> list[nn.Module]:
        return [self.centers]

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.step = 0

    def _draws(self, b: int, device: torch.device) -> torch.Tensor:
        """(4, B) uniforms for: crop map, drop map, theta_c, theta_d (seeded by seed/epoch/step)."""
        self.gen.manual_seed(hash((self.cfg.train.seed, self.epoch, self.step, 1901)) % 2**62)
        self.step += 1
        return torch.rand(4, b, generator=self.gen).to(device, non_blocking=True)

    def augment(self, images: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention cropping and dropping of a batch: (B, 3, H, W), (B, M, h, w) -> crops, drops."""
        size = images.shape[-2:]
        u = self._draws(images.shape[0], images.device)  # (4, B)
        theta_c = CROP_THETA[0] + (CROP_THETA[1] - CROP_THETA[0]) * u[2]  # (B,) ~ U(0.4, 0.6)
        theta_d = DROP_THETA[0] + (DROP_THETA[1] - DROP_THETA[0]) * u[3]  # (B,) ~ U(0.2, 0.5)
        crop_map = upsample_maps(pick_maps(maps, u[0]), size)  # (B, H, W) in [0, 1]
        drop_map = upsample_maps(pick_maps(maps, u[1]), size)  # (B, H, W)
        crops = crop_resize(images, crop_boxes(crop_map, theta_c, CROP_PADDING))  # (B, 3, H, W)
        drops = images * drop_masks(drop_map, theta_d).to(images.dtype)  # (B, 3, H, W)
        return crops, drops

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, targets = batch["images"], batch["targets"]
        logits, feature, maps = self.model(images, with_attention=True)  # (B, K), (B, M*C), (B, M, h, w)
        with torch.no_grad():
            crops, drops = self.augment(images, maps.detach())
        logits_crop = self.model(crops)  # (B, K)
        logits_drop = self.model(drops)  # (B, K)
        ce = (self.ce(logits, targets) + self.ce(logits_crop, targets) + self.ce(logits_drop, targets)) / 3
        center = self.centers(feature, targets)
        return {"loss": ce + center, "logits": logits, "center": center.detach()}

    @torch.no_grad()
    def eval_logits(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.refined_logits(images) if hasattr(model, "refined_logits") else model(images)


@CAM_METHODS.register("wsdan-attention")
@torch.no_grad()
def wsdan_attention(model: nn.Module, images: torch.Tensor, target: torch.Tensor | None, layer: str) -> torch.Tensor:
    """The mean of WS-DAN's M attention maps (B, h, w); class-agnostic, so `target` and `layer` are unused."""
    if not isinstance(model, WSDAN):
        raise ImgclsError("--method wsdan-attention: needs a model trained with --method wsdan;"
                          " use gradcam, gradcam++, layercam or cam for other models")
    was_training = model.training
    model.eval()
    try:
        _, _, maps = model(images, with_attention=True)  # (B, M, h, w)
    finally:
        model.train(was_training)
    return maps.float().mean(1)  # (B, h, w)
