"""Augmentation policy (a typed, serialisable artifact) -> torchvision.transforms.v2 pipelines.

Three parts, each used by the training loop at a different level:

* `build(image_size)`: the per-image ops on uint8 CHW tensors taken from the decoded cache, before
  normalisation, so the PreprocessSpec stays the only normalisation step.
* `build_mix(num_classes)`: Mixup / CutMix on a whole batch, returning soft targets (N, C); `None`
  when the policy does not mix, so the loop keeps hard labels.
* `epoch_indices(labels, rng)`: the order of one epoch, class-balanced when the policy asks for it.

The preview grid for the dashboard is in `imgclf.augment.preview`; the batched form of `build`'s ops
that training runs is in `imgclf.augment.batched`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch


class AugmentPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hflip: float = Field(0.0, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    rotation_degrees: float = Field(0.0, ge=0, le=180)
    scale_min: float = Field(1.0, gt=0, le=1, description="RandomResizedCrop minimum area; 1.0 disables it")
    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    noise_std: float = Field(0.0, ge=0, description="Gaussian noise std on the 0..1 pixel scale")
    erasing: float = Field(0.0, ge=0, le=1, description="probability of random erasing (Cutout)")
    preset: Literal["none", "randaugment", "trivialaugment"] = Field(
        "none", description="an automatic policy applied after the geometric ops above"
    )
    randaugment_ops: int = Field(2, ge=1, le=14, description="RandAugment: ops per image (preset randaugment only)")
    randaugment_magnitude: int = Field(
        9, ge=0, le=30, description="RandAugment: strength 0..30 (preset randaugment only)"
    )
    mixup_alpha: float = Field(0.0, ge=0, description="Mixup Beta(alpha, alpha); 0 disables")
    cutmix_alpha: float = Field(0.0, ge=0, description="CutMix Beta(alpha, alpha); 0 disables")
    mix_prob: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed (when a mix is on)")
    class_balanced: bool = Field(False, description="draw each epoch so every class is equally frequent")

    def build(self, image_size: int):
        """The per-image transform: uint8 (3, H, W) tensor -> uint8 (3, H, W) tensor."""
        import torch
        from torchvision.transforms import v2

        ops: list = []
        if self.scale_min < 1.0:
            ops.append(v2.RandomResizedCrop(image_size, scale=(self.scale_min, 1.0), antialias=True))
        if self.hflip:
            ops.append(v2.RandomHorizontalFlip(self.hflip))
        if self.vflip:
            ops.append(v2.RandomVerticalFlip(self.vflip))
        if self.rotation_degrees:
            ops.append(v2.RandomRotation(self.rotation_degrees))
        if self.preset == "randaugment":
            ops.append(v2.RandAugment(num_ops=self.randaugment_ops, magnitude=self.randaugment_magnitude))
        elif self.preset == "trivialaugment":
            ops.append(v2.TrivialAugmentWide())
        if self.brightness or self.contrast or self.saturation:
            ops.append(v2.ColorJitter(self.brightness, self.contrast, self.saturation))
        if self.noise_std or self.erasing:
            ops.append(v2.ToDtype(torch.float32, scale=True))
            if self.noise_std:
                ops.append(v2.GaussianNoise(sigma=self.noise_std))
            if self.erasing:
                ops.append(v2.RandomErasing(self.erasing))
            ops.append(v2.ToDtype(torch.uint8, scale=True))
        return v2.Compose(ops) if ops else v2.Identity()

    def build_mix(self, num_classes: int) -> BatchMix | None:
        """The batch-level Mixup/CutMix, or None when the policy does not mix (keep hard labels)."""
        if (self.mixup_alpha == 0 and self.cutmix_alpha == 0) or self.mix_prob == 0:
            return None
        return BatchMix(self.mixup_alpha, self.cutmix_alpha, self.mix_prob, num_classes)

    def epoch_indices(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Row indices for one epoch, as many as there are rows: a permutation, or a class-balanced
        draw with replacement when `class_balanced` (rare classes repeat, common ones are subsampled)."""
        if self.class_balanced:
            return class_balanced_indices(labels, len(labels), rng)
        return rng.permutation(len(labels))


class BatchMix:
    """Mixup and/or CutMix for one batch: (images (N, C, H, W), labels) -> (images, soft targets
    (N, num_classes) float32). Labels are class indices (N,), giving rows that sum to 1, or multi-hot
    (N, num_classes) targets of multi-label data, which are mixed the same way.

    With both on, each mixed batch uses one of the two, chosen at random. A batch left unmixed (see
    `mix_prob`) gets one-hot (or its multi-hot) targets, so the loss always sees one target shape.
    uint8 images come back uint8; float images come back float, and mixing after normalisation is the
    same as mixing before it (normalisation is affine per channel). Draws use torch's global
    generator, which the training loop seeds.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, prob: float, num_classes: int) -> None:
        from torchvision.transforms import v2

        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        ops = []
        if mixup_alpha > 0:
            ops.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            ops.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        if not ops:
            raise ValueError("BatchMix needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.num_classes = num_classes
        self.prob = prob
        self._mix = ops[0] if len(ops) == 1 else v2.RandomChoice(ops)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        from torch.nn.functional import one_hot

        if images.ndim != 4 or len(images) != len(labels) or labels.shape[1:] not in ((), (self.num_classes,)):
            raise ValueError(
                f"expected images (N, C, H, W) and labels (N,) or (N, {self.num_classes}), "
                f"got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        labels = labels.to(torch.int64) if labels.ndim == 1 else labels.to(torch.float32)
        if self.prob < 1 and float(torch.rand(())) >= self.prob:
            return images, one_hot(labels, self.num_classes).to(torch.float32) if labels.ndim == 1 else labels
        if images.dtype == torch.uint8:
            mixed, targets = self._mix(images.to(torch.float32), labels)
            return mixed.round_().clamp_(0, 255).to(torch.uint8), targets
        return self._mix(images, labels)


def class_balanced_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` row indices drawn with replacement so that every class is equally likely: each row is
    weighted 1 / (rows of its class). Pure numpy; seeded by `rng`."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return rng.choice(len(labels), size=n, replace=True, p=weights / weights.sum())
