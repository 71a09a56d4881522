"""Augmentation policy (a typed, serialisable artifact) -> torchvision.transforms.v2 pipelines.

Three parts, each used by the training loop at a different level:

* `build(image_size)`: the per-image ops on uint8 CHW tensors taken from the decoded cache, before
  normalisation, so the PreprocessSpec stays the only normalisation step.
* `build_mix(num_classes)`: Mixup / CutMix on a whole batch, returning soft targets (N, C); `None`
  when the policy does not mix, so the loop keeps hard labels.
* `epoch_indices(labels, rng)`: the order of one epoch, class-balanced when the policy asks for it.

`preview_grid` draws the policy on a few training images for the dashboard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from imgclf.data.decode import open_image
from imgclf.data.manifest import DatasetManifest
from imgclf.preprocess import PreprocessSpec

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
    randaugment_magnitude: int = Field(9, ge=0, le=30, description="RandAugment: strength 0..30 (preset randaugment only)")
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

    def build_mix(self, num_classes: int) -> "BatchMix | None":
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

    def __call__(self, images: "torch.Tensor", labels: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
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


def preview_images(manifest: DatasetManifest, count: int = 8, size: int = 96) -> np.ndarray:
    """`count` training images as uint8 (count, size, size, 3), one class after another so the
    preview shows as many classes as it can. Deterministic: rows are taken in sha256 order."""
    if "split" not in manifest.records.columns:
        raise ValueError("the augmentation preview needs a split manifest (a `split` column); run split first")
    train = manifest.records[manifest.records["split"] == "train"].sort_values(["sha256", "path"])
    if train.empty:
        raise ValueError("the augmentation preview needs at least one training image; the train split is empty")
    train = train.assign(_rank=train.groupby("label").cumcount()).sort_values(["_rank", "label"]).head(count)
    spec = PreprocessSpec(image_size=size)
    picked = DatasetManifest(manifest.root, train.drop(columns="_rank"))
    return np.stack([spec.resize(open_image(path)[0]) for path in picked.absolute_paths()])


def preview_grid(images: np.ndarray | Sequence[np.ndarray], policy: AugmentPolicy, rows: int = 4, seed: int = 0, pad: int = 2) -> Image.Image:
    """A grid of augmented images: one column per input image (uint8 HWC, all one square size), one
    row per random draw of `policy`; when the policy mixes, the last row is a Mixup/CutMix batch.

    Size: width = cols * size + (cols + 1) * pad, height = rows * size + (rows + 1) * pad.
    Seeded and side-effect free: torch's global generator is restored afterwards.
    """
    import torch

    batch = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    if batch.ndim != 4 or batch.shape[3] != 3 or batch.shape[1] != batch.shape[2]:
        raise ValueError(f"preview images must be square uint8 (H, W, 3) arrays of one size, got {batch.shape}")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    cols, size = batch.shape[0], batch.shape[1]
    source = torch.from_numpy(batch).permute(0, 3, 1, 2)
    transform = policy.build(size)
    mix = policy.build_mix(num_classes=cols)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        drawn = [torch.stack([transform(image) for image in source]) for _ in range(rows)]
        if mix is not None:
            drawn[-1], _ = mix(drawn[-1], torch.arange(cols))
    grid = np.full((rows * size + (rows + 1) * pad, cols * size + (cols + 1) * pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(drawn):
        for c, image in enumerate(row.permute(0, 2, 3, 1).numpy()):
            top, left = pad + r * (size + pad), pad + c * (size + pad)
            grid[top : top + size, left : left + size] = image
    return Image.fromarray(grid, "RGB")
